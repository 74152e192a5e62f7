"""Self-imitation inside PPO fine-tuning: relabelled rollout windows, rewards from the env, bad input."""

import json

import numpy as np
import pytest
import torch

from lam_robot.config import FinetuneConfig
from lam_robot.errors import LamRobotError
from lam_robot.tasks import load_task
from lam_robot.train.finetune import FinetuneRun
from tests.conftest import assert_clean_error, run_cli

# nav-umaze episodes last up to 300 steps: 320 steps of one env finish at least one.
TINY_SI = dict(
    n_envs=1, n_steps=64, batch_size=32, n_epochs=1, bc_steps=2, eval_every=10_000, eval_episodes=2, critic_warmup=0
)


def test_self_imitation_buffer_holds_relabelled_rollout_windows(bc_run, tmp_path):
    config = FinetuneConfig(
        policy=bc_run, out=tmp_path / "ft", steps=320, self_imitation="hindsight", si_horizon=20.0, **TINY_SI
    )
    run = FinetuneRun(config, progress=False)
    actor_before = [p.detach().clone() for p in run.model.policy.actor_parameters()]
    run.model.learn(config.steps)
    si = run.model.self_imitation
    assert si is not None and si.size > 0 and si.relabelled >= si.kept == si.size
    windows = si.windows()
    env = load_task("nav-umaze").make_env()
    columns = slice(4, 6)  # nav-umaze's policy observation: observation (4), desired_goal (2)
    episodes = {e.number: e for e in si.recent}
    assert si.episodes_finished == 1 + max(episodes)  # numbered in the order they finished
    checked = 0
    for i in range(si.size):
        goal = windows["goal"][i].numpy()
        box = windows["obs"][i].numpy()
        real = box[:, -1] > 0.5
        np.testing.assert_array_equal(box[real][:, columns], np.broadcast_to(goal, (int(real.sum()), 2)))
        reward = env.unwrapped.compute_reward(windows["achieved"][i].numpy(), goal, {})
        assert windows["reward"][i].item() == pytest.approx(float(reward))
        assert windows["ret"][i] > windows["value"][i]  # the ESIL filter
        episode = episodes.get(int(windows["episode"][i]))
        if episode is None:
            continue
        step, goal_step = int(windows["step"][i]), int(windows["goal_step"][i])
        assert goal_step >= step
        np.testing.assert_array_equal(goal, episode.achieved[goal_step])  # a goal this episode reached later
        np.testing.assert_array_equal(box[real][:, :4], episode.boxes[step][real][:, :4])  # its own states
        if goal_step + 1 < len(episode.boxes):  # the point's position is the achieved goal
            np.testing.assert_allclose(episode.boxes[goal_step + 1][-1, :2], goal, atol=1e-6)
        checked += 1
    assert checked > 0
    env.close()
    # Its NLL moved the actor (with PPO), and the run's TensorBoard scalars say how much was kept.
    assert any(not torch.equal(b, a.detach()) for b, a in zip(actor_before, run.model.policy.actor_parameters()))
    run.model.get_env().close()


def test_window_labels_imitate_every_step_of_a_kept_window_with_its_own_action(bc_run, tmp_path):
    """--si-labels window: each kept window carries the action of every real row of its history (row j of step t's
    window is step t - (K - 1 - j)), and sample() labels all of them; the default labels only the newest."""
    config = FinetuneConfig(
        policy=bc_run, out=tmp_path / "ft", steps=320, self_imitation="hindsight", si_labels="window", **TINY_SI
    )
    run = FinetuneRun(config, progress=False)
    run.model.learn(config.steps)
    si = run.model.self_imitation
    assert si is not None and si.size > 0
    windows = si.windows()
    context = windows["obs"].shape[1]
    episodes = {e.number: e for e in si.recent}
    checked = 0
    for i in range(si.size):
        episode = episodes.get(int(windows["episode"][i]))
        if episode is None:
            continue
        step = int(windows["step"][i])
        real = windows["obs"][i][:, -1].numpy() > 0.5
        assert real.sum() == min(step + 1, context) and real[-1]
        expected = episode.actions[step - int(real.sum()) + 1 : step + 1]
        np.testing.assert_array_equal(windows["window_actions"][i][real].numpy(), expected)
        assert not windows["window_actions"][i][~real].any()
        np.testing.assert_array_equal(windows["window_actions"][i][-1], windows["actions"][i])
        checked += 1
    assert checked > 0
    history, actions, labels = si.sample(16)
    assert actions.shape == (*history.shape[:2], 2) and bool(labels.all())
    si.labels = "newest"
    history, actions, labels = si.sample(16)
    assert labels[:, -1].all() and not labels[:, :-1].any()
    np.testing.assert_array_equal(actions[:, 0], actions[:, -1])
    run.model.get_env().close()


