"""Scripted experts that generate demonstrations; SB3-style ``predict`` API."""

from __future__ import annotations

import gymnasium as gym

from lam_robot.experts.maze import MazeExpert
from lam_robot.experts.pick_place import PickAndPlaceExpert

Expert = PickAndPlaceExpert | MazeExpert

EXPERTS: dict[str, type[PickAndPlaceExpert] | type[MazeExpert]] = {
    "pick-and-place": PickAndPlaceExpert,
    "maze-waypoints": MazeExpert,
}


def make_expert(name: str, env: gym.Env) -> Expert:
    """Build the expert ``name`` for a (possibly wrapped) gymnasium env; ``""`` is a task without one."""
    if not name:
        raise ValueError("its spec names no built-in expert; pass your own with --source py:module:attr instead")
    try:
        cls = EXPERTS[name]
    except KeyError:
        raise ValueError(f"unknown expert {name!r}; choose one of {sorted(EXPERTS)}") from None
    return cls.from_env(env)


__all__ = ["EXPERTS", "Expert", "MazeExpert", "PickAndPlaceExpert", "make_expert"]
