"""Transformer behaviour cloning: training, checkpoints, resuming, evaluation and bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lam_robot.config import BCConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.policy.checkpoint import load_checkpoint
from lam_robot.policy.network import TransformerConfig, TransformerPolicyNet
from lam_robot.rollout import one_torch_thread
from lam_robot.tasks import load_task
from lam_robot.train.bc import train_bc
from tests.conftest import assert_clean_error, run_cli
from tests.golden import CONFIG as GOLDEN_CONFIG
from tests.golden import GOLDEN, golden_output

TINY = dict(context=4, d_model=16, n_layers=1, n_heads=2, batch_size=64)


def tiny_config(data, out, **overrides) -> BCConfig:
    return BCConfig(data=str(data), out=str(out), **{**TINY, "epochs": 2, **overrides})


@pytest.fixture(scope="module")
def tiny_run(umaze_demos, tmp_path_factory):
    """One tiny trained checkpoint shared by the read-only tests (copy it before changing it)."""
    out = tmp_path_factory.mktemp("bc") / "run"
    train_bc(tiny_config(umaze_demos, out), progress=False)
    return out


def weights(directory):
    return load_file(str(directory / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_golden_network_output():
    """Regenerate with `python -m tests.golden` after an intended change to the network."""
    stored = json.loads(GOLDEN.read_text())
    now = golden_output()
    for key in ("mean", "features", "log_std"):
        np.testing.assert_allclose(np.array(now[key]), np.array(stored[key]), atol=1e-5, rtol=0)
    assert np.abs(np.array(stored["features"])).max() > 0.1  # a real signal, not zeros
    assert GOLDEN_CONFIG.dropout == 0.0


def test_padding_and_causality():
    torch.manual_seed(0)
    net = TransformerPolicyNet(
        TransformerConfig(obs_dim=3, act_dim=2, context=5, d_model=16, n_heads=2, n_layers=2, dropout=0.0)
    ).eval()
    obs = torch.randn(1, 5, 3)
    valid = torch.tensor([[False, False, True, True, True]])
    out = net(obs, valid)
    changed = obs.clone()
    changed[:, :2] = 99.0  # padding content must not matter to the real positions
    torch.testing.assert_close(net(changed, valid)[:, 2:], out[:, 2:])
    later = obs.clone()
    later[:, 4] = 5.0  # the future must not change the past
    torch.testing.assert_close(net(later, valid)[:, :4], out[:, :4])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("n_layers", [1, 3])
def test_newest_position_alone_equals_the_full_forward(n_layers):
    """PPO's shortcut (the last layer for the newest position only) computes the same feature,
    with and without autograd, with padding."""
    torch.manual_seed(0)
    body = TransformerPolicyNet(
        TransformerConfig(obs_dim=3, act_dim=2, context=6, d_model=16, n_heads=2, n_layers=n_layers, dropout=0.0)
    ).body
    obs = torch.randn(4, 6, 3)
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[1, :3] = False
    valid[2, :5] = False
    for mode in (body.train, body.eval):
        mode()
        torch.testing.assert_close(body.forward_last(obs, valid), body(obs, valid)[:, -1], atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(body.forward_last(obs, valid), body(obs, valid)[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["nll", "mse"])
def test_both_losses_learn(umaze_demos, tmp_path, loss):
    with one_torch_thread():
        result = train_bc(tiny_config(umaze_demos, tmp_path / loss, loss=loss, epochs=20, lr=3e-3), progress=False)
    rows = (tmp_path / loss / "log.csv").read_text().splitlines()[1:]
    first, last = float(rows[0].split(",")[2]), float(rows[-1].split(",")[2])
    assert last < first
    assert result.best_valid_loss is not None and (tmp_path / loss / "curves.png").stat().st_size > 1000
    log_std = weights(tmp_path / loss)["log_std"]
    if loss == "mse":
        torch.testing.assert_close(log_std, torch.full_like(log_std, -1.0))  # MSE does not touch the std
    else:
        assert not torch.allclose(log_std, torch.full_like(log_std, -1.0))
    # The trained policy imitates: driven step by step along the demos (its own history, normalisation
    # and action scaling), its actions are far closer to the expert's than the best constant action is.
    with one_torch_thread():
        policy_error, constant_error = imitation_errors(TransformerPolicy.load(tmp_path / loss), umaze_demos)
    assert policy_error < 0.5 * constant_error, (policy_error, constant_error)


def imitation_errors(policy: TransformerPolicy, demo_path) -> tuple[float, float]:
    """Mean squared distance of the policy's deterministic actions to the demo actions when it is fed
    the demos' observations step by step (all demos as one batch), and that of the best constant action."""
    with DemoFile(demo_path) as demos:
        episodes = [demos.episode(name) for name in demos.demo_names]
    lengths = [len(e["actions"]) for e in episodes]
    errors, state = [], None
    for t in range(max(lengths)):
        steps = [min(t, n - 1) for n in lengths]  # a finished demo repeats its last step, unscored
        obs = {k: np.stack([e["obs"][k][i] for e, i in zip(episodes, steps)]) for k in episodes[0]["obs"]}
        actions, state = policy.predict(obs, state, np.full(len(episodes), t == 0))
        errors += [np.sum((a - e["actions"][t]) ** 2) for a, e, n in zip(actions, episodes, lengths) if t < n]
    demo_actions = np.concatenate([e["actions"] for e in episodes])
    return float(np.mean(errors)), float(np.mean(np.sum((demo_actions - demo_actions.mean(axis=0)) ** 2, axis=1)))