def test_self_imitation_imitates_the_sampled_or_the_sent_action(bc_run, tmp_path):
    """--si-actions sent keeps the env's (clipped) action; sampled keeps PPO's own unclipped draw, which
    leaves nav-umaze's [-1, 1] box on some steps (BC's means sit near the bounds)."""
    outside = {}
    for mode in ("sent", "sampled"):
        config = FinetuneConfig(
            policy=bc_run, out=tmp_path / mode, steps=320, self_imitation="hindsight", si_actions=mode, **TINY_SI
        )
        run = FinetuneRun(config, progress=False)
        run.model.learn(config.steps)
        si = run.model.self_imitation
        assert si is not None and si.recent
        actions = np.concatenate([e.actions for e in si.recent])
        outside[mode] = float((np.abs(actions) > 1 + 1e-6).mean())
        run.model.get_env().close()
    assert outside["sent"] == 0.0 < outside["sampled"]


def test_drop_detours_drops_exactly_the_windows_whose_path_loops_back():
    """A hand-made maze episode: right 1.2, back to the start, then left 1.2. Relabelled once with every window
    kept and once with --si-drop-detours (same seed, same goals): the second keeps all but the windows whose
    path leaves their start by more than PointMaze's 0.45 and comes back before the goal."""
    from lam_robot.train.self_imitation import Episode, SelfImitation

    env = load_task("nav-umaze").make_env()
    x = np.concatenate([np.linspace(0, 1.2, 13), np.linspace(1.1, -1.2, 24)])
    achieved = np.stack([x, np.zeros_like(x)], axis=1)
    n = len(x)
    episode = Episode(0, np.ones((n, 3, 7), np.float32), np.zeros((n, 2), np.float32), achieved, [{}] * n)

    def relabelled(drop: bool) -> tuple[set[tuple[int, int]], int]:
        si = SelfImitation(env, 1, slice(4, 6), lambda a: a, 10_000, 30.0, 0.98, "none", 3, drop_detours=drop)
        si._relabel(episode, lambda obs: torch.zeros(len(obs), 1))
        kept = si.windows()
        return set(zip(kept["step"].tolist(), kept["goal_step"].tolist())), si.detours

    every, none_dropped = relabelled(False)
    kept, detours = relabelled(True)
    assert none_dropped == 0 and len(every) > len(kept) == len(every) - detours > 0

    def loops(step: int, goal_step: int) -> bool:
        home, goal = achieved[step - 1], achieved[goal_step]
        path = np.linalg.norm(achieved[step : goal_step + 1] - home, axis=1)
        reach = np.flatnonzero(np.linalg.norm(achieved[step : goal_step + 1] - goal, axis=1) <= 0.45)[0]
        away = np.flatnonzero(path[: reach + 1] > 0.45)
        return len(away) > 0 and bool((path[away[0] : reach + 1] <= 0.45).any())

    assert kept == {w for w in every if not loops(*w)}
    assert any(loops(*w) for w in every)  # the episode has detours to drop
    env.close()


def test_progress_filter_keeps_the_windows_that_neared_their_goal_fastest():
    """A hand-made maze episode that crawls, then speeds up: the progress filter keeps exactly the windows whose
    goal-space distance per step to their goal is at least the median, computed here from the path itself."""
    from lam_robot.train.self_imitation import Episode, SelfImitation

    env = load_task("nav-umaze").make_env()
    x = np.concatenate([np.arange(0, 0.6, 0.03), np.arange(0.6, 3.0, 0.15)])
    achieved = np.stack([x, np.zeros_like(x)], axis=1)
    n = len(x)
    episode = Episode(0, np.ones((n, 3, 7), np.float32), np.zeros((n, 2), np.float32), achieved, [{}] * n)

    def relabelled(keep: str) -> set[tuple[int, int]]:
        si = SelfImitation(env, 1, slice(4, 6), lambda a: a, 10_000, 20.0, 0.98, keep, 5)
        si._relabel(episode, lambda obs: torch.zeros(len(obs), 1))
        kept = si.windows()
        return set(zip(kept["step"].tolist(), kept["goal_step"].tolist()))

    every, fast = relabelled("none"), relabelled("progress")

    def progress(step: int, goal_step: int) -> float:
        goal = achieved[goal_step]
        reach = np.flatnonzero(np.linalg.norm(achieved[step : goal_step + 1] - goal, axis=1) <= 0.45)[0]
        return float(np.linalg.norm(goal - achieved[step - 1]) / (reach + 1))

    bar = np.median([progress(*w) for w in every])
    assert fast == {w for w in every if progress(*w) >= bar}
    assert 0 < len(fast) < len(every)
    assert np.mean([s for s, _ in fast]) > np.mean([s for s, _ in every])  # the fast part of the path
    env.close()


