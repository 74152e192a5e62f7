"""Scripted experts on the real envs: they solve seeded episodes and batch correctly."""

from __future__ import annotations

import gymnasium as gym
import gymnasium_robotics
import numpy as np
import pytest

from lam_robot.experts import EXPERTS, MazeExpert, PickAndPlaceExpert, make_expert

gym.register_envs(gymnasium_robotics)

CASES = [
    ("FetchPickAndPlace-v4", {}, "pick-and-place", "is_success"),
    ("PointMaze_UMaze-v3", {"continuing_task": False}, "maze-waypoints", "success"),
    ("PointMaze_Medium-v3", {"continuing_task": False}, "maze-waypoints", "success"),
]


def run_episode(env: gym.Env, expert, seed: int) -> tuple[bool, dict[str, np.ndarray]]:
    """One episode; returns success at the last step and the stacked observations."""
    obs, info = env.reset(seed=seed)
    seen = [obs]
    while True:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        seen.append(obs)
        if terminated or truncated:
            break
    stacked = {k: np.stack([o[k] for o in seen]) for k in obs}
    return bool(info.get("is_success", info.get("success"))), stacked


@pytest.mark.parametrize(("env_id", "kwargs", "name", "_key"), CASES)
def test_expert_solves_seeded_episodes(env_id, kwargs, name, _key):
    env = gym.make(env_id, **kwargs)
    expert = make_expert(name, env)
    results = [run_episode(env, expert, seed)[0] for seed in range(3)]
    env.close()
    assert all(results), results


@pytest.mark.parametrize(("env_id", "kwargs", "name", "_key"), CASES)
def test_batched_predict_matches_rows(env_id, kwargs, name, _key):
    env = gym.make(env_id, **kwargs)
    expert = make_expert(name, env)
    _, batch = run_episode(env, expert, seed=7)
    env.close()

    actions, state = expert.predict(batch)
    assert state is None
    assert actions.dtype == np.float32 and actions.shape == (len(batch["observation"]),) + env.action_space.shape
    assert np.all(np.abs(actions) <= 1.0)
    for i in range(0, len(actions), 5):
        row, _ = expert.predict({k: v[i] for k, v in batch.items()})
        assert row.shape == env.action_space.shape and row.dtype == np.float32
        np.testing.assert_array_equal(row, actions[i])


def test_expert_does_not_need_the_env():
    env = gym.make("PointMaze_UMaze-v3", continuing_task=False)
    expert = make_expert("maze-waypoints", env)
    obs, _ = env.reset(seed=0)
    env.close()
    assert expert(obs).shape == (2,)


def test_maze_expert_handles_a_custom_map():
    maze_map = [
        [1, 1, 1, 1, 1, 1, 1],
        [1, "c", 0, 0, 1, "c", 1],
        [1, 1, 1, 0, 1, 0, 1],
        [1, 1, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1],
    ]
    env = gym.make("PointMaze_UMaze-v3", maze_map=maze_map, continuing_task=False)
    expert = MazeExpert.from_env(env)
    ok, _ = run_episode(env, expert, seed=0)
    env.close()
    assert ok


def test_unknown_expert_name_raises():
    env = gym.make("PointMaze_UMaze-v3")
    with pytest.raises(ValueError, match="unknown expert 'nope'"):
        make_expert("nope", env)
    env.close()


def test_expert_rejects_the_wrong_env():
    env = gym.make("PointMaze_UMaze-v3")
    with pytest.raises(ValueError):
        make_expert("pick-and-place", env)
    env.close()


def test_registry():
    assert EXPERTS == {"pick-and-place": PickAndPlaceExpert, "maze-waypoints": MazeExpert}
