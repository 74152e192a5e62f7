"""`lam-robot dagger` killed mid-round and run again: each round's episodes are recorded once."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import h5py
import pytest

from lam_robot.config import BCConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.train.bc import train_bc
from tests.conftest import run_cli

PER_ROUND = 4


@pytest.fixture(scope="module")
def umaze_bc(umaze_demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("dagger") / "bc"
    train_bc(
        BCConfig(
            data=str(umaze_demos), out=str(out), epochs=1, context=4, d_model=16, n_layers=1, n_heads=2, batch_size=64
        ),
        progress=False,
    )
    return out


def demos_in(path) -> int:
    """Episodes in a demo file that a recorder may be writing: the path always names a complete file (the
    writer swaps it in whole), and opening it without HDF5's file lock leaves the writer alone."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return len(f["data"])
    except (OSError, KeyError):
        return -1  # not there yet, or caught mid-swap: ask again


def rounds_in(out) -> list[int]:
    try:
        return [row["round"] for row in json.loads((out / "rounds.json").read_text())]
    except (OSError, ValueError):
        return []


def kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 240
    while not ready():
        assert proc.poll() is None, f"dagger exited before {what}: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"dagger never reached {what}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def test_dagger_killed_mid_round_records_each_episode_once(umaze_bc, tmp_path):
    out = tmp_path / "dagger"
    data = out / "data.hdf5"
    args = [
        "dagger",
        "--policy",
        str(umaze_bc),
        "--out",
        str(out),
        "--rounds",
        "2",
        "--episodes-per-round",
        str(PER_ROUND),
        "--epochs",
        "1",
        "--eval-episodes",
        "2",
        "--n-envs",
        "1",
    ]

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "lam_robot", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, MUJOCO_GL="egl"),
        )

    # 1. Killed while recording round 1: some of its episodes are in data.hdf5, the round is unfinished.
    kill_when(start(), lambda: rounds_in(out) == [0] and 12 < demos_in(data) < 12 + PER_ROUND, "recording round 1")
    assert rounds_in(out) == [0] and 12 < demos_in(data) < 12 + PER_ROUND
    # 2. Run again, killed after recording round 2 (while retraining): all its episodes are in, unmeasured.
    kill_when(start(), lambda: rounds_in(out) == [0, 1] and (out / "round_2").is_dir(), "retraining in round 2")
    assert rounds_in(out) == [0, 1] and demos_in(data) == 12 + 2 * PER_ROUND
    # 3. Run again to the end: round 2 is retrained and measured, its episodes not recorded a second time.
    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    rows = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["episodes_in_data"] for r in rows] == [12, 12 + PER_ROUND, 12 + 2 * PER_ROUND]
    with DemoFile(data, check_values=True) as demos:
        seeds = [int(demos.demo(name).attrs["seed"]) for name in demos.demo_names]
    assert not [seed for seed, n in Counter(seeds).items() if n > 1], seeds
    assert sorted(seeds) == [*range(12), *range(10_000, 10_000 + PER_ROUND), *range(20_000, 20_000 + PER_ROUND)]
