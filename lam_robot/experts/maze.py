"""Waypoint expert for any PointMaze layout: grid shortest paths plus a PD controller.

At construction the maze grid is turned into an all-pairs next-hop table
(8-connected, diagonal moves only where both side cells are free, so the
straight segment between two consecutive cells never crosses a wall).  At
run time the expert looks up its own cell and the goal's cell, steers with a
PD law toward the next cell (or the goal itself once next to it), and keeps
no state, so one instance serves any batch of envs with the same map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from lam_robot.experts._batch import as_batch, finish

# (drow, dcol, cost) of the 8 grid moves.
_MOVES = [(-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0)] + [
    (dr, dc, float(np.sqrt(2.0))) for dr in (-1, 1) for dc in (-1, 1)
]


def free_grid(maze_map: Sequence[Sequence[Any]]) -> np.ndarray:
    """Boolean (rows, cols) grid; every cell that is not the wall code ``1`` is free."""
    return np.array([[cell != 1 for cell in row] for row in maze_map], dtype=bool)


def _shift(a: np.ndarray, dr: int, dc: int, fill: Any) -> np.ndarray:
    """``out[..., r, c] = a[..., r + dr, c + dc]``, ``fill`` outside the grid."""
    out = np.full_like(a, fill)
    h, w = a.shape[-2:]
    src_r = slice(max(dr, 0), h + min(dr, 0))
    dst_r = slice(max(-dr, 0), h + min(-dr, 0))
    src_c = slice(max(dc, 0), w + min(dc, 0))
    dst_c = slice(max(-dc, 0), w + min(-dc, 0))
    out[..., dst_r, dst_c] = a[..., src_r, src_c]
    return out


def _allowed_moves(free: np.ndarray) -> list[np.ndarray]:
    """Which moves are allowed out of each cell (diagonals need both sides free)."""
    allowed = []
    for dr, dc, _ in _MOVES:
        ok = _shift(free, dr, dc, False)
        if dr and dc:
            ok &= _shift(free, dr, 0, False) & _shift(free, 0, dc, False)
        allowed.append(ok)
    return allowed


def grid_distances(free: np.ndarray) -> np.ndarray:
    """``dist[g, r, c]``: shortest 8-connected path length in cells from (r, c) to goal cell g."""
    h, w = free.shape
    n = h * w
    allowed = _allowed_moves(free)
    # Bellman-Ford relaxation for all goals at once.
    dist = np.full((n, h, w), np.inf)
    goals = np.flatnonzero(free.ravel())
    dist.reshape(n, n)[goals, goals] = 0.0
    while True:
        best = dist
        for (dr, dc, cost), ok in zip(_MOVES, allowed):
            cand = np.where(ok & free, _shift(dist, dr, dc, np.inf) + cost, np.inf)
            best = np.minimum(best, cand)
        if np.array_equal(best, dist):
            return dist
        dist = best


def next_hop_table(free: np.ndarray, dist: np.ndarray | None = None) -> np.ndarray:
    """``hop[g, c]``: flat index of the cell to head to from cell ``c`` toward goal cell ``g``.

    Wall cells step to their best free side neighbour; unreachable cells and
    the goal cell map to themselves.
    """
    h, w = free.shape
    n = h * w
    allowed = _allowed_moves(free)
    dist = grid_distances(free) if dist is None else dist

    # Next hop = the neighbour minimising cost + remaining distance.
    idx = np.arange(n).reshape(h, w)
    hop = np.broadcast_to(idx, (n, h, w)).copy()
    best = np.where(dist == 0.0, 0.0, np.inf)  # only the goal cell keeps itself
    for (dr, dc, cost), ok in zip(_MOVES, allowed):
        # From a wall cell (entered only by contact penetration) step straight out.
        if not (dr and dc):
            ok = ok | (~free & _shift(free, dr, dc, False))
        cand = np.where(ok, _shift(dist, dr, dc, np.inf) + cost, np.inf)
        better = cand < best - 1e-9
        hop = np.where(better, _shift(idx, dr, dc, 0), hop)
        best = np.where(better, cand, best)
    return hop.reshape(n, n)


class MazeExpert:
    """Shortest-path waypoint follower with a saturated PD controller.

    ``kp``/``kd`` act on metres and m/s; the env applies ``100 * action`` N to a
    4.19 kg ball at 100 Hz (about 24 m/s^2 at full action, speed clipped to 5 m/s).
    """

    def __init__(
        self,
        maze_map: Sequence[Sequence[Any]],
        maze_size_scaling: float = 1.0,
        kp: float = 10.0,
        kd: float = 1.0,
    ) -> None:
        self.free = free_grid(maze_map)
        self.rows, self.cols = self.free.shape
        self.scale = float(maze_size_scaling)
        # Same conventions as gymnasium_robotics Maze.cell_rowcol_to_xy.
        self.x_center = self.cols / 2 * self.scale
        self.y_center = self.rows / 2 * self.scale
        self.kp = kp
        self.kd = kd
        self.dist = grid_distances(self.free).reshape(self.rows * self.cols, -1)
        self.hop = next_hop_table(self.free, self.dist.reshape(-1, self.rows, self.cols))
        r, c = np.divmod(np.arange(self.rows * self.cols), self.cols)
        self.centers = np.stack(
            [(c + 0.5) * self.scale - self.x_center, self.y_center - (r + 0.5) * self.scale],
            axis=1,
        )

    @classmethod
    def from_env(cls, env: gym.Env, **kwargs: float) -> MazeExpert:
        """Read the maze map and scaling from a (wrapped) PointMaze/maze env."""
        maze = getattr(env.unwrapped, "maze", None)
        if maze is None:
            raise ValueError(f"{env.unwrapped!r} has no .maze; not a maze env")
        return cls(maze.maze_map, maze.maze_size_scaling, **kwargs)

    def cell_index(self, xy: np.ndarray) -> np.ndarray:
        """Flat cell index of (n, 2) positions, clipped to the grid."""
        row = np.floor((self.y_center - xy[:, 1]) / self.scale).astype(np.intp)
        col = np.floor((xy[:, 0] + self.x_center) / self.scale).astype(np.intp)
        return np.clip(row, 0, self.rows - 1) * self.cols + np.clip(col, 0, self.cols - 1)

    def path_length(self, xy: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """(n,) distance in metres from ``xy`` to ``goal`` along the grid's shortest path (the straight
        line once the goal is in this or the next cell)."""
        g_cell = self.cell_index(goal)
        nxt = self.hop[g_cell, self.cell_index(xy)]
        direct = nxt == g_cell
        via = np.linalg.norm(xy - self.centers[nxt], axis=1) + self.scale * self.dist[g_cell, nxt]
        via = np.where(np.isfinite(via), via, 0.0)
        goal_offset = np.linalg.norm(goal - self.centers[g_cell], axis=1)
        return np.where(direct, np.linalg.norm(xy - goal, axis=1), via + goal_offset)

    def predict(
        self,
        obs: Mapping[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style predict; stateless, so ``state`` is passed through untouched."""
        o, single = as_batch(obs, "observation", 4)
        goal, _ = as_batch(obs, "desired_goal", 2)
        pos, vel = o[:, :2], o[:, 2:]
        g_cell = self.cell_index(goal)
        nxt = self.hop[g_cell, self.cell_index(pos)]
        # Head for the goal point itself once it is in this or the next cell.
        target = np.where((nxt == g_cell)[:, None], goal, self.centers[nxt])
        action = self.kp * (target - pos) - self.kd * vel
        return finish(action, single), state

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for one observation (a plain ``obs -> action`` callable)."""
        return self.predict(obs)[0]
