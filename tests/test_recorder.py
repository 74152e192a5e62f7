"""`lam-robot record`: the robomimic layout, appending, sources, noise and crash safety."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from lam_robot.data.dataset import DemoFile
from lam_robot.data.writer import sidecar
from lam_robot.recording import record_episodes
from lam_robot.rollout import run_episodes
from lam_robot.sources import resolve_policy
from lam_robot.tasks import load_task
from tests.conftest import file_digest, run_cli


def test_layout_is_robomimic_compatible(umaze_demos):
    with h5py.File(umaze_demos) as f:
        data = f["data"]
        env_args = json.loads(data.attrs["env_args"])
        assert env_args["env_name"] == "PointMaze_UMaze-v3"
        assert env_args["env_kwargs"] == {"continuing_task": False}
        assert env_args["task"]["name"] == "nav-umaze" and env_args["type"] == 2
        assert data.attrs["format_version"] == 1
        total = 0
        for i in range(12):
            demo = data[f"demo_{i}"]
            n = demo.attrs["num_samples"]
            total += n
            assert demo.attrs["seed"] == i and demo.attrs["source"] == "expert" and demo.attrs["success"]
            for key, dim in {"observation": 4, "achieved_goal": 2, "desired_goal": 2}.items():
                assert demo[f"obs/{key}"].shape == (n, dim) and demo[f"next_obs/{key}"].shape == (n, dim)
            np.testing.assert_array_equal(demo["obs/observation"][1:], demo["next_obs/observation"][:-1])
            assert demo["actions"].shape == (n, 2) and demo["actions"].dtype == np.float32
            assert np.abs(demo["actions"][()]).max() <= 1.0
            for key in ("rewards", "dones", "terminated", "truncated"):
                assert demo[key].shape == (n,)
            assert demo["dones"][-1] and not demo["dones"][:-1].any()
            assert demo["terminated"][-1]  # nav tasks end at the goal
        assert data.attrs["total"] == total
        train = [x.decode() for x in f["mask/train"][()]]
        valid = [x.decode() for x in f["mask/valid"][()]]
        # Demo 1 is the first valid one, then every 10th (demo_11), so that 2-9 demos already have one.
        assert valid == ["demo_1", "demo_11"] and sorted(train + valid) == sorted(data.keys())


def test_recorded_episode_matches_a_fresh_rollout(umaze_demos):
    """What the file holds is exactly what the env and expert produced for that seed."""
    task = load_task("nav-umaze")
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    episode = next(run_episodes(task, expert, 1, seed=4))
    with DemoFile(umaze_demos) as demos:
        stored = demos.episode("demo_4")
    np.testing.assert_array_equal(stored["actions"], episode.actions)
    np.testing.assert_array_equal(stored["obs"]["observation"], episode.obs["observation"])
    np.testing.assert_array_equal(stored["rewards"], episode.rewards)


def test_record_appends_and_continues_seeds(tmp_path):
    out = tmp_path / "demos.hdf5"
    first = run_cli("record", "--task", "nav-umaze", "--episodes", "3", "--out", str(out))
    assert first.returncode == 0, first.stderr
    with h5py.File(out) as f:
        old_actions = f["data/demo_2/actions"][()]
    second = run_cli("record", "--task", "nav-umaze", "--episodes", "2", "--out", str(out))
    assert second.returncode == 0, second.stderr
    with h5py.File(out) as f:
        assert sorted(f["data"].keys()) == [f"demo_{i}" for i in range(5)]
        assert [int(f[f"data/demo_{i}"].attrs["seed"]) for i in range(5)] == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(f["data/demo_2/actions"][()], old_actions)
    assert not any(sidecar(out, kind).exists() for kind in ("lock", "shadow", "previous"))


def test_record_refuses_a_file_of_another_task(grasp_demos, tmp_path):
    before = file_digest(grasp_demos)
    result = run_cli("record", "--task", "nav-umaze", "--episodes", "1", "--out", str(grasp_demos))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds demos of task 'grasp'" in result.stderr
    assert file_digest(grasp_demos) == before


def test_record_refuses_a_foreign_hdf5_file(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    before = file_digest(path)
    result = run_cli("record", "--task", "nav-umaze", "--episodes", "1", "--out", str(path))
    assert result.returncode == 2 and "not a lam-robot/robomimic demo file" in result.stderr
    assert file_digest(path) == before


def test_record_into_missing_directory_is_a_clean_error(tmp_path):
    result = run_cli("record", "--task", "nav-umaze", "--episodes", "1", "--out", str(tmp_path / "no" / "x.hdf5"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_noise_perturbs_actions_within_bounds(tmp_path):
    clean, noisy = tmp_path / "clean.hdf5", tmp_path / "noisy.hdf5"
    assert run_cli("record", "--task", "grasp", "--episodes", "1", "--out", str(clean)).returncode == 0
    result = run_cli("record", "--task", "grasp", "--episodes", "1", "--out", str(noisy), "--noise", "0.5")
    assert result.returncode == 0, result.stderr
    with h5py.File(clean) as c, h5py.File(noisy) as n:
        a, b = c["data/demo_0/actions"][()], n["data/demo_0/actions"][()]
    assert np.abs(b).max() <= 1.0
    assert np.abs(a[:5] - b[:5]).mean() > 0.05


def test_only_success_keeps_successful_episodes(tmp_path):
    out = tmp_path / "s.hdf5"
    result = run_cli(
        "record",
        "--task",
        "nav-umaze",
        "--source",
        "random",
        "--episodes",
        "1",
        "--only-success",
        "--max-attempts",
        "3",
        "--out",
        str(out),
    )
    # A random walk almost never reaches the goal in the U-maze: a clear error, and nothing kept.
    assert result.returncode == 2 and "only 0 of 1 episodes succeeded in 3 attempts" in result.stderr
    ok = run_cli(
        "record", "--task", "nav-umaze", "--episodes", "2", "--only-success", "--noise", "0.3", "--out", str(out)
    )
    assert ok.returncode == 0, ok.stderr
    with h5py.File(out) as f:
        assert all(f[f"data/{n}"].attrs["success"] for n in f["data"])


@pytest.mark.parametrize("target", ["tests.user_policies:push_towards_goal", "tests.user_policies:StillPolicy"])
def test_bring_your_own_expert(tmp_path, target):
    out = tmp_path / "mine.hdf5"
    result = run_cli("record", "--task", "nav-umaze", "--source", f"py:{target}", "--episodes", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    with h5py.File(out) as f:
        assert len(f["data"]) == 2 and f["data/demo_0"].attrs["source"] == "expert"
        if target.endswith("StillPolicy"):
            assert not f["data/demo_0/actions"][()].any()
            assert f["data/demo_0"].attrs["num_samples"] == 300  # never moves, so the horizon ends it


def test_bad_py_source_is_a_clean_error(tmp_path):
    result = run_cli(
        "record",
        "--task",
        "nav-umaze",
        "--source",
        "py:no_such_module:x",
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "x.hdf5"),
    )
    assert result.returncode == 2 and "cannot import module 'no_such_module'" in result.stderr
    assert not (tmp_path / "x.hdf5").exists()


def test_background_writer_writes_the_same_file(tmp_path):
    """record_episodes with the writer in a child process gives the in-process writer's file, appends
    the same way, and reports every episode once committed."""
    task = load_task("nav-umaze")
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    contents = []
    for background in (False, True):
        out, seen = tmp_path / f"bg{int(background)}.hdf5", []
        for seed in (0, 7):  # a new file, then an append
            record_episodes(task, expert, out, 7, "expert", seed=seed, background_writer=background,
                            on_episode=lambda stats: seen.append(stats.kept))
        assert seen == [*range(1, 8), *range(1, 8)]
        assert not any(sidecar(out, kind).exists() for kind in ("lock", "shadow", "previous"))
        items = {}
        with h5py.File(out, "r") as f:
            f.visititems(lambda name, obj: items.update({name: obj[()] if isinstance(obj, h5py.Dataset) else None}))
            f.visititems(lambda name, obj: items.update({f"{name}@{k}": v for k, v in obj.attrs.items()}))
            items.update({f"@{k}": v for k, v in f["data"].attrs.items()})
        contents.append(items)
    assert contents[0].keys() == contents[1].keys() and len(contents[0]) > 100
    for key, value in contents[0].items():
        np.testing.assert_array_equal(contents[1][key], value, err_msg=key)


# --- crash safety ------------------------------------------------------------------------------

RECORDER = """
import sys
from lam_robot.recording import record_episodes as record
from lam_robot.sources import resolve_policy
from lam_robot.tasks import load_task

