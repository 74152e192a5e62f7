"""Exact replay: recorded MuJoCo states and actions reproduce the recorded observations."""

import json
import shutil

import h5py
import numpy as np
import pytest

import lam_robot as lr
from tests.conftest import assert_clean_error, run_cli

# Fetch steps at 25 Hz (dt 0.04), PointMaze at 100 Hz (dt 0.01).
CONTROL_FREQ = {"grasp": 25.0, "nav-medium": 100.0}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Two noisy expert episodes per task, recorded through the public API."""
    root = tmp_path_factory.mktemp("replay")
    paths = {}
    for task in CONTROL_FREQ:
        paths[task] = root / f"{task}.hdf5"
        lr.record(task=task, out=paths[task], episodes=2, noise=0.3, progress=False)
    return paths


@pytest.mark.parametrize("task", sorted(CONTROL_FREQ))
def test_replay_reproduces_recorded_observations(noisy, task):
    path = noisy[task]
    with h5py.File(path) as f:
        assert json.loads(f["data"].attrs["env_args"])["control_freq"] == pytest.approx(CONTROL_FREQ[task])
        for name in ("demo_0", "demo_1"):
            states, n = f[f"data/{name}/states"], f[f"data/{name}"].attrs["num_samples"]
            assert states.dtype == np.float64 and states.shape[0] == n and states.shape[1] > 1
            assert np.unique(states[:, 0]).size == n  # the first entry is the sim time: one state per step
    result = lr.replay_demos(path)
    assert [d.name for d in result.demos] == ["demo_0", "demo_1"]
    assert result.passed and result.max_obs_diff <= 1e-6
    assert max(d.max_state_diff for d in result.demos) <= 1e-6


def test_replay_cli_one_demo_with_video(noisy, tmp_path):
    video = tmp_path / "replay.mp4"
    result = run_cli("replay", str(noisy["nav-medium"]), "--demo", "1", "--video", str(video))
    assert result.returncode == 0, result.stderr
    assert "demo_1:" in result.stdout and "demo_0:" not in result.stdout and "reproduced" in result.stdout
    assert video.stat().st_size > 1000


def test_replay_starts_from_the_stored_state(noisy, tmp_path):
    """A different first state (the ball moved) is what replay starts from, so it no longer matches."""
    path = tmp_path / "moved.hdf5"
    shutil.copyfile(noisy["nav-medium"], path)
    with h5py.File(path, "a") as f:
        f["data/demo_0/states"][0, 1] += 0.05  # [time, qpos...]: the ball's x
    assert_clean_error(run_cli("replay", str(path), "--demo", "0"), "replay differs from the recording")


def test_replay_without_states_or_demo_is_a_clean_error(noisy, tmp_path):
    path = tmp_path / "old.hdf5"
    shutil.copyfile(noisy["grasp"], path)
    with h5py.File(path, "a") as f:
        del f["data/demo_1/states"]
    assert_clean_error(run_cli("replay", str(path)), "demo_1 has no MuJoCo states")
    assert_clean_error(run_cli("replay", str(path), "--demo", "7"), "has no demo_7")
