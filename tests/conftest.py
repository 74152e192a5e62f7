"""Shared fixtures: real tiny recordings and a CLI runner (subprocess, like a user)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m lam_robot ARGS` as a user would, capturing output."""
    env = dict(os.environ, MUJOCO_GL="egl")
    return subprocess.run([sys.executable, "-m", "lam_robot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def hdf5_contents(path: Path, group: str = "/") -> dict:
    """Every dataset (values) and attribute below ``group`` of an HDF5 file, for exact comparison."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            out[name + "@attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}

        f[group].visititems(visit)
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def umaze_demos(tmp_path_factory) -> Path:
    """Twelve real expert episodes of nav-umaze (read-only: copy before changing)."""
    path = tmp_path_factory.mktemp("demos") / "umaze.hdf5"
    record_expert(load_task("nav-umaze"), path, 12)
    return path


@pytest.fixture(scope="session")
def bc_run(umaze_demos, tmp_path_factory) -> Path:
    """A tiny BC checkpoint trained on ``umaze_demos``, the start of the fine-tuning tests (read-only)."""
    from lam_robot.config import BCConfig
    from lam_robot.train.bc import train_bc

    out = tmp_path_factory.mktemp("bc") / "bc"
    config = BCConfig(data=umaze_demos, out=out, epochs=3, context=4, d_model=16, n_layers=1, n_heads=2, batch_size=64)
    train_bc(config, progress=False)
    return out


@pytest.fixture(scope="session")
def grasp_demos(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "grasp.hdf5"
    record_expert(load_task("grasp"), path, 3)
    return path


def assert_clean_error(result: subprocess.CompletedProcess, message: str) -> None:
    """An expected error: exit code 2, one line on stderr that contains ``message``, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0], lines[0]