task = load_task("nav-umaze")
env = task.make_env()
expert = resolve_policy("expert", task, env)
env.close()
path, episodes, seed, background = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
record(task, expert, path, episodes, "expert", seed=seed, on_episode=lambda stats: print(stats.kept, flush=True),
       background_writer=background)
"""


@pytest.fixture(scope="module")
def reference_episodes():
    task = load_task("nav-umaze")
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    return list(run_episodes(task, expert, 400, seed=0))


@pytest.mark.parametrize("trial", range(9))
def test_sigkill_mid_recording_leaves_a_complete_file(tmp_path, reference_episodes, trial):
    """Kill a real recording (its whole process group) after it has committed k of its 400 episodes, at a
    random moment within the next episodes, then check the file: whole, complete episodes only, every
    committed one kept, fewer than asked for. Trials 6-8 write through a child process (background_writer);
    in 6 and 7 only the recording process is killed, and the child then commits what it holds and exits."""
    rng = random.Random(trial)
    out = tmp_path / "crash.hdf5"
    before = 0
    if trial % 2:  # half the trials append to an existing file, exercising the shadow copy
        assert run_cli("record", "--task", "nav-umaze", "--episodes", "5", "--out", str(out)).returncode == 0
        before = 5
    requested, committed = 400, rng.randint(1, 20)
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(out), str(requested), str(before), str(int(trial >= 6))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, MUJOCO_GL="egl"),
        start_new_session=True,
    )
    reported = 0
    while reported < committed:  # the recorder prints its count after each episode it has committed
        line = proc.stdout.readline()
        if not line:
            break
        reported = int(line)
    time.sleep(rng.uniform(0.0, 0.03))  # an episode takes about 10 ms: land anywhere in the next few
    if trial not in (6, 7):
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while sidecar(out, "lock").exists() and time.monotonic() < deadline:  # the writer child finishing
            time.sleep(0.05)
        assert not sidecar(out, "lock").exists(), "the writer child did not exit after its parent was killed"
    _, stderr = proc.communicate()
    assert reported >= committed, stderr
    assert proc.returncode == -signal.SIGKILL, "the recorder finished before the kill"
    with DemoFile(out, check_values=True) as demos:  # opens and validates: a whole HDF5 file
        names = demos.demo_names
        assert names == [f"demo_{i}" for i in range(len(names))]
        assert before + committed <= len(names) < before + requested  # killed mid-recording, nothing lost
        for i, name in enumerate(names):  # each episode complete and the one its seed gives
            episode = demos.episode(name)
            assert episode["attrs"]["seed"] == i and episode["attrs"]["num_samples"] == reference_episodes[i].length
            np.testing.assert_array_equal(episode["actions"], reference_episodes[i].actions)
            np.testing.assert_array_equal(episode["obs"]["observation"], reference_episodes[i].obs["observation"])
    # The next recording picks up where the killed one stopped.
    assert run_cli("record", "--task", "nav-umaze", "--episodes", "2", "--out", str(out)).returncode == 0
    with DemoFile(out, check_values=True) as demos:
        assert len(demos) == len(names) + 2
