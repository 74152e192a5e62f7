"""Potential-based reward shaping for maze tasks (Ng, Harada & Russell, 1999).

r' = r + gamma * phi(s') - phi(s), with phi = -(shortest-path distance to the goal through the
maze grid) and phi = 0 at termination. It leaves the optimal policy unchanged, unlike
PointMaze's own dense reward (exp(-straight-line distance)), which points into walls and pays
for hovering near the goal instead of ending the episode there.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from lam_robot.experts.maze import MazeExpert


class MazePathShaping(gym.Wrapper):
    """Adds the potential-based shaping term (phi = -shortest-path distance to the goal) to the reward."""

    def __init__(self, env: gym.Env, gamma: float) -> None:
        super().__init__(env)
        self.planner = MazeExpert.from_env(env)
        self.gamma = gamma
        self._phi = 0.0

    def potential(self, obs: dict[str, np.ndarray]) -> float:
        """phi(s): minus the shortest-path distance from the point to the goal through the maze."""
        xy = np.asarray(obs["observation"])[None, :2]
        return -float(self.planner.path_length(xy, np.asarray(obs["desired_goal"])[None])[0])

    def reset(self, **kwargs: Any):
        """Reset the env and the potential."""
        obs, info = self.env.reset(**kwargs)
        self._phi = self.potential(obs)
        return obs, info

    def step(self, action):
        """Step the env; the reward comes back shaped by gamma * phi(s') - phi(s)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = 0.0 if terminated else self.potential(obs)
        shaped = float(reward) + self.gamma * phi - self._phi
        self._phi = phi
        return obs, shaped, terminated, truncated, info