def test_advantage_priority_draws_kept_windows_in_proportion_to_return_minus_value():
    """A hand-made straight maze path and a critic that says 0.5 everywhere: windows that reached their goal in
    fewer steps than that value implies are drawn in proportion to their return minus 0.5; the others at the
    floor (1% of the largest)."""
    from lam_robot.train.self_imitation import Episode, SelfImitation

    env = load_task("nav-umaze").make_env()
    x = np.arange(0, 4.0, 0.05)
    n = len(x)
    actions = np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.float32)  # action = step: a window's name
    achieved = np.stack([x, np.zeros_like(x)], axis=1)
    episode = Episode(0, np.ones((n, 3, 7), np.float32), actions, achieved, [{}] * n)
    draws = {}
    for priority in ("uniform", "advantage"):
        si = SelfImitation(env, 1, slice(4, 6), lambda a: a, 10_000, 20.0, 0.98, "none", 5, priority=priority)
        si._relabel(episode, lambda obs: torch.full((len(obs), 1), 0.5))
        _, drawn, _ = si.sample(40_000)
        draws[priority] = np.bincount(drawn[:, -1, 0].long().numpy(), minlength=n) / 40_000
    kept = si.windows()
    advantage = (kept["ret"] - kept["value"]).numpy()
    assert (advantage > 0).any() and (advantage < 0).any()
    weight = np.zeros(n)
    weight[kept["step"].numpy()] = np.maximum(advantage, 0.01 * advantage.max())
    np.testing.assert_allclose(draws["advantage"], weight / weight.sum(), atol=0.006)
    uniform = np.zeros(n)
    uniform[kept["step"].numpy()] = 1 / len(advantage)
    np.testing.assert_allclose(draws["uniform"], uniform, atol=0.006)
    env.close()


def test_final_goals_relabel_a_share_of_steps_with_the_episodes_last_reached_goal():
    """--si-final P: about P of the relabelled steps get the last goal the episode reached (HER's final strategy),
    the rest one a geometric number of steps ahead, as without it."""
    from lam_robot.train.self_imitation import Episode, SelfImitation

    env = load_task("nav-umaze").make_env()
    x = np.arange(0, 400.0, 0.5)  # 800 steps of 0.5 along a line: no goal is reached before its step
    n = len(x)
    achieved = np.stack([x, np.zeros_like(x)], axis=1)
    episode = Episode(0, np.ones((n, 3, 7), np.float32), np.zeros((n, 2), np.float32), achieved, [{}] * n)
    shares = {}
    for final in (0.0, 0.5):
        si = SelfImitation(env, 1, slice(4, 6), lambda a: a, 10_000, 5.0, 0.98, "none", 5, final=final)
        si._relabel(episode, lambda obs: torch.zeros(len(obs), 1))
        kept = si.windows()
        goal_step, step = kept["goal_step"].numpy(), kept["step"].numpy()
        last = goal_step == n - 1
        np.testing.assert_array_equal(kept["goal"].numpy()[last], np.broadcast_to(achieved[-1], (int(last.sum()), 2)))
        shares[final] = float(last[step < n - 100].mean())  # far from the end, only a final draw reaches it
    assert shares[0.0] == 0.0
    assert 0.42 < shares[0.5] < 0.58
    env.close()


