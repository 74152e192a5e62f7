"""Routed training episodes (``finetune --route-training P``): a share of PPO's episodes is given waypoints.

``evaluate --route`` lifts a fine-tuned maze policy by giving it waypoints over the goals its training reached.
Here the same waypoints steer a share P of the training episodes, so that more of them reach far goals
(Go-Explore's "return, then explore"; SoRB's search during training). The env still rewards the real goal.
Self-imitation relabels every window with a goal its episode reached later, replacing the waypoint, so the
far goals the routed episodes reach are imitated by the network itself, which is what ``evaluate`` measures
unrouted. The graph is rebuilt from the run's reached paths every ``REBUILD_EVERY`` rollouts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from lam_robot.policy.routing import ReachedPaths, RoutedPolicy, experience_graph
from lam_robot.tasks import TaskSpec

REBUILD_EVERY = 20
"""Rollouts between rebuilds of the graph (a build over about 10k points takes seconds)."""


class Route(NamedTuple):
    """A graph (in its ``RoutedPolicy``), its next nodes and env steps toward one goal."""

    routed: RoutedPolicy
    nxt: np.ndarray
    dist: np.ndarray

    def waypoint(self, here: np.ndarray, goal: np.ndarray) -> np.ndarray | None:
        """Where to aim from ``here`` (None: at the goal itself)."""
        return self.routed.waypoint(here, goal, self.nxt, self.dist)


class TrainingRouter:
    """The waypoints every routed env asks for: one graph, shared by the envs of this process."""

    def __init__(self, task: TaskSpec, ahead: int) -> None:
        self.task, self.ahead = task, ahead
        self.goal_keys = task.require_goals("--route-training")
        self.routed: RoutedPolicy | None = None
        self._env = task.make_env()  # for its compute_reward

    def rebuild(self, paths: ReachedPaths) -> None:
        """A new graph over ``paths`` (no graph yet if there are none)."""
        if paths.paths:
            graph, _ = experience_graph(paths, self.task, self._env, "--route-training")
            self.routed = RoutedPolicy(None, graph, self.goal_keys, self.ahead)  # type: ignore[arg-type]

    def route(self, goal: np.ndarray) -> Route | None:
        """The current graph's route toward ``goal`` (None before the first build); an episode keeps its route
        (and so its graph) when the graph is rebuilt."""
        if self.routed is None:
            return None
        return Route(self.routed, *self.routed.graph.toward(self.routed.graph.nearest(goal)))

    def close(self) -> None:
        """Close the env kept for its compute_reward."""
        self._env.close()


class WaypointGoals(gym.Wrapper):
    """With probability ``share`` per episode, the desired goal in the observations is the router's waypoint
    while the real goal is far; the env's reward, success and info still belong to the real goal."""

    def __init__(self, env: gym.Env, router: TrainingRouter, share: float, seed: int) -> None:
        super().__init__(env)
        self.router, self.share = router, share
        self.rng = np.random.default_rng(seed)
        self._route: Route | None = None

    def reset(self, **kwargs: Any):
        """Reset the env; the episode is routed with probability ``share`` (once a graph exists)."""
        obs, info = self.env.reset(**kwargs)
        routed = self.rng.random() < self.share
        self._route = self.router.route(np.asarray(obs[self.router.goal_keys[1]])) if routed else None
        return self._aimed(obs), info

    def step(self, action):
        """Step the env; the observation aims at the waypoint while the real goal is far."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._aimed(obs), reward, terminated, truncated, info

    def _aimed(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._route is None:
            return obs
        achieved, desired = self.router.goal_keys
        point = self._route.waypoint(np.asarray(obs[achieved]), np.asarray(obs[desired]))
        if point is None:
            return obs
        return dict(obs, **{desired: point.astype(np.asarray(obs[desired]).dtype)})
