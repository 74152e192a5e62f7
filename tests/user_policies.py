"""Policies a user might bring with --source py:module:attr (used by the recorder tests)."""

import numpy as np


def push_towards_goal(obs):
    """A plain callable: push straight at the goal (fails in most mazes, fine for recording)."""
    delta = obs["desired_goal"] - obs["observation"][:2]
    return np.clip(3.0 * delta, -1.0, 1.0)


class StillPolicy:
    """A class with SB3's predict, instantiated with no arguments."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.zeros(obs["observation"].shape[:-1] + (2,), dtype=np.float32), state