def test_self_imitation_through_the_cli_and_the_api_resumes(bc_run, umaze_demos, tmp_path):
    """The CLI runs it; the Python API continues the same run from OUT/last/ (with a fresh buffer)."""
    import lam_robot

    out = tmp_path / "ft"
    result = run_cli(
        "finetune", "--policy", str(bc_run), "--out", str(out), "--steps", "128", "--demos", str(umaze_demos),
        "--self-imitation", "hindsight", "--si-weight", "0.5", "--n-envs", "2", "--n-steps", "32",
        "--batch-size", "32", "--n-epochs", "1", "--eval-episodes", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (out / "model.safetensors").is_file() and (out / "ppo.zip").is_file()
    resumed = lam_robot.finetune(
        policy=bc_run, out=out, steps=192, demos=umaze_demos, self_imitation="hindsight", si_weight=0.5,
        n_envs=2, n_steps=32, batch_size=32, n_epochs=1, eval_episodes=1, progress=False,
    )  # fmt: skip
    assert resumed.resumed_from == 128 and resumed.env_steps == 192
    assert json.loads((out / "config.json").read_text())["finetune"]["si_decay"] == 1.0  # nav-umaze's default


def test_the_task_specs_finetune_table_sets_the_si_decay_default(bc_run, tmp_path):
    spec = tmp_path / "umaze-tuned.toml"
    spec.write_text(
        'name = "nav-umaze"\nenv_id = "PointMaze_UMaze-v3"\nhorizon = 300\n'
        'policy_obs_keys = ["observation", "desired_goal"]\ngoal_keys = ["achieved_goal", "desired_goal"]\n'
        'success_key = "success"\nexpert = "maze-waypoints"\n[env_kwargs]\ncontinuing_task = false\n'
        "[finetune]\nsi_decay = 0.9\n"
    )

    def decay(out: str, **fields) -> float:
        config = FinetuneConfig(policy=bc_run, out=tmp_path / out, steps=64, self_imitation="hindsight", **TINY_SI,
                                **fields)  # fmt: skip
        run = FinetuneRun(config, progress=False)
        run.model.get_env().close()
        run.si_env.close()
        return run.model.si_decay

    assert decay("builtin") == 1.0  # nav-umaze's built-in spec has no [finetune] table
    assert decay("tuned", task=str(spec)) == 0.9
    assert decay("flag", task=str(spec), si_decay=1.0) == 1.0  # a flag beats the spec
    # The run saved the spec's default as None; resuming it with that value spelt out is the same run, another is not.
    first = FinetuneRun(FinetuneConfig(policy=bc_run, out=tmp_path / "resumed", steps=64, self_imitation="hindsight",
                                       task=str(spec), **TINY_SI), progress=False)  # fmt: skip
    first.save_last()
    first.model.get_env().close()
    first.si_env.close()
    assert decay("resumed", task=str(spec), si_decay=0.9) == 0.9
    with pytest.raises(LamRobotError, match="si_decay: None -> 1.0"):
        decay("resumed", task=str(spec), si_decay=1.0)


def test_self_imitation_needs_goal_keys(bc_run, tmp_path):
    spec = tmp_path / "no-goals.toml"
    spec.write_text(
        'name = "nav-umaze"\nenv_id = "PointMaze_UMaze-v3"\nhorizon = 300\n'
        'policy_obs_keys = ["observation", "desired_goal"]\nsuccess_key = "success"\nexpert = "maze-waypoints"\n'
        "[env_kwargs]\ncontinuing_task = false\n"
    )
    result = run_cli(
        "finetune", "--policy", str(bc_run), "--out", str(tmp_path / "ft"), "--task", str(spec),
        "--self-imitation", "hindsight", "--steps", "64",
    )  # fmt: skip
    assert_clean_error(result, "--self-imitation hindsight needs a goal-conditioned task")


def test_self_imitation_settings_are_checked():
    with pytest.raises(LamRobotError, match="--si-weight needs --self-imitation hindsight"):
        FinetuneConfig(policy="p", out="o", si_weight=0.5)
    for flag, value in (("si_drop_detours", True), ("si_actions", "sampled"), ("si_labels", "window"),
                        ("si_priority", "advantage"), ("si_final", 0.5)):
        with pytest.raises(LamRobotError, match=f"--{flag.replace('_', '-')} needs --self-imitation hindsight"):
            FinetuneConfig(policy="p", out="o", **{flag: value})
    with pytest.raises(LamRobotError, match="--algo ppo only"):
        FinetuneConfig(policy="p", out="o", algo="sac", self_imitation="hindsight")
    with pytest.raises(LamRobotError, match="--si-final must be in"):
        FinetuneConfig(policy="p", out="o", self_imitation="hindsight", si_final=1.5)
    with pytest.raises(LamRobotError, match="--si-decay must be in"):
        FinetuneConfig(policy="p", out="o", self_imitation="hindsight", si_decay=0.0)
