"""PPO fine-tuning of the BC Transformer: the bridge, warm-up, outputs, resuming and bad input."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stable_baselines3 import PPO

from lam_robot.config import FinetuneConfig
from lam_robot.errors import LamRobotError
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.train.finetune import FinetuneRun
from tests.conftest import assert_clean_error, run_cli

TINY_PPO = dict(n_envs=2, n_steps=32, batch_size=32, n_epochs=2, eval_every=64, eval_episodes=2)


def ppo_config(bc_run, out, **overrides) -> FinetuneConfig:
    return FinetuneConfig(policy=str(bc_run), out=str(out), **{"steps": 128, **TINY_PPO, **overrides})


def test_bridge_starts_from_the_bc_policy(bc_run, tmp_path):
    """At step 0 the PPO policy's deterministic action and log-std equal the BC policy's."""
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft"), progress=False)
    bc = TransformerPolicy.load(bc_run)
    venv = run.model.get_env()
    history = venv.reset()
    state, start = None, np.ones(2, bool)
    for _ in range(40):
        ppo_action, _ = run.model.predict(history, deterministic=True)
        newest = history[:, -1, :-1]
        bc_action, state = bc.predict({"observation": newest[:, :4], "desired_goal": newest[:, 4:6]}, state, start)
        np.testing.assert_allclose(ppo_action, bc_action, atol=1e-5)
        history, _, done, _ = venv.step(ppo_action)
        start = done.copy()
    torch.testing.assert_close(run.model.policy.log_std.detach(), bc.net.log_std.detach())
    venv.close()


def test_critic_warmup_leaves_the_actor_alone(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", critic_warmup=2, steps=128), progress=False)
    actor_before = [p.detach().clone() for p in run.model.policy.actor_parameters()]
    critic_before = [p.detach().clone() for p in run.model.policy.mlp_extractor.critic.parameters()]
    run.model.learn(128)  # two rollouts of 2 envs x 32 steps
    assert run.model.rollouts_done == 2
    for before, after in zip(actor_before, run.model.policy.actor_parameters()):
        torch.testing.assert_close(before, after.detach(), rtol=0, atol=0)
    assert any(not torch.equal(b, a) for b, a in zip(critic_before, run.model.policy.mlp_extractor.critic.parameters()))
    run.model.learn(64, reset_num_timesteps=False)  # after the warm-up the actor learns
    assert any(not torch.equal(b, a.detach()) for b, a in zip(actor_before, run.model.policy.actor_parameters()))
    run.model.get_env().close()


def test_actor_learns_slower_than_the_critic(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", actor_lr_scale=0.1, learning_rate=1e-3), progress=False)
    run.model.learn(64)
    lrs = sorted(group["lr"] for group in run.model.policy.optimizer.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    run.model.get_env().close()


def test_finetune_end_to_end_with_bc_regulariser(bc_run, umaze_demos, tmp_path):
    out = tmp_path / "ft"
    result = run_cli(
        "finetune",
        "--policy",
        str(bc_run),
        "--out",
        str(out),
        "--steps",
        "256",
        "--demos",
        str(umaze_demos),
        "--bc-weight",
        "1.0",
        "--critic-warmup",
        "1",
        "--n-envs",
        "2",
        "--n-steps",
        "32",
        "--batch-size",
        "32",
        "--n-epochs",
        "2",
        "--eval-every",
        "128",
        "--eval-episodes",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert "success after 256 env steps" in result.stdout
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("env_steps,success_rate") and [r.split(",")[0] for r in rows[1:]] == ["0", "128", "256"]
    assert (out / "curves.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("eval/success_rate")] == [0, 128, 256]
    assert {"train/value_loss", "train/bc_loss", "train/bc_weight"} <= set(events.Tags()["scalars"])
    # The BC-format checkpoint is what evaluate and record accept ...
    evaluated = run_cli("evaluate", "--policy", str(out), "--task", "nav-umaze", "--episodes", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["env_steps"] == 256 and config["finetune"]["bc_weight"] == 1.0
    # ... and ppo.zip is a standard SB3 model that plain PPO.load opens.
    model = PPO.load(out / "ppo.zip", device="cpu")
    history = np.zeros((1,) + model.observation_space.shape, np.float32)
    history[0, -1, -1] = 1.0
    action, _ = model.predict(history, deterministic=True)
    assert action.shape == (1, 2)
    fine = load_file(str(out / "model.safetensors"))
    torch.testing.assert_close(model.policy.action_net.weight.detach(), fine["mean_head.weight"])


def test_linear_lr_schedule_anneals_every_group_to_zero_at_the_end(bc_run, tmp_path):
    """--lr-schedule linear: after each rollout of 64 steps out of 256, the actor and critic rates (the BC and
    self-imitation steps use the same optimizer) are the constant's x the fraction of the budget left."""
    config = ppo_config(bc_run, tmp_path / "ft", actor_lr_scale=0.1, learning_rate=1e-3, lr_schedule="linear")
    run = FinetuneRun(config, progress=False)
    seen, train = [], run.model.train

    def spy() -> None:
        train()
        seen.append(sorted(group["lr"] for group in run.model.policy.optimizer.param_groups))

    run.model.train = spy
    run.model.learn(256)
    assert seen == [pytest.approx([left * 1e-4, left * 1e-3]) for left in (0.75, 0.5, 0.25, 0.0)]
    run.model.get_env().close()


