"""Simulation in Ray workers (--workers): the same files, results and rollouts as one process, dead workers
replaced, and no Ray import on the single-process path. A local Ray with two CPUs, nav-umaze, tiny settings."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="ray is not installed (`make install` installs it)")

import lam_robot as lr  # noqa: E402
from lam_robot.errors import LamRobotError  # noqa: E402
from tests.conftest import assert_clean_error, hdf5_contents, run_cli  # noqa: E402

# Read by tests.user_policies.DiesOnceInARayWorker in Ray's workers, which inherit the environment of the
# process that starts Ray: set at collection, before any test starts it.
DIE_ONCE = os.environ.setdefault("LAM_ROBOT_TEST_DIE_ONCE", tempfile.mkdtemp(prefix="lam-robot-die-once-"))


@pytest.fixture(autouse=True, scope="module")
def _stop_ray_after_these_tests():
    """The local Ray the tests start lives until the module ends, not through the rest of the suite."""
    yield
    import ray

    ray.shutdown()
    shutil.rmtree(DIE_ONCE, ignore_errors=True)


def assert_same_file(a: Path, b: Path) -> None:
    """Every dataset and attribute of two HDF5 files, compared exactly."""
    left, right = hdf5_contents(a), hdf5_contents(b)
    assert left.keys() == right.keys()
    for key in left:
        if key.endswith("@attrs"):
            assert left[key] == right[key], key
        else:
            np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def test_single_process_path_does_not_import_ray(tmp_path):
    """Without --workers, recording (and loading the fine-tuning code) never imports Ray."""
    code = (
        "import sys, lam_robot as lr, lam_robot.train.finetune, lam_robot.evaluation\n"
        f"lr.record(task='nav-umaze', out={str(tmp_path / 'd.hdf5')!r}, episodes=1, progress=False)\n"
        "print('ray' in sys.modules)"
    )
    env = dict(os.environ, MUJOCO_GL="egl")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False"]


def test_record_gives_the_same_file_with_1_or_2_workers_or_none(tmp_path):
    """Episode i gets seed SEED+i wherever it runs and the driver writes in index order: identical files."""
    paths = {}
    for workers in (None, 1, 2):
        paths[workers] = tmp_path / f"w{workers}.hdf5"
        stats = lr.record(
            task="nav-umaze", out=paths[workers], episodes=5, noise=0.5, seed=3, workers=workers, progress=False
        )
        assert (stats.kept, stats.run) == (5, 5)
    assert_same_file(paths[1], paths[2])
    assert_same_file(paths[None], paths[2])


def test_record_only_success_keeps_the_same_episodes_with_workers(tmp_path):
    """Workers run ahead of the writer; it still keeps the first successes in episode order and stops there."""
    plain, ray = tmp_path / "plain.hdf5", tmp_path / "ray.hdf5"
    kwargs = dict(task="nav-umaze", episodes=3, noise=1.5, only_success=True, n_envs=2, progress=False)
    a = lr.record(out=plain, **kwargs)
    b = lr.record(out=ray, workers=2, **kwargs)
    assert (a.kept, a.run, a.successes, a.steps) == (b.kept, b.run, b.successes, b.steps)
    assert_same_file(plain, ray)


def test_a_worker_killed_mid_recording_is_replaced_and_the_file_is_the_same(tmp_path):
    """The dead worker's chunk runs again on a new worker; the writer never saw a part of it."""
    plain, ray = tmp_path / "plain.hdf5", tmp_path / "ray.hdf5"
    kwargs = dict(task="nav-umaze", episodes=4, source="py:tests.user_policies:DiesOnceInARayWorker", progress=False)
    lr.record(out=plain, **kwargs)
    lr.record(out=ray, workers=2, **kwargs)
    assert (Path(DIE_ONCE) / "died").exists()  # a worker did die
    assert_same_file(plain, ray)


def test_evaluate_gives_the_same_results_with_workers():
    plain = lr.evaluate(task="nav-umaze", policy="expert", episodes=6, n_envs=2, progress=False).to_dict()
    ray = lr.evaluate(task="nav-umaze", policy="expert", episodes=6, n_envs=2, workers=2, progress=False).to_dict()
    plain.pop("steps_per_second"), ray.pop("steps_per_second")
    assert plain == ray


