"""SAC fine-tuning of the BC Transformer (finetune --algo sac): step-0 equality, demos + HER, outputs,
resuming and bad input. Tiny real runs on nav-umaze."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import DummyVecEnv

from lam_robot.config import FinetuneConfig
from lam_robot.errors import LamRobotError
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.rollout import one_torch_thread
from lam_robot.sources import load_policy
from lam_robot.tasks import load_task
from lam_robot.train.finetune import FinetuneRun
from lam_robot.train.sac import SQUASH_LIMIT, DemoBuffer, make_sac_env_fn, sac_schedule
from tests.conftest import assert_clean_error, run_cli

TINY_SAC = dict(algo="sac", n_envs=1, batch_size=32, eval_episodes=2, critic_warmup=50)


@pytest.fixture(autouse=True)
def _one_thread():
    """As finetune() does: SAC's many small tensor ops are far slower with competing threads."""
    with one_torch_thread():
        yield


def sac_config(bc_run, out, **overrides) -> FinetuneConfig:
    return FinetuneConfig(policy=str(bc_run), out=str(out), **{"steps": 400, "eval_every": 400, **TINY_SAC, **overrides})


def test_sac_starts_from_the_bc_policy(bc_run, tmp_path):
    """At step 0 SAC's deterministic action is the BC action with the normalised action clipped to
    +-SQUASH_LIMIT (tanh of atanh), to 1e-5, along 40 steps of 2 envs."""
    run = FinetuneRun(sac_config(bc_run, tmp_path / "ft", n_envs=2, her=False), progress=False)
    bc = TransformerPolicy.load(bc_run)
    norm = bc.normalizer
    venv = run.model.get_env()
    obs = venv.reset()
    assert set(obs) == {"observation", "achieved_goal", "desired_goal"} and obs["observation"].shape == (2, 4, 5)
    state, start = None, np.ones(2, bool)
    for _ in range(40):
        sac_action, _ = run.model.predict(obs, deterministic=True)
        raw = {"observation": obs["observation"][:, -1, :-1], "desired_goal": obs["desired_goal"]}
        bc_action, state = bc.predict(raw, state, start)
        unit = norm.action_to_unit(bc_action)
        expected = norm.action_from_unit(np.clip(unit, -SQUASH_LIMIT, SQUASH_LIMIT))
        np.testing.assert_allclose(sac_action, expected, atol=1e-5)
        np.testing.assert_allclose(sac_action, bc_action, atol=(1 - SQUASH_LIMIT) * 1.01)
        obs, _, done, _ = venv.step(sac_action)
        start = done.copy()
    torch.testing.assert_close(run.model.policy.actor.log_std.bias.detach(), bc.net.log_std.detach())
    # The BC-format copy of the actor is the BC network itself at step 0.
    torch.testing.assert_close(run.model.policy.to_bc_net().mean_head.weight, bc.net.mean_head.weight)
    venv.close()


