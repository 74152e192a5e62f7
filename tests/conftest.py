"""Shared fixtures: real tiny recordings and a CLI runner (subprocess, like a user)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.data.recorder import DemoWriter  # noqa: E402
from lam_robot.policies import resolve_policy  # noqa: E402
from lam_robot.rollout import run_episodes  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m lam_robot ARGS` as a user would, capturing output."""
    env = dict(os.environ, MUJOCO_GL="egl")
    return subprocess.run([sys.executable, "-m", "lam_robot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_expert(path: Path, task_name: str, episodes: int, seed: int = 0, noise: float = 0.0) -> Path:
    task = load_task(task_name)
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    with DemoWriter(path, task) as writer:
        for ep in run_episodes(task, expert, episodes, seed=seed, action_noise=noise):
            writer.add(ep, source="expert")
    return path


@pytest.fixture(scope="session")
def umaze_demos(tmp_path_factory) -> Path:
    """Twelve real expert episodes of nav-umaze (read-only: copy before changing)."""
    return record_expert(tmp_path_factory.mktemp("demos") / "umaze.hdf5", "nav-umaze", 12)


@pytest.fixture(scope="session")
def grasp_demos(tmp_path_factory) -> Path:
    return record_expert(tmp_path_factory.mktemp("demos") / "grasp.hdf5", "grasp", 3)
