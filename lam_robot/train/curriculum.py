"""Curricula for maze tasks (training only; evaluation keeps the task's own starts and goals).

``MazeGoalCurriculum``: near goals first.

Far goals in a maze give a sparse reward almost never, so PPO learns nothing from them. Each
training episode here starts in a random free cell with its goal at most ``radius`` grid steps
(shortest path) away, and is cut at ``steps_per_cell`` x radius steps (a near goal that is not
reached by then will not be: the expert needs 15-30 steps a cell); once the success rate over the
last ``window`` episodes reaches ``promote``, the radius grows by one cell. When it covers the
whole maze the env draws its goals itself again, with the task's own time limit.

``FailedStartReplay``: the start and goal cells of failed episodes, tried again.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from lam_robot.experts.maze import MazeExpert


class MazeGoalCurriculum(gym.Wrapper):
    """Draws training goals within ``radius`` maze cells of the start, widening it as success grows."""

    def __init__(
        self,
        env: gym.Env,
        is_success: Callable[[dict], bool],
        radius: float = 2.0,
        window: int = 20,
        promote: float = 0.5,
        steps_per_cell: int = 60,
    ) -> None:
        super().__init__(env)
        planner = MazeExpert.from_env(env)
        self.cols = planner.cols
        self.free = np.flatnonzero(planner.free.ravel())
        self.dist = planner.dist[np.ix_(self.free, self.free)]  # [goal, start] in cells
        self.full_radius = float(self.dist[np.isfinite(self.dist)].max())
        self.is_success = is_success
        self.radius = radius
        self.promote = promote
        self.steps_per_cell = steps_per_cell
        self.limit: float = float("inf")
        self.steps = 0
        self.results: collections.deque[bool] = collections.deque(maxlen=window)
        self.rng = np.random.default_rng()

    def set_radius(self, radius: float) -> None:
        """Restore the radius of a resumed run."""
        self.radius = radius

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset to a random free cell with a goal within ``radius`` (or the env's own goal once it covers the maze)."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.steps, self.limit = 0, float("inf")
        if options is None and self.radius < self.full_radius:
            start = self.rng.integers(len(self.free))
            near = np.flatnonzero((self.dist[:, start] > 0) & (self.dist[:, start] <= self.radius))
            goal = self.rng.choice(near)
            options = {
                "reset_cell": np.array(divmod(int(self.free[start]), self.cols)),
                "goal_cell": np.array(divmod(int(self.free[goal]), self.cols)),
            }
            self.limit = self.steps_per_cell * self.radius
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any):
        """Step the env; cut the episode at the curriculum's time limit and promote the radius on success."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        truncated = truncated or self.steps >= self.limit
        if terminated or truncated:
            self.results.append(self.is_success(info))
            if len(self.results) == self.results.maxlen and np.mean(self.results) >= self.promote:
                self.radius += 1.0
                self.results.clear()
        return obs, reward, terminated, truncated, info


class FailedStartReplay(gym.Wrapper):
    """Restarts some training episodes from the start and goal cells of an earlier failed one.

    A policy that already solves most start-to-goal pairs learns little from another draw of them; the
    pairs it failed are where its sparse reward and its hindsight windows can still teach it something
    (the idea of prioritised level replay, Jiang et al. 2021, at the level of cells). Each failed
    episode's pair joins a list; with probability ``prob`` a reset draws one from it (and removes it: a
    replay that fails again puts it back). The positions within the cells keep the env's own noise.
    """

    def __init__(
        self,
        env: gym.Env,
        is_success: Callable[[dict], bool],
        prob: float,
        goal_keys: tuple[str, str] = ("achieved_goal", "desired_goal"),
        capacity: int = 256,
    ) -> None:
        super().__init__(env)
        self.goal_keys = goal_keys
        self.planner = MazeExpert.from_env(env)
        self.is_success = is_success
        self.prob = prob
        self.failed: collections.deque[tuple[int, int]] = collections.deque(maxlen=capacity)
        """(start cell, goal cell) of failed episodes not yet retried, as flat maze-grid indices."""
        self.pair = (0, 0)
        self.replays = 0
        self.rng = np.random.default_rng()

    def set_failed(self, pairs: list[list[int]]) -> None:
        """Restore the failed pairs of a resumed run."""
        self.failed.clear()
        self.failed.extend((int(start), int(goal)) for start, goal in pairs)

    def _cell(self, xy: np.ndarray) -> int:
        return int(self.planner.cell_index(np.asarray(xy)[None, :2])[0])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset to a failed pair with probability ``prob`` (when there is one), else as the env draws."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if options is None and self.failed and self.rng.random() < self.prob:
            i = int(self.rng.integers(len(self.failed)))
            start, goal = self.failed[i]
            del self.failed[i]
            cols = self.planner.cols
            options = {"reset_cell": np.array(divmod(start, cols)), "goal_cell": np.array(divmod(goal, cols))}
            self.replays += 1
        obs, info = self.env.reset(seed=seed, options=options)
        self.pair = (self._cell(obs[self.goal_keys[0]]), self._cell(obs[self.goal_keys[1]]))
        return obs, info

    def step(self, action: Any):
        """Step the env; a failed episode's pair joins the list."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and not self.is_success(info):
            self.failed.append(self.pair)
        return obs, reward, terminated, truncated, info
