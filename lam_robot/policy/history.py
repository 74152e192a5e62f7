"""The one history + normalisation routine behind every Transformer policy's inference.

A history is each env's last K raw policy observations (oldest first, zeros before the episode
start) with a validity flag per row. The BC policy, the PPO observation wrapper and the PPO
policy's ``predict`` on raw env observations all build it with ``push``; the BC policy and the
PPO features extractor both normalise it with ``normalise``, so BC inference and the PPO actor
see the same numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch


class History(NamedTuple):
    """(n, K, obs_dim) raw policy observations and (n, K) validity; the BC policy's ``state``."""

    obs: np.ndarray
    valid: np.ndarray

    @classmethod
    def empty(cls, n: int, context: int, obs_dim: int) -> History:
        """n histories with no observation in them yet."""
        return cls(np.zeros((n, context, obs_dim), np.float32), np.zeros((n, context), bool))

    @classmethod
    def from_box(cls, box: np.ndarray) -> History:
        """From the (..., K, obs_dim + 1) layout of ``HistoryObservation`` (last column 1 on real rows)."""
        return cls(box[..., :-1], box[..., -1] > 0.5)

    def to_box(self) -> np.ndarray:
        """The (n, K, obs_dim + 1) layout that ``HistoryObservation`` and the PPO policy take."""
        return np.concatenate([self.obs, self.valid[..., None].astype(np.float32)], axis=-1)

    def push(self, flat: np.ndarray, episode_start: np.ndarray | None = None) -> History:
        """A new history with (n, obs_dim) ``flat`` appended; rows where an episode starts are cleared first."""
        obs, valid = np.roll(self.obs, -1, axis=1), np.roll(self.valid, -1, axis=1)
        if episode_start is not None:
            restart = np.asarray(episode_start, bool).reshape(-1)
            obs[restart] = 0.0
            valid[restart] = False
        obs[:, -1] = flat
        valid[:, -1] = True
        return History(obs, valid)


class HistoryKeeper:
    """Per-env histories across ``predict`` calls, for callers that do not pass ``state`` back.

    An explicit ``state`` (what the previous call returned) is used as given and leaves the kept
    history alone; ``state=None`` (SB3's "no recurrent state given") continues the kept one. A new
    batch size starts fresh histories, and ``episode_start`` clears the rows it flags.
    """

    def __init__(self, context: int, obs_dim: int) -> None:
        self.context = context
        self.obs_dim = obs_dim
        self.kept: History | None = None

    def reset(self) -> None:
        """Forget the kept histories (the next call starts every env afresh)."""
        self.kept = None

    def step(self, flat: np.ndarray, state: Any, episode_start: np.ndarray | None) -> History:
        """Append (n, obs_dim) ``flat`` to ``state`` (or to the kept history when ``state`` is None)."""
        own = state is None
        previous = self.kept if own else state
        n = flat.shape[0]
        if (
            not isinstance(previous, tuple)
            or len(previous) != 2
            or np.shape(previous[0]) != (n, self.context, self.obs_dim)
        ):
            previous = History.empty(n, self.context, self.obs_dim)
        history = History(*previous).push(flat, episode_start)
        if own:
            self.kept = history
        return history


def normalise(obs: torch.Tensor, valid: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, K, obs_dim) raw histories -> normalised, with padding rows zero (as in BC training windows)."""
    return (obs - mean) / std * valid[..., None]
