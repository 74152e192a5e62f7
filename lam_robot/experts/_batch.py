"""Helpers shared by the experts for SB3-style batched/unbatched observations."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def as_batch(obs: Mapping[str, np.ndarray], key: str, dim: int) -> tuple[np.ndarray, bool]:
    """Return ``obs[key]`` as a float64 ``(n, dim)`` array and whether it was unbatched."""
    x = np.asarray(obs[key], dtype=np.float64)
    if x.shape[-1] != dim:
        raise ValueError(f"obs[{key!r}] has shape {x.shape}, expected last dim {dim}")
    single = x.ndim == 1
    return (x[None] if single else x.reshape(-1, dim)), single


def finish(action: np.ndarray, single: bool) -> np.ndarray:
    """Clip to the action box and drop the batch axis for unbatched input."""
    action = np.clip(action, -1.0, 1.0).astype(np.float32)
    return action[0] if single else action
