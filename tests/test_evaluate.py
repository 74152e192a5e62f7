"""`lam-robot evaluate` and the statistics behind it."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

from lam_robot.evaluation import evaluate_policy, wilson_interval
from lam_robot.sources import resolve_policy
from lam_robot.tasks import load_task
from tests.conftest import run_cli


@pytest.mark.parametrize("k, n, low, high", [
    (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (5, 10, 0.2366, 0.7634), (45, 50, 0.7864, 0.9565)])
def test_wilson_interval_matches_reference_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_evaluate_cli_writes_json_and_a_playable_video(tmp_path):
    out, video = tmp_path / "eval.json", tmp_path / "rollout.mp4"
    result = run_cli("evaluate", "--policy", "expert", "--task", "nav-umaze", "--episodes", "6", "--n-envs", "3",
                     "--video", str(video), "--video-episodes", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for key in ("success_rate", "ci_low", "ci_high", "mean_return", "mean_length", "episodes"):
        assert key in report
    assert report["episodes"] == 6 and report["success_rate"] == 1.0
    assert report["ci_low"] < 1.0 == report["ci_high"]
    assert "success 100.0%" in result.stdout
    frames = iio.imread(video)
    assert frames.ndim == 4 and frames.shape[0] > 20 and frames.shape[-1] == 3
    assert frames.std() > 5  # a real picture, not a blank frame


def test_results_do_not_depend_on_n_envs():
    task = load_task("grasp")
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    one = evaluate_policy(task, expert, "expert", episodes=4, seed=3, n_envs=1)
    three = evaluate_policy(task, expert, "expert", episodes=4, seed=3, n_envs=3)
    assert (one.successes, one.mean_return, one.mean_length) == (three.successes, three.mean_return, three.mean_length)


def test_random_policy_is_a_weak_baseline():
    task = load_task("nav-umaze")
    env = task.make_env()
    rand = resolve_policy("random", task, env, seed=0)
    env.close()
    result = evaluate_policy(task, rand, "random", episodes=4, seed=0, n_envs=2)
    assert result.success_rate < 1.0 and np.isfinite(result.mean_return)


@pytest.mark.parametrize("args, message", [
    (("--episodes", "0"), "--episodes must be positive"),
    (("--policy", "nonsense"), "unknown policy 'nonsense'"),
    (("--video", "/no/such/dir/v.mp4"), "does not exist"),
])
def test_evaluate_bad_arguments_are_clean_errors(args, message):
    result = run_cli("evaluate", "--task", "nav-umaze", "--episodes", "1", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