def test_record_cli_with_workers_matches_the_api(tmp_path):
    by_cli, by_api = tmp_path / "cli.hdf5", tmp_path / "api.hdf5"
    result = run_cli("record", "--task", "nav-umaze", "--out", str(by_cli), "--episodes", "2", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "saved 2 episodes" in result.stdout
    lr.record(task="nav-umaze", out=by_api, episodes=2, progress=False)
    assert_same_file(by_cli, by_api)


def test_bad_worker_settings_are_one_line_errors(tmp_path):
    result = run_cli("record", "--task", "nav-umaze", "--out", str(tmp_path / "t.hdf5"), "--source", "keyboard",
                     "--workers", "2")
    assert_clean_error(result, "--workers applies to recording a policy, not teleoperation")
    with pytest.raises(LamRobotError, match="--ray-address needs --workers"):
        lr.EvaluateConfig(task="nav-umaze", ray_address="auto")
    with pytest.raises(LamRobotError, match="--workers must be positive"):
        lr.RecordConfig(task="nav-umaze", out=tmp_path / "x.hdf5", workers=0)
    with pytest.raises(LamRobotError, match=r"--workers \(3\) must not exceed --n-envs \(2\)"):
        lr.FinetuneConfig(policy=tmp_path, out=tmp_path / "ft", n_envs=2, workers=3)
    with pytest.raises(LamRobotError, match="drop --vec-env subproc"):
        lr.FinetuneConfig(policy=tmp_path, out=tmp_path / "ft", workers=2, vec_env="subproc")


def assert_same_obs(a, b) -> None:
    """Array or dict observations, exactly equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
        np.testing.assert_array_equal(a, b)


def _env_fns(n: int) -> list:
    from lam_robot.train.finetune import make_env_fn

    task = lr.load_task("nav-umaze")
    return [make_env_fn(task, 4, 7, i) for i in range(n)]


def test_ray_vec_env_gives_subproc_vec_env_rollouts():
    """The same env builders, seeds and actions: the same observations, rewards, dones and terminal
    observations, through an episode end (nav-umaze's horizon is 300 steps)."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from lam_robot.scale.ray_vec_env import RayVecEnv

    ray_env, subproc = RayVecEnv(_env_fns(3), workers=2), SubprocVecEnv(_env_fns(3), start_method="forkserver")
    try:
        for venv in (ray_env, subproc):
            venv.seed(11)
        obs = [ray_env.reset(), subproc.reset()]
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(310):
            assert_same_obs(*obs)
            actions = rng.uniform(-1, 1, size=(3, 2)).astype(np.float32)
            ray_env.step_async(actions), subproc.step_async(actions)
            (o1, r1, d1, i1), (o2, r2, d2, i2) = ray_env.step_wait(), subproc.step_wait()
            np.testing.assert_array_equal(r1, r2)
            np.testing.assert_array_equal(d1, d2)
            for a, b in zip(i1, i2):
                assert a.keys() == b.keys()
                if "terminal_observation" in a:
                    ends += 1
                    assert_same_obs(a["terminal_observation"], b["terminal_observation"])
            obs = [o1, o2]
        assert ends >= 3  # every env ran into its horizon at least once
        from stable_baselines3.common.monitor import Monitor

        assert ray_env.env_is_wrapped(Monitor) == subproc.env_is_wrapped(Monitor) == [True] * 3
        assert ray_env.get_attr("render_mode", indices=[1, 2]) == subproc.get_attr("render_mode", indices=[1, 2])
        assert not ray_env.has_attr("no_such_attribute")
    finally:
        ray_env.close(), subproc.close()


def test_ray_vec_env_replaces_a_killed_worker_and_goes_on():
    from lam_robot.scale.ray_vec_env import RayVecEnv

    venv = RayVecEnv(_env_fns(2), workers=2)
    try:
        venv.reset()
        actions = np.zeros((2, 2), dtype=np.float32)
        for _ in range(3):
            venv.step(actions)
        before = venv.pids()
        os.kill(before[0], signal.SIGKILL)
        obs, rewards, dones, infos = venv.step(actions)
        assert dones.tolist() == [True, False]  # the dead worker's episode ends there, the other goes on
        assert infos[0]["worker_restarted"] and infos[0]["TimeLimit.truncated"]
        assert "terminal_observation" in infos[0] and "worker_restarted" not in infos[1]
        after = venv.pids()
        assert after[0] != before[0] and after[1] == before[1]
        for _ in range(3):
            _, _, dones, _ = venv.step(actions)
            assert not dones.any()
        assert venv.reset().shape == obs.shape
    finally:
        venv.close()


def test_finetune_with_workers(bc_run, tmp_path):
    result = lr.finetune(
        policy=bc_run, out=tmp_path / "ft", steps=64, n_envs=2, n_steps=32, batch_size=32, n_epochs=1,
        eval_every=64, eval_episodes=2, workers=2, progress=False,
    )
    assert result.env_steps == 64
