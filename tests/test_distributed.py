"""Data-parallel BC: `torchrun --nproc_per_node 2 -m lam_robot train-bc` on gloo follows the one-process run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import torch

from lam_robot.policy.checkpoint import load_checkpoint
from tests.conftest import run_cli

# Dropout off: with it each rank would draw its own masks; everything else is the same computation.
TINY = [
    "--epochs",
    "3",
    "--batch-size",
    "64",
    "--dropout",
    "0",
    "--d-model",
    "16",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--context",
    "4",
    "--relabel",
    "hindsight",
]


def _losses(out):
    with open(out / "log.csv") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def test_two_gloo_ranks_follow_one_process(umaze_demos, tmp_path):
    alone = tmp_path / "alone"
    assert run_cli("train-bc", "--data", str(umaze_demos), "--out", str(alone), *TINY).returncode == 0
    pair = tmp_path / "pair"
    env = dict(os.environ, MUJOCO_GL="egl", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "lam_robot",
            "train-bc",
            "--data",
            str(umaze_demos),
            "--out",
            str(pair),
            *TINY,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Only rank 0 writes: one header, one row per epoch, one checkpoint that records both ranks.
    assert len(_losses(pair)) == 3
    assert load_checkpoint(pair).meta["ranks"] == 2
    # Stated tolerance: the same losses to 1e-4 relative (float summation order differs across ranks).
    for a, b in zip(_losses(alone), _losses(pair)):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (_losses(alone), _losses(pair))
    for (name, a), b in zip(
        load_checkpoint(alone).net.state_dict().items(), load_checkpoint(pair).net.state_dict().values()
    ):
        assert torch.allclose(a, b, atol=1e-4), name