def test_killed_finetune_resumes_from_its_snapshot(bc_run, tmp_path):
    """A killed run resumes from OUT/last/: its weights and optimizer moments, not the BC start or a fresh
    initialisation. (Not bit-equal to an uninterrupted run: the rollout in progress is redone with fresh
    env resets, as the README says.)"""
    out = tmp_path / "ft"
    args = [
        "finetune",
        "--policy",
        str(bc_run),
        "--n-envs",
        "2",
        "--n-steps",
        "32",
        "--batch-size",
        "32",
        "--n-epochs",
        "1",
        "--eval-every",
        "256",
        "--eval-episodes",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lam_robot", *args, "--out", str(out), "--steps", "2048"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, MUJOCO_GL="egl"),
    )
    state = out / "last" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not state.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped = json.loads(state.read_text())["num_timesteps"]
    stopped_seconds = json.loads(state.read_text())["wall_seconds"]
    assert 0 < stopped < 2048
    snapshot = load_file(str(out / "last" / "training.safetensors"))
    assert any(key.startswith("optim.") for key in snapshot)  # the optimizer had stepped
    # Resumed with nothing left to train, the run ends exactly where the snapshot left it: the same
    # weights (in ppo.zip, and re-saved with the same optimizer moments in OUT/last/).
    again = tmp_path / "again"
    shutil.copytree(out, again)
    finished = run_cli(*args, "--out", str(again), "--steps", str(stopped))
    assert finished.returncode == 0, finished.stderr
    assert f"resumed from env step {stopped}" in finished.stdout
    with open(again / "log.csv") as f:  # its evaluation at that step is taken from the log, not run again
        assert [r["env_steps"] for r in csv.DictReader(f)].count(str(stopped)) == 1
    ppo_weights = PPO.load(again / "ppo.zip", device="cpu").policy.state_dict()
    snapshot_weights = {k.removeprefix("model."): v for k, v in snapshot.items() if k.startswith("model.")}
    assert_same_tensors({k: v for k, v in ppo_weights.items() if k in snapshot_weights}, snapshot_weights)
    assert_same_tensors(load_file(str(again / "last" / "training.safetensors")), snapshot)
    bc_start = load_file(str(bc_run / "model.safetensors"))
    assert not torch.equal(snapshot_weights["action_net.weight"], bc_start["mean_head.weight"])  # PPO had trained
    # The same command as the killed run finishes it from there.
    resumed = run_cli(*args, "--out", str(out), "--steps", "2048")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from env step {stopped}" in resumed.stdout
    assert json.loads((out / "config.json").read_text())["env_steps"] == 2048
    with open(out / "log.csv") as f:  # the resumed leg's clock goes on from the snapshot's, for wall-clock curves
        later = [float(r["wall_seconds"]) for r in csv.DictReader(f) if int(r["env_steps"]) > stopped]
    assert later and min(later) > stopped_seconds > 0


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=lambda m, key=key: f"{key}: {m}")


