"""Slow tier (`make test-slow`): 100-episode expert success and a wheel installed outside the repo."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from lam_robot.evaluation import evaluate_policy
from lam_robot.sources import resolve_policy
from lam_robot.tasks import load_task

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["grasp", "nav-umaze", "nav-medium", "grasp-heavy", "grasp-table-moved", "nav-spiral", "nav-rooms"]
)
def test_expert_succeeds_98_percent_over_100_seeded_episodes(name):
    task = load_task(name)
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    result = evaluate_policy(task, expert, "expert", episodes=100, seed=0, n_envs=4)
    print(json.dumps(result.to_dict()))
    assert result.success_rate >= 0.98


@pytest.mark.slow
def test_wheel_works_from_outside_the_repo(tmp_path):
    """Build the wheel, install it into a fresh venv and list the tasks from an unrelated directory.

    The fresh venv borrows this environment's third-party packages through a .pth line (a
    plain path: the editable install's own .pth files are not processed there), so it tests
    the wheel's contents, sim/ shipped as package data above all, without re-downloading torch.
    """
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)], check=True)
    wheel = next(dist.glob("lam_robot-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"MUJOCO_GL": "egl"}
    where = subprocess.run([python, "-c", "import lam_robot.tasks as t; print(t.builtin_spec_dir())"],
                           cwd=workdir, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(site), f"lam_robot was not imported from the wheel: {where}"
    listed = subprocess.run([venv / "bin" / "lam-robot", "tasks"], cwd=workdir, env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    for name in ("grasp", "nav-umaze", "nav-medium"):
        assert name in listed.stdout
