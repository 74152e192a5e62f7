"""Baselines from `imitation` (BC-MLP, DAgger, GAIL, AIRL) train on our demos in our tasks and evaluate."""

import json

import pytest

from tests.conftest import assert_clean_error, run_cli

STEPS = {"bc-mlp": "50", "dagger": "600", "gail": "1024", "airl": "1024"}


@pytest.mark.parametrize("algo", sorted(STEPS))
def test_each_algorithm_trains_and_evaluates(algo, umaze_demos, tmp_path):
    out = tmp_path / algo
    trained = run_cli("baseline", "--algo", algo, "--data", str(umaze_demos), "--task", "nav-umaze", "--out", str(out),
                      "--steps", STEPS[algo], "--n-envs", "2")
    assert trained.returncode == 0, trained.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "sb3-mlp" and config["algo"] == algo
    report = tmp_path / "eval.json"
    evaluated = run_cli("evaluate", "--policy", str(out), "--task", "nav-umaze", "--episodes", "2", "--json", str(report))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(report.read_text())["episodes"] == 2


def test_baseline_bad_input(umaze_demos, grasp_demos, tmp_path):
    assert_clean_error(run_cli("baseline", "--algo", "gail", "--data", str(grasp_demos), "--task", "nav-umaze",
                               "--out", str(tmp_path / "x")), "holds demos of task 'grasp', not 'nav-umaze'")
    assert_clean_error(run_cli("baseline", "--algo", "bc-mlp", "--data", str(umaze_demos), "--task", "nav-umaze",
                               "--out", str(tmp_path / "x"), "--steps", "0"), "--steps must be positive")