def test_sac_with_demos_and_her_end_to_end(bc_run, umaze_demos, tmp_path):
    """A few hundred SAC steps with HER and the demos in a second buffer, through the CLI; every output."""
    out = tmp_path / "ft"
    args = ["--algo", "sac", "--n-envs", "1", "--batch-size", "32", "--critic-warmup", "50", "--eval-episodes", "2"]
    result = run_cli(
        "finetune", "--policy", str(bc_run), "--out", str(out), "--demos", str(umaze_demos), "--steps", "600",
        "--eval-every", "450", "--learning-starts", "100", "--q-filter", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "success after 600 env steps" in result.stdout
    rows = (out / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "450", "600"]
    assert (out / "curves.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/critic_loss", "train/actor_loss", "train/bc_loss", "train/q_filter_kept", "eval/success_rate"} <= tags
    config = json.loads((out / "config.json").read_text())
    assert config["env_steps"] == 600 and config["finetune"]["algo"] == "sac"
    # HER waits for a finished episode: learning starts at (horizon + 1) x n_envs = 301; then one
    # gradient step per env step, the first 50 critic-only.
    # sac.zip is a plain SB3 model; with HER, SB3's load wants the env (HerReplayBuffer's rule).
    env = DummyVecEnv([make_sac_env_fn(load_task("nav-umaze"), 4, 0, 0)])
    model = SAC.load(out / "sac.zip", env=env, device="cpu")
    assert model.replay_buffer_class.__name__ == "HerReplayBuffer"
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (1, 2)
    fine = load_file(str(out / "model.safetensors"))
    torch.testing.assert_close(model.policy.actor.mu.head.weight.detach(), fine["mean_head.weight"])
    bc_start = load_file(str(bc_run / "model.safetensors"))
    assert not torch.equal(fine["mean_head.weight"], bc_start["mean_head.weight"])  # the actor moved
    evaluated = run_cli("evaluate", "--policy", str(out), "--task", "nav-umaze", "--episodes", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    # RUN/sac.zip itself is a policy too (its task read from RUN), acting as the BC-format copy does.
    zipped = run_cli("evaluate", "--policy", str(out / "sac.zip"), "--task", "nav-umaze", "--episodes", "2",
                     "--json", str(out / "e.json"))
    assert zipped.returncode == 0, zipped.stderr
    assert json.loads((out / "e.json").read_text())["episodes"] == 2
    sac_policy, bc_policy = load_policy(str(out / "sac.zip")), load_policy(str(out))
    env = load_task("nav-umaze").make_env()
    obs, _ = env.reset(seed=3)
    sac_state = bc_state = None
    for t in range(30):
        start = np.array([t == 0])
        batch = {k: v[None] for k, v in obs.items()}
        a, sac_state = sac_policy.predict(batch, sac_state, start)
        b, bc_state = bc_policy.predict(batch, bc_state, start)
        np.testing.assert_allclose(a, b, atol=1e-5)  # the actor's tanh mean and the BC clip agree
        obs, *_ = env.step(a[0])
    env.close()


@pytest.mark.parametrize("actor_update", ["awac", "sac"])
def test_demo_batches_mix_and_warmup_freezes_the_actor(bc_run, umaze_demos, tmp_path, actor_update):
    config = sac_config(bc_run, tmp_path / "ft", demos=str(umaze_demos), her=False, learning_starts=64,
                        critic_warmup=40, actor_update=actor_update)  # fmt: skip
    run = FinetuneRun(config, progress=False)
    model = run.model
    demos = model.demo_buffer
    assert demos is not None and len(demos) > 100
    # Demo transitions: next history = history shifted by one step; actions in [-1, 1].
    np.testing.assert_array_equal(demos.obs["observation"][1:10], demos.next_obs["observation"][:9])
    np.testing.assert_array_equal(demos.obs["observation"][:9, 1:], demos.next_obs["observation"][:9, :-1])
    assert float(demos.actions.abs().max()) <= 1.0
    actor_before = [p.detach().clone() for p in model.actor.parameters()]
    model.learn(104)  # 64 steps collected, then 40 critic-only gradient steps
    assert model.gradient_steps_done == 40
    for before, after in zip(actor_before, model.actor.parameters()):
        torch.testing.assert_close(before, after.detach(), rtol=0, atol=0)
    model.learn(10, reset_num_timesteps=False)
    assert any(not torch.equal(b, a.detach()) for b, a in zip(actor_before, model.actor.parameters()))
    run.venv.close()


def test_demo_hindsight_goals_come_from_later_in_the_same_demo():
    """--demo-her on a hand-made buffer of two demos: a relabelled goal is one its demo reached at that step or
    later, observation and next observation get the same goal, and the reward is the env's compute_reward."""
    env = load_task("nav-umaze").make_env()
    lengths = [5, 7]
    n = sum(lengths)
    row = np.arange(n, dtype=np.float32)[:, None]
    achieved = np.stack([np.arange(n) * 0.3, np.zeros(n)], 1).astype(np.float32)  # 0.3 apart: beyond 0.45 at 2
    goals = np.full((n, 2), 9.0, np.float32)
    obs = {"observation": np.repeat(row, 3, 1), "achieved_goal": achieved - 0.3, "desired_goal": goals}
    next_obs = {"observation": np.repeat(row + 1, 3, 1), "achieved_goal": achieved, "desired_goal": goals}
    ends = np.repeat(np.cumsum(lengths) - 1, lengths)
    buffer = DemoBuffer(obs, np.zeros((n, 2)), np.full(n, -1.0), next_obs, np.zeros(n), ends)
    buffer.relabel_goals(4, lambda a, g: env.unwrapped.compute_reward(a, g, [{}] * len(a)))
    torch.manual_seed(0)
    batch = buffer.sample(2000)
    rows = batch.observations["observation"][:, 0].long()
    goal = batch.observations["desired_goal"]
    torch.testing.assert_close(goal, batch.next_observations["desired_goal"])
    relabelled = (goal != 9.0).any(1)
    assert 0.75 < relabelled.float().mean() < 0.85  # her_goals / (her_goals + 1)
    for i in torch.nonzero(relabelled).flatten().tolist():
        reached = torch.from_numpy(achieved[rows[i] : ends[rows[i]] + 1])
        assert (reached == goal[i]).all(1).any(), i
    expected = env.unwrapped.compute_reward(achieved[rows.numpy()], goal.numpy(), [{}] * len(rows))
    np.testing.assert_array_equal(batch.rewards[:, 0].numpy(), np.where(relabelled.numpy(), expected, -1.0))
    assert len(set(batch.rewards[relabelled, 0].tolist())) == 2  # goals reached (the step's own) and not reached
    own = buffer.sample(500, hindsight=False)  # what the BC term gets with --demo-her-critics-only
    assert (own.observations["desired_goal"] == 9.0).all() and (own.rewards == -1.0).all()
    env.close()


def test_demo_her_runs_and_is_refused_without_her_or_demos(bc_run, umaze_demos, tmp_path):
    config = sac_config(bc_run, tmp_path / "ft", demos=str(umaze_demos), demo_her=True, learning_starts=64)
    run = FinetuneRun(config, progress=False)
    assert run.model.demo_buffer.her_share == pytest.approx(0.8)
    run.model.learn(400)  # HER waits for a finished episode (301 steps), then 100 gradient steps
    assert run.model.gradient_steps_done > 0
    run.venv.close()
    with pytest.raises(LamRobotError, match="--demo-her relabels the demo buffer; give --demos"):
        sac_config(bc_run, tmp_path / "x", demo_her=True)
    with pytest.raises(LamRobotError, match="--demo-her needs --algo sac"):
        FinetuneConfig(policy=str(bc_run), out=str(tmp_path / "x"), demos=str(umaze_demos), demo_her=True)
    assert_clean_error(
        run_cli("finetune", "--policy", str(bc_run), "--algo", "sac", "--demos", str(umaze_demos), "--demo-her",
                "--her", "False", "--steps", "64", "--out", str(tmp_path / "y")),
        "--demo-her relabels demos as HER does; it needs HER on",
    )  # fmt: skip
    assert not (tmp_path / "y").exists()


def test_demo_her_critics_only_keeps_the_bc_terms_goals(bc_run, umaze_demos, tmp_path):
    """--demo-her-critics-only: the critics' demo half has relabelled goals, the BC term only recorded ones."""
    config = sac_config(bc_run, tmp_path / "ft", demos=str(umaze_demos), demo_her=True, demo_her_critics_only=True,
                        learning_starts=64, critic_warmup=0, actor_update="sac", bc_weight=1.0)  # fmt: skip
    run = FinetuneRun(config, progress=False)
    recorded = torch.unique(run.model.demo_buffer.obs["desired_goal"], dim=0)
    bc_goals, critic_goals = [], []
    bc_step, sample = run.model._bc_step, run.model.demo_buffer.sample

    def spy_bc_step(batch, weight):
        bc_goals.append(batch.observations["desired_goal"])
        return bc_step(batch, weight)

    def spy_sample(n, hindsight=True):
        batch = sample(n, hindsight)
        if hindsight:
            critic_goals.append(batch.observations["desired_goal"])
        return batch

    run.model._bc_step, run.model.demo_buffer.sample = spy_bc_step, spy_sample
    run.model.learn(400)
    run.venv.close()
    assert bc_goals and critic_goals

    def share_recorded(goals: list[torch.Tensor]) -> float:
        rows = torch.cat(goals)
        return float((rows[:, None, :] == recorded[None]).all(-1).any(1).float().mean())

    assert share_recorded(bc_goals) == 1.0
    assert share_recorded(critic_goals) < 0.5  # 4 of 5 relabelled
    with pytest.raises(LamRobotError, match="--demo-her-critics-only changes what --demo-her relabels"):
        sac_config(bc_run, tmp_path / "x", demos=str(umaze_demos), demo_her_critics_only=True)


def test_bc_proposal_and_acting_from_the_first_step(bc_run, tmp_path):
    """A BC-initialised actor acts from step 0 (not SB3's uniform warm-up actions); --bc-proposal keeps a
    frozen BC copy, also after a resume, and logs how often its action was taken."""
    out = tmp_path / "ft"
    config = dict(steps=300, eval_every=300, her=False, learning_starts=100, bc_proposal=True, init_log_std=-9.0)
    run = FinetuneRun(sac_config(bc_run, out, **config), False)
    run.train()
    bc = TransformerPolicy.load(bc_run)
    buffer = run.model.replay_buffer
    raw = {"observation": buffer.observations["observation"][:100, 0, -1, :-1],
           "desired_goal": buffer.observations["desired_goal"][:100, 0]}  # fmt: skip
    starts = buffer.observations["observation"][:100, 0, :-1, -1].sum(axis=1) == 0  # history of one row
    expected = []
    state = None
    for t in range(100):
        action, state = bc.predict({k: v[t : t + 1] for k, v in raw.items()}, state, starts[t : t + 1])
        expected.append(np.clip(bc.normalizer.action_to_unit(action)[0], -SQUASH_LIMIT, SQUASH_LIMIT))
    np.testing.assert_allclose(buffer.actions[:100, 0], np.array(expected), atol=1e-3)  # BC's, std e^-9
    proposal, actor = run.model.proposal, run.model.policy.actor
    torch.testing.assert_close(proposal.mu.head.weight, bc.net.mean_head.weight)
    assert not torch.equal(actor.mu.head.weight, bc.net.mean_head.weight)  # the actor learned, the copy did not
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    share = EventAccumulator(str(out / "tensorboard")).Reload().Scalars("rollout/bc_proposal_share")
    assert share and all(0.0 <= e.value <= 1.0 for e in share)
    resumed = FinetuneRun(sac_config(bc_run, out, **(config | {"steps": 350})), False)
    torch.testing.assert_close(resumed.model.proposal.mu.head.weight, bc.net.mean_head.weight)
    torch.testing.assert_close(resumed.model.policy.actor.mu.head.weight, actor.mu.head.weight)
    resumed.venv.close()
    with pytest.raises(LamRobotError, match="--bc-proposal needs the BC policy; drop --from-scratch"):
        sac_config(bc_run, out, bc_proposal=True, from_scratch=True)


def test_awac_actor_update(bc_run, umaze_demos, tmp_path):
    """--actor-update awac: the actor learns by advantage-weighted imitation of the batch (SB3's own actor step
    is not applied), the entropy coefficient stays at its initial value, and the steps are logged."""
    out = tmp_path / "ft"
    config = sac_config(bc_run, out, steps=500, eval_every=500, learning_starts=50, actor_update="awac",
                        demos=umaze_demos, bc_weight=0.0, init_ent_coef=0.05)  # fmt: skip
    run = FinetuneRun(config, False)
    run.train()
    bc = TransformerPolicy.load(bc_run)
    assert not torch.equal(run.model.policy.actor.mu.head.weight, bc.net.mean_head.weight)
    assert float(run.model.log_ent_coef.detach().exp()) == pytest.approx(0.05, rel=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(out / "tensorboard")).Reload().Tags()["scalars"])
    assert {"train/awac_loss", "train/awac_weight_max", "train/critic_loss"} <= tags
    with pytest.raises(LamRobotError, match="--actor-update needs --algo sac"):
        FinetuneConfig(policy=str(bc_run), out=str(out), actor_update="sac")
    # One more step: SB3's actor loss (computed, not applied) sends no gradient through the Transformer, so
    # the AWAC step's backward pass is its only one (the BC term is off here).
    passes = []
    handle = run.model.policy.actor.mu.head.weight.register_hook(lambda grad: passes.append(1))
    run.model.train(1, 32)
    handle.remove()
    assert len(passes) == 1


def test_sac_resumes_from_its_snapshot(bc_run, tmp_path):
    """A run resumes from OUT/last/: weights, the three optimizers, entropy coefficient, counters and the
    online HER replay buffer (the episode that was running closed as truncated, so it can be sampled)."""
    out = tmp_path / "ft"
    first = FinetuneRun(sac_config(bc_run, out, steps=450, eval_every=450, learning_starts=50), False)
    first.train()
    snapshot = load_file(str(out / "last" / "training.safetensors"))
    assert any(k.startswith("extra.critic_optim.") for k in snapshot) and "extra.log_ent_coef" in snapshot
    before = first.model.replay_buffer
    resumed = FinetuneRun(sac_config(bc_run, out, steps=550, eval_every=450, learning_starts=50), False)
    assert resumed.resumed_from == 450 and resumed.model.gradient_steps_done == first.model.gradient_steps_done > 0
    assert resumed.restored_transitions == 450 and resumed.model.learning_starts == 301  # no refill wait
    buffer = resumed.model.replay_buffer
    assert type(buffer).__name__ == "HerReplayBuffer" and buffer.pos == 450 and not buffer.full
    for key in ("observation", "achieved_goal", "desired_goal"):
        np.testing.assert_array_equal(buffer.observations[key][:450], before.observations[key][:450])
        np.testing.assert_array_equal(buffer.next_observations[key][:450], before.next_observations[key][:450])
    np.testing.assert_array_equal(buffer.actions[:450], before.actions[:450])
    running = int(before._current_ep_start[0])
    np.testing.assert_array_equal(buffer.ep_length[:running], before.ep_length[:running])  # finished episodes
    assert before.ep_length[running, 0] == 0  # the running one could not be sampled; now it is closed:
    assert buffer.ep_length[running, 0] == 450 - running and buffer._current_ep_start[0] == 450
    weights = {k.removeprefix("model."): v for k, v in snapshot.items() if k.startswith("model.")}
    for key, value in resumed.model.policy.state_dict().items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    torch.testing.assert_close(resumed.model.log_ent_coef.detach(), snapshot["extra.log_ent_coef"])
    result = resumed.train()
    assert result.env_steps == 550 and result.resumed_from == 450 and result.restored_transitions == 450
    assert [r.split(",")[0] for r in (out / "log.csv").read_text().splitlines()[1:]] == ["0", "450", "550"]
    # A buffer file that does not belong to the snapshot (a kill between the two writes) is not used:
    # the run refills for --learning-starts steps instead.
    data = dict(np.load(out / "last" / "replay.npz"))
    np.savez(out / "last" / "replay.npz", **(data | {"stamp": np.asarray(1)}))
    again = FinetuneRun(sac_config(bc_run, out, steps=650, eval_every=450, learning_starts=50), False)
    assert again.restored_transitions == 0 and again.model.learning_starts == 301 + 550
    again.venv.close()


def test_killed_sac_run_resumes(bc_run, tmp_path):
    """kill -9 mid-run, then the same command again: it resumes from OUT/last/ and finishes."""
    out = tmp_path / "ft"
    args = ["finetune", "--policy", str(bc_run), "--out", str(out), "--algo", "sac", "--her", "False",
            "--n-envs", "1", "--batch-size", "32", "--critic-warmup", "20", "--learning-starts", "50",
            "--eval-every", "150", "--eval-episodes", "1", "--steps", "3000"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "lam_robot", *args],
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
    assert 0 < stopped < 3000
    finished = run_cli(*args[:-1], str(stopped + 150))
    assert finished.returncode == 0, finished.stderr
    assert f"resumed from env step {stopped}" in finished.stdout
    assert json.loads((out / "config.json").read_text())["env_steps"] == stopped + 150


# --- bad input -----------------------------------------------------------------------------------


def test_her_on_a_task_without_goal_keys_is_refused(bc_run, tmp_path):
    spec = tmp_path / "nogoal.toml"
    spec.write_text(
        'name = "nogoal"\nenv_id = "PointMaze_UMaze-v3"\nhorizon = 300\npolicy_obs_keys = ["observation"]\n'
        'success_key = "success"\nexpert = "maze-waypoints"\n'
    )
    assert_clean_error(
        run_cli("finetune", "--policy", str(bc_run), "--task", str(spec), "--algo", "sac", "--her", "True",
                "--steps", "64", "--out", str(tmp_path / "ft")),
        "--her needs a goal task",
    )  # fmt: skip


def test_sac_on_a_discrete_action_space_is_refused(bc_run, tmp_path):
    spec = tmp_path / "cartpole.toml"
    spec.write_text(
        'name = "cartpole"\nenv_id = "CartPole-v1"\nhorizon = 100\npolicy_obs_keys = ["observation"]\n'
        'success_key = "success"\nexpert = "maze-waypoints"\n'
    )
    assert_clean_error(
        run_cli("finetune", "--policy", str(bc_run), "--task", str(spec), "--algo", "sac",
                "--steps", "64", "--out", str(tmp_path / "ft")),
        "--algo sac needs a continuous (Box) action space",
    )  # fmt: skip


def test_sac_only_flags_need_sac(bc_run, tmp_path):
    with pytest.raises(LamRobotError, match="--q-filter needs --algo sac"):
        FinetuneConfig(policy=str(bc_run), out=str(tmp_path / "ft"), q_filter=True)
    with pytest.raises(LamRobotError, match=r"--demo-ratio must be in \[0, 1\)"):
        FinetuneConfig(policy=str(bc_run), out=str(tmp_path / "ft"), algo="sac", demo_ratio=1.0)
    with pytest.raises(LamRobotError, match="--utd needs --algo sac"):
        FinetuneConfig(policy=str(bc_run), out=str(tmp_path / "ft"), utd=0.5)
    with pytest.raises(LamRobotError, match="--utd must be positive"):
        FinetuneConfig(policy=str(bc_run), out=str(tmp_path / "ft"), algo="sac", utd=0.0)


def test_utd_sets_sb3s_train_schedule():
    """--utd gradient steps per env step, whatever the number of envs."""
    assert sac_schedule(1.0, 1) == {"train_freq": 1, "gradient_steps": 1}
    assert sac_schedule(1.0, 8) == {"train_freq": 1, "gradient_steps": 8}
    assert sac_schedule(0.5, 1) == {"train_freq": 2, "gradient_steps": 1}
    assert sac_schedule(0.25, 2) == {"train_freq": 2, "gradient_steps": 1}
    assert sac_schedule(2.0, 4) == {"train_freq": 1, "gradient_steps": 8}
