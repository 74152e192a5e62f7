"""Files written by another program in robomimic's documented layout (no task spec, none of our extras)."""

import json

import h5py
import numpy as np
import pytest

from lam_robot.config import BCConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.data.schema import is_valid_split
from lam_robot.errors import LamRobotError
from lam_robot.rollout import run_episodes
from lam_robot.sources import resolve_policy
from lam_robot.tasks import load_task
from tests.conftest import assert_clean_error, file_digest, run_cli

ENV_ARGS = {"env_name": "PointMaze_UMaze-v3", "type": 2, "env_kwargs": {"continuing_task": False}}


def write_robomimic(path, episodes, env_args=ENV_ARGS, next_obs=True, drop_keys=()):
    """robomimic's layout as its docs give it, written with h5py alone: data (total, env_args), demo_<i>
    (num_samples; obs/, next_obs/, actions, rewards, dones: done = success, robomimic's default), mask/."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(env_args)
        total = 0
        for i, ep in enumerate(episodes):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = ep.length
            total += ep.length
            for group, obs in (("obs", ep.obs), ("next_obs", ep.next_obs))[: 2 if next_obs else 1]:
                for key, values in obs.items():
                    if key not in drop_keys:
                        demo.create_dataset(f"{group}/{key}", data=values.astype(np.float32))
            demo.create_dataset("actions", data=ep.actions)
            demo.create_dataset("rewards", data=ep.rewards)
            demo.create_dataset("dones", data=ep.terminated.astype(np.int64))
        data.attrs["total"] = total
        names = [f"demo_{i}" for i in range(len(episodes))]
        f.create_dataset("mask/train", data=np.array(names[:-1], dtype="S"))
        f.create_dataset("mask/valid", data=np.array(names[-1:], dtype="S"))


@pytest.fixture(scope="module")
def episodes():
    task = load_task("nav-umaze")
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    return list(run_episodes(task, expert, 4, seed=0, action_noise=0.2))


@pytest.fixture
def foreign(tmp_path, episodes):
    path = tmp_path / "robomimic.hdf5"
    write_robomimic(path, episodes)
    return path


def test_inspect_without_task_summarises_it(foreign):
    result = run_cli("inspect", str(foreign), "--json")
    assert result.returncode == 0, result.stderr
    s = json.loads(result.stdout)
    assert s["foreign"] and s["task"] is None and s["format_version"] is None
    assert s["env_id"] == "PointMaze_UMaze-v3" and s["demos"] == 4
    assert s["sources"] == {"unknown": 4} and s["splits"] == {"train": 3, "valid": 1}
    assert s["success_rate"] == 1.0  # the last dones: the expert reached every goal
    text = run_cli("inspect", str(foreign))
    assert text.returncode == 0 and "task unknown" in text.stdout and "another program" in text.stdout
    with_task = run_cli("inspect", str(foreign), "--task", "nav-umaze")
    assert with_task.returncode == 0 and "task nav-umaze (PointMaze_UMaze-v3)" in with_task.stdout


def test_reader_derives_what_robomimic_lacks(tmp_path, episodes):
    path = tmp_path / "no_next_obs.hdf5"
    write_robomimic(path, episodes, next_obs=False)
    task = load_task("nav-umaze")
    with DemoFile(path, check_values=True, task=task) as demos:
        assert demos.foreign and demos.task == task
        ep = demos.episode("demo_2")
        train = demos.policy_episodes("train")
    n = episodes[2].length
    assert ep["attrs"] == {"num_samples": n, "seed": 2, "source": "unknown", "success": True}
    np.testing.assert_array_equal(ep["terminated"], episodes[2].terminated)
    assert not ep["truncated"].any() and ep["dones"][-1]
    obs = episodes[2].obs["observation"].astype(np.float32)
    np.testing.assert_array_equal(ep["next_obs"]["observation"][:-1], obs[1:])
    np.testing.assert_array_equal(ep["next_obs"]["observation"][-1], obs[-1])
    assert [len(e.obs) for e in train] == [e.length for e in episodes[:3]]
    assert train[0].obs.shape[1] == 4 + 2  # observation, desired_goal: the task's keys by name


def test_train_bc_reads_it_with_task(foreign, tmp_path):
    from lam_robot.train.bc import load_training_data

    with pytest.raises(LamRobotError, match="does not name the task it was recorded in.*pass --task"):
        load_training_data(BCConfig(data=foreign, out=tmp_path / "x"))
    result = run_cli("train-bc", "--data", str(foreign), "--out", str(tmp_path / "bc"), "--task", "nav-umaze",
                     "--epochs", "1", "--context", "2", "--d-model", "16", "--n-layers", "1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bc" / "model.safetensors").exists()


def test_env_name_mismatch_is_a_note(tmp_path, episodes, capsys):
    path = tmp_path / "other_env.hdf5"
    write_robomimic(path, episodes, env_args={**ENV_ARGS, "env_name": "PointMaze_UMaze-v2"})
    with DemoFile(path, task=load_task("nav-umaze")) as demos:
        assert demos.task.name == "nav-umaze"
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "'PointMaze_UMaze-v2'" in note[0] and "'PointMaze_UMaze-v3'" in note[0]


def test_missing_obs_keys_are_listed(tmp_path, episodes):
    path = tmp_path / "few_keys.hdf5"
    write_robomimic(path, episodes, drop_keys=("desired_goal",))
    assert_clean_error(run_cli("inspect", str(path), "--task", "nav-umaze"), "lacks key(s) desired_goal")
    assert_clean_error(run_cli("inspect", str(path), "--task", "grasp"), "lacks key(s) desired_goal that task 'grasp' needs")


def test_record_refuses_to_append_to_it(foreign):
    before = file_digest(foreign)
    result = run_cli("record", "--task", "nav-umaze", "--episodes", "1", "--out", str(foreign))
    assert_clean_error(result, "written by another program")
    assert file_digest(foreign) == before


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.3])
def test_valid_split_has_a_demo_from_two_on_and_keeps_its_share(fraction):
    for n in range(2, 10):
        assert any(is_valid_split(i, fraction) for i in range(n)), n
    assert not is_valid_split(0, fraction)  # train is never empty
    share = sum(is_valid_split(i, fraction) for i in range(10_000)) / 10_000
    assert share == pytest.approx(fraction, abs=1e-3)
    assert not any(is_valid_split(i, 0.0) for i in range(100))
