"""The public Python API: one import, the same engine as the CLI, and the README's script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import lam_robot as lr
from tests.conftest import run_cli
from tests.test_teleop import assert_same_demos

README = Path(__file__).resolve().parent.parent / "README.md"
TINY_BC = dict(epochs=2, context=4, d_model=16, n_layers=1, n_heads=2, batch_size=64)


def test_the_public_surface_is_one_import():
    for name in ("load_task", "load_policy", "record", "train_bc", "finetune", "evaluate", "DemoFile",
                 "BCConfig", "FinetuneConfig", "RecordConfig", "EvaluateConfig", "DaggerConfig"):
        assert callable(getattr(lr, name)), name
        assert getattr(lr, name).__doc__, f"{name} has no docstring"
    with pytest.raises(AttributeError):
        lr.no_such_name  # noqa: B018


def test_import_is_cheap():
    """`import lam_robot` (and so the CLI's start) loads neither torch nor MuJoCo."""
    code = "import sys, lam_robot; print('torch' in sys.modules, 'mujoco' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_record_append_from_cli_and_api_gives_identical_files(tmp_path):
    """Appending continues the seeds in both routes, so two sessions give the same file either way."""
    by_cli, by_api = tmp_path / "cli.hdf5", tmp_path / "api.hdf5"
    for _ in range(2):
        result = run_cli("record", "--task", "nav-umaze", "--out", str(by_cli), "--episodes", "2", "--noise", "0.3")
        assert result.returncode == 0, result.stderr
        lr.record(task="nav-umaze", out=by_api, episodes=2, noise=0.3, progress=False)
    assert_same_demos(by_cli, by_api)
    with lr.DemoFile(by_api) as demos:
        assert [int(demos.demo(n).attrs["seed"]) for n in demos.demo_names] == [0, 1, 2, 3]


def test_train_bc_from_cli_and_api_gives_identical_weights(umaze_demos, tmp_path):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_BC.items()]
    result = run_cli("train-bc", "--data", str(umaze_demos), "--out", str(tmp_path / "cli"), "--task", "nav-umaze",
                     *flags)
    assert result.returncode == 0, result.stderr
    lr.train_bc(data=umaze_demos, out=tmp_path / "api", task="nav-umaze", progress=False, **TINY_BC)
    cli, api = load_file(str(tmp_path / "cli" / "model.safetensors")), load_file(str(tmp_path / "api" / "model.safetensors"))
    assert cli.keys() == api.keys()
    for key in cli:
        np.testing.assert_array_equal(cli[key], api[key], err_msg=key)


def test_config_paths_survive_json(tmp_path):
    config = lr.FinetuneConfig(policy=tmp_path / "bc", out=str(tmp_path / "ft"), demos=tmp_path / "d.hdf5")
    again = lr.FinetuneConfig.from_dict(config.to_dict())
    assert again == config and isinstance(again.out, Path) and again.task is None and again.init_log_std is None


def test_load_policy_opens_a_checkpoint_with_its_own_task(umaze_demos, tmp_path):
    lr.train_bc(data=umaze_demos, out=tmp_path / "bc", progress=False, **TINY_BC)
    policy = lr.load_policy(str(tmp_path / "bc"))
    result = lr.evaluate(task="nav-umaze", policy=str(tmp_path / "bc"), episodes=2, n_envs=2, progress=False)
    assert policy.task.name == "nav-umaze" and result.episodes == 2
    with pytest.raises(lr.LamRobotError, match="has no task of its own"):
        lr.load_policy("expert")


def _readme_script() -> str:
    match = re.search(r"<!-- api-script -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md lost its Python API script (marked <!-- api-script -->)"
    return match.group(1)


def test_readme_python_api_script_runs(tmp_path):
    script = _readme_script()
    assert len(script.strip().splitlines()) <= 12
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, MUJOCO_GL="egl"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"success \d+%", result.stdout), result.stdout
    assert (tmp_path / "runs" / "api" / "ft" / "ppo.zip").is_file()
