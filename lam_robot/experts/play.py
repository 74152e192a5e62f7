"""Play data: a goal-conditioned expert driven to goals of its own instead of the task's.

Each env gets a goal drawn from the task's own goal distribution (the desired goal of a scratch env reset
with a random seed), keeps it until the env's ``compute_reward`` says it is reached or ``goal_steps`` have
passed, then draws the next. The task's goal never steers it, so the trajectories carry no task label:
the writer strips the desired goal, the rewards and the success before they reach the file.
"""

from __future__ import annotations

import hashlib
from typing import Any

import gymnasium as gym
import numpy as np

from lam_robot.rollout import Obs, Policy


class PlayPolicy:
    """Wraps ``expert`` (SB3 predict protocol, goal-conditioned) so that it wanders between its own goals."""

    def __init__(
        self,
        expert: Policy,
        goal_env: gym.Env,
        goal_keys: tuple[str, str],
        goal_steps: int = 100,
    ) -> None:
        """``goal_env`` is a scratch env of the task: its resets draw the goals, its ``compute_reward``
        says when one is reached. ``goal_steps``: the most steps spent on one goal."""
        self.expert = expert
        self.goal_env = goal_env
        self.achieved_key, self.desired_key = goal_keys
        self.goal_steps = goal_steps
        self.goals: np.ndarray | None = None
        self.steps = np.zeros(0, dtype=np.int64)
        self.rngs: list[np.random.Generator] = []

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        obs, _ = self.goal_env.reset(seed=int(rng.integers(2**31 - 1)))
        return np.asarray(obs[self.desired_key], dtype=np.float64)

    def _reached(self, achieved: np.ndarray, goals: np.ndarray) -> np.ndarray:
        # Success per the env's own reward: the reward a goal earns when achieved exactly.
        compute = self.goal_env.unwrapped.compute_reward  # type: ignore[attr-defined]
        reward = np.asarray(compute(achieved, goals, {}), dtype=np.float64)
        best = np.asarray(compute(goals, goals, {}), dtype=np.float64)
        return reward >= best - 1e-9

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """SB3's predict protocol over a batch of envs (one row per env)."""
        achieved = np.atleast_2d(np.asarray(obs[self.achieved_key], dtype=np.float64))
        n = len(achieved)
        if self.goals is None or len(self.goals) != n:
            self.goals = np.zeros_like(np.atleast_2d(np.asarray(obs[self.desired_key], dtype=np.float64)))
            self.steps = np.zeros(n, dtype=np.int64)
            self.rngs = [np.random.default_rng(0)] * n
            episode_start = np.ones(n, dtype=bool)
        starts = np.ones(n, dtype=bool) if episode_start is None else np.asarray(episode_start, bool).reshape(n)
        for i in np.flatnonzero(starts):
            # Seeded by the episode's first observation, so episode i's goals do not depend on n_envs.
            digest = hashlib.blake2b(np.ascontiguousarray(achieved[i]).tobytes(), digest_size=8).digest()
            self.rngs[i] = np.random.default_rng(int.from_bytes(digest, "little"))
        renew = starts | (self.steps >= self.goal_steps) | self._reached(achieved, self.goals)
        for i in np.flatnonzero(renew):
            self.goals[i] = self._draw(self.rngs[i])
            self.steps[i] = 0
        self.steps += 1
        steered = dict(obs)
        steered[self.desired_key] = self.goals.reshape(np.shape(obs[self.desired_key])).astype(np.float64)
        return self.expert.predict(steered, state, episode_start, deterministic)