def test_from_scratch_uses_the_same_network_with_fresh_weights(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", from_scratch=True), progress=False)
    bc = TransformerPolicy.load(bc_run)
    body = run.model.policy.features_extractor.body
    assert body.config.d_model == bc.net.config.d_model
    assert not torch.equal(body.embed.weight, bc.net.body.embed.weight)
    run.model.get_env().close()


# --- bad input -----------------------------------------------------------------------------------


def test_checkpoint_of_another_task_is_refused(bc_run, tmp_path):
    assert_clean_error(
        run_cli("finetune", "--policy", str(bc_run), "--task", "grasp", "--steps", "64", "--out", str(tmp_path / "ft")),
        "acts with actions of shape (2,) (trained on 'nav-umaze'); task 'grasp' takes shape (4,)",
    )


def test_demo_file_of_another_task_is_refused(bc_run, grasp_demos, tmp_path):
    assert_clean_error(
        run_cli(
            "finetune",
            "--policy",
            str(bc_run),
            "--demos",
            str(grasp_demos),
            "--steps",
            "64",
            "--out",
            str(tmp_path / "ft"),
        ),
        "holds demos of task 'grasp'",
    )


def test_zero_steps_is_refused(bc_run, tmp_path):
    assert_clean_error(
        run_cli("finetune", "--policy", str(bc_run), "--steps", "0", "--out", str(tmp_path / "ft")),
        "--steps must be positive",
    )
    with pytest.raises(LamRobotError, match="--bc-weight must be non-negative"):
        FinetuneConfig(policy=str(bc_run), out=str(tmp_path / "x"), bc_weight=-1.0)


def test_subprocess_envs(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", vec_env="subproc"), progress=False)
    run.model.learn(64)
    assert run.model.num_timesteps >= 64
    run.model.get_env().close()


def test_maze_shaping_telescopes_along_the_expert_path():
    """Potential-based: the shaped return is the sparse one plus gamma-discounted potential steps,
    and the potential (minus the path length to the goal) rises along the expert's path."""
    from lam_robot.sources import resolve_policy
    from lam_robot.tasks import load_task
    from lam_robot.train.shaping import MazePathShaping

    task = load_task("nav-medium")
    env = MazePathShaping(task.make_env(), gamma=0.98)
    expert = resolve_policy("expert", task, env)
    obs, _ = env.reset(seed=3)
    phis, shaped, sparse = [env.potential(obs)], [], []
    while True:
        obs, reward, terminated, truncated, info = env.step(expert.predict(obs)[0])
        phis.append(0.0 if terminated else env.potential(obs))
        shaped.append(reward)
        sparse.append(float(info["success"]))
        if terminated or truncated:
            break
    assert terminated
    expected = np.array(sparse) + 0.98 * np.array(phis[1:]) - np.array(phis[:-1])
    np.testing.assert_allclose(shaped, expected)
    assert phis[0] < -5.0 and all(b >= a - 0.1 for a, b in zip(phis[:-1], phis[1:]))
    env.close()


def test_dense_finetune_on_a_maze_uses_shaping(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", dense=True), progress=False)
    wrappers, env = [], run.model.env.envs[0]
    while hasattr(env, "env"):
        wrappers.append(type(env).__name__)
        env = env.env
    assert "MazePathShaping" in wrappers
    run.train()
    assert (tmp_path / "ft" / "model.safetensors").exists()


def test_goal_curriculum_keeps_goals_near_and_widens_on_success():
    from lam_robot.experts.maze import MazeExpert
    from lam_robot.tasks import load_task
    from lam_robot.train.curriculum import MazeGoalCurriculum

    task = load_task("nav-medium")
    env = MazeGoalCurriculum(task.make_env(), task.is_success, radius=2.0, window=3, promote=1.0)
    expert = MazeExpert.from_env(env)
    radii = []
    for episode in range(9):
        obs, _ = env.reset(seed=7 if episode == 0 else None)
        start, goal = expert.cell_index(obs["observation"][None, :2]), expert.cell_index(obs["desired_goal"][None])
        assert 0 < expert.dist[goal, start][0] <= env.radius
        radii.append(env.radius)
        while True:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            if terminated or truncated:
                break
        assert info["success"]
    assert radii == [2.0] * 3 + [3.0] * 3 + [4.0] * 3  # every 3 successes in a row widen it by a cell
    env.reset()
    # Standing still: cut at 60 steps per cell of radius, and counted a failure.
    for step in range(1, 1000):  # noqa: B007 (step is read after the loop)
        *_, terminated, truncated, info = env.step(np.zeros(2))
        if terminated or truncated:
            break
    assert env.radius == 5.0 and (step, truncated, list(env.results)) == (300, True, [False])
    env.close()


def test_failure_replay_restarts_a_failed_start_and_goal_cell_pair_once():
    from lam_robot.experts.maze import MazeExpert
    from lam_robot.tasks import load_task
    from lam_robot.train.curriculum import FailedStartReplay

    task = load_task("nav-medium")
    env = FailedStartReplay(task.make_env(), task.is_success, prob=1.0)
    expert = MazeExpert.from_env(env)

    def cells(obs):
        return int(expert.cell_index(obs["achieved_goal"][None])[0]), int(
            expert.cell_index(obs["desired_goal"][None])[0]
        )

    def run(obs, act):
        while True:
            obs, _, terminated, truncated, info = env.step(act(obs))
            if terminated or truncated:
                return info

    first, _ = env.reset(seed=3)
    assert env.replays == 0 and not env.failed  # nothing failed yet: the env draws its own pair
    assert not run(first, lambda obs: np.zeros(2))["success"]  # standing still fails at the time limit
    assert list(env.failed) == [cells(first)]
    again, _ = env.reset()
    assert (env.replays, cells(again), list(env.failed)) == (1, cells(first), [])  # the same cells, taken off
    assert not np.allclose(again["achieved_goal"], first["achieved_goal"])  # the env's noise within the cell
    assert run(again, expert)["success"] and not env.failed  # solved: not queued again
    fresh, _ = env.reset()
    assert env.replays == 1
    run(fresh, lambda obs: np.zeros(2))
    env.set_failed([[5, 9], [10, 12]])  # a resumed run's list replaces the current one
    assert list(env.failed) == [(5, 9), (10, 12)]
    never = FailedStartReplay(task.make_env(), task.is_success, prob=0.0)
    never.set_failed([[cells(first)[0], cells(first)[1]]])
    for _ in range(3):
        never.reset()
    assert never.replays == 0 and len(never.failed) == 1
    env.close(), never.close()


def test_failure_replay_keeps_its_failed_pairs_across_a_resume(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", failure_replay=0.5), progress=False)
    assert run.model.get_env().get_attr("prob") == [0.5, 0.5]
    run.model.get_env().env_method("set_failed", [[5, 9]], indices=1)
    run.save_last()
    run.model.get_env().close()
    resumed = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", failure_replay=0.5, steps=256), progress=False)
    assert [list(f) for f in resumed.model.get_env().get_attr("failed")] == [[], [(5, 9)]]
    resumed.train()  # real rollouts through the wrapper
    assert (tmp_path / "ft" / "model.safetensors").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "ft" / "tensorboard")).Reload()
    assert {"train/failure_replays", "train/failed_pairs_queued"} <= set(events.Tags()["scalars"])
    for bad, message in (({"task": "grasp"}, "maze tasks only"), ({"algo": "sac"}, "--failure-replay yet"),
                         ({"failure_replay": 1.5}, r"--failure-replay must be in \[0, 1\]")):  # fmt: skip
        with pytest.raises(LamRobotError, match=message):
            FinetuneRun(ppo_config(bc_run, tmp_path / "ft2", **{"failure_replay": 0.5, **bad}), progress=False)


def test_goal_curriculum_wraps_training_envs_only_on_mazes(bc_run, tmp_path):
    run = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", goal_curriculum=True), progress=False)
    assert run.model.get_env().get_attr("radius") == [2.0, 2.0]
    run.model.get_env().env_method("set_radius", 5.0, indices=1)
    run.save_last()
    run.model.get_env().close()
    resumed = FinetuneRun(ppo_config(bc_run, tmp_path / "ft", goal_curriculum=True, steps=256), progress=False)
    assert resumed.model.get_env().get_attr("radius") == [2.0, 5.0]  # a resumed run keeps its curriculum
    resumed.model.get_env().close()
    with pytest.raises(LamRobotError, match="maze tasks only"):
        FinetuneRun(ppo_config(bc_run, tmp_path / "ft2", task="grasp", goal_curriculum=True), progress=False)