def test_training_is_deterministic_for_a_seed(umaze_demos, tiny_run, tmp_path):
    train_bc(tiny_config(umaze_demos, tmp_path / "b"), progress=False)
    assert_same_weights(weights(tiny_run), weights(tmp_path / "b"))
    train_bc(tiny_config(umaze_demos, tmp_path / "c", seed=1), progress=False)
    assert not torch.equal(weights(tiny_run)["body.embed.weight"], weights(tmp_path / "c")["body.embed.weight"])


def test_rerunning_a_finished_run_trains_no_more(umaze_demos, tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    before = weights(tmp_path / "run")
    again = train_bc(tiny_config(umaze_demos, tmp_path / "run"), progress=False)
    assert again.resumed_from == 2 and again.epochs_run == 0
    assert_same_weights(before, weights(tmp_path / "run"))


def test_resume_refuses_other_settings(umaze_demos, tiny_run, tmp_path):
    shutil.copytree(tiny_run, tmp_path / "run")
    with pytest.raises(LamRobotError, match="other settings .*loss"):
        train_bc(tiny_config(umaze_demos, tmp_path / "run", loss="mse"), progress=False)


def test_killed_training_resumes_from_its_last_checkpoint(umaze_demos, tmp_path):
    args = [
        "train-bc",
        "--data",
        str(umaze_demos),
        "--epochs",
        "12",
        "--context",
        "4",
        "--d-model",
        "16",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--batch-size",
        "32",
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lam_robot", *args, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, MUJOCO_GL="egl"),
    )
    state = out / "last" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.exists() and json.loads(state.read_text())["epoch"] >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = json.loads(state.read_text())["epoch"]
    assert 2 <= stopped_at < 12, "training finished before the kill; give it more epochs"
    resumed = run_cli(*args, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from epoch {stopped_at}" in resumed.stdout
    straight = run_cli(*args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    assert_same_weights(weights(out), weights(tmp_path / "straight"))


def test_checkpoint_describes_itself(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["format_version"] == 1 and config["task"]["name"] == "nav-umaze"
    assert config["network"]["obs_dim"] == 6 and config["network"]["act_dim"] == 2
    assert len(config["normalizer"]["obs_mean"]) == 6 and config["normalizer"]["act_low"] == [-1.0, -1.0]
    assert config["training"]["loss"] == "nll" and config["versions"]["torch"].startswith("2.")
    ckpt = load_checkpoint(tiny_run)
    assert ckpt.task == load_task("nav-umaze")


def test_policy_history_follows_episode_starts(tiny_run):
    policy = TransformerPolicy.load(tiny_run)
    rng = np.random.default_rng(0)
    obs = [
        {
            "observation": rng.normal(size=(2, 4)),
            "achieved_goal": rng.normal(size=(2, 2)),
            "desired_goal": rng.normal(size=(2, 2)),
        }
        for _ in range(3)
    ]
    state = None
    for o, start in zip(obs, [[True, True], [False, False], [False, True]]):
        actions, state = policy.predict(o, state, np.array(start))
    history, valid = state
    assert valid[0].sum() == 3 and valid[1].sum() == 1  # env 1 restarted at the last step
    single, _ = policy.predict({k: v[1] for k, v in obs[2].items()}, None, np.array([True]))
    np.testing.assert_allclose(single, actions[1], atol=1e-6)  # batched == unbatched for the same history


def test_train_evaluate_record_end_to_end(umaze_demos, tmp_path):
    run = tmp_path / "bc"
    trained = run_cli(
        "train-bc",
        "--data",
        str(umaze_demos),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--context",
        "4",
        "--d-model",
        "16",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--eval-every",
        "2",
        "--eval-episodes",
        "2",
    )
    assert trained.returncode == 0, trained.stderr
    assert "best checkpoint" in trained.stdout
    assert (run / "log.csv").read_text().splitlines()[-1].split(",")[-1] != ""  # success was evaluated
    report = tmp_path / "eval.json"
    evaluated = run_cli(
        "evaluate", "--policy", str(run), "--task", "nav-umaze", "--episodes", "3", "--json", str(report)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(report.read_text())["episodes"] == 3
    out = tmp_path / "rollouts.hdf5"
    recorded = run_cli(
        "record", "--task", "nav-umaze", "--source", f"policy:{run}", "--episodes", "2", "--out", str(out)
    )
    assert recorded.returncode == 0, recorded.stderr
    with h5py.File(out) as f:
        assert [f[f"data/demo_{i}"].attrs["source"] for i in range(2)] == ["policy", "policy"]


# --- bad input -----------------------------------------------------------------------------------


def test_checkpoint_of_another_task_is_refused(tiny_run):
    assert_clean_error(
        run_cli("evaluate", "--policy", str(tiny_run), "--task", "grasp", "--episodes", "1"),
        "trained on 'nav-umaze' with observation size 6, but task 'grasp' gives 28",
    )


def test_demo_file_of_another_task_is_refused(grasp_demos, tmp_path):
    assert_clean_error(
        run_cli("train-bc", "--data", str(grasp_demos), "--task", "nav-umaze", "--out", str(tmp_path / "x")),
        "holds demos of task 'grasp', not 'nav-umaze'",
    )


def test_empty_training_split_is_refused(umaze_demos, tmp_path):
    data = tmp_path / "nosplit.hdf5"
    shutil.copyfile(umaze_demos, data)
    with h5py.File(data, "a") as f:
        del f["mask/train"]
        f["mask/train"] = np.array([], dtype="S16")
    assert_clean_error(run_cli("train-bc", "--data", str(data), "--out", str(tmp_path / "x")), "mask/train is empty")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "is corrupt"),
        (
            lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:200]),
            "is corrupt or does not match",
        ),
        (lambda d: (d / "config.json").write_text(json.dumps({"format_version": 1})), "lacks or garbles"),
    ],
)
def test_damaged_checkpoint_is_aassert_clean_error(tiny_run, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    damage(run)
    assert_clean_error(run_cli("evaluate", "--policy", str(run), "--task", "nav-umaze", "--episodes", "1"), message)


def test_missing_checkpoint_directory():
    assert_clean_error(
        run_cli("evaluate", "--policy", "policy:/no/such/run", "--task", "nav-umaze", "--episodes", "1"),
        "no such checkpoint directory",
    )


def test_bad_training_settings_are_clean_errors(umaze_demos, tmp_path):
    assert_clean_error(
        run_cli("train-bc", "--data", str(umaze_demos), "--out", str(tmp_path / "x"), "--epochs", "0"),
        "--epochs must be positive",
    )
    assert_clean_error(
        run_cli("train-bc", "--data", str(umaze_demos), "--out", str(tmp_path / "x"), "--n-heads", "3"),
        "--n-heads (3) must divide --d-model (64)",
    )
