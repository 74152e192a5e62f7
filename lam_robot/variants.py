"""Task variants: a spec's ``[variant]`` table, which changes the simulated world itself.

Two kinds, checked against the spec's env id:

- Fetch object tasks (pick-and-place, push): object mass, size and friction, the table's position
  and height, and the gripper's starting position. The MJCF model is edited through MuJoCo's
  ``MjSpec`` when the env is built (see ``lam_robot.fetch_variant``).
- PointMaze: a maze map given as rows of text, passed to the env as its ``maze_map``.

This module only parses and describes variants (no simulator import), so that loading a spec
stays cheap.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from lam_robot.errors import LamRobotError

# The Fetch object tasks' own world (gymnasium-robotics' pick_and_place.xml and push.xml).
FETCH_OBJECT_MASS = 2.0
FETCH_OBJECT_SIZE = 0.025
FETCH_OBJECT_FRICTION = (1.0, 0.005, 0.0001)
FETCH_VARIANT_ENV_IDS = ("FetchPickAndPlace-v4", "FetchPickAndPlaceDense-v4", "FetchPush-v4", "FetchPushDense-v4")
MAZE_ENV_PREFIX = "PointMaze_"

# Text maze cells -> PointMaze's maze_map codes (1 wall, 0 free, "g" goal, "r" reset, "c" either).
MAZE_CELLS: dict[str, int | str] = {
    "#": 1,
    "1": 1,
    ".": 0,
    "0": 0,
    "g": "g",
    "G": "g",
    "r": "r",
    "R": "r",
    "c": "c",
    "C": "c",
}
MAZE_HELP = "use # or 1 for a wall, . or 0 for a free cell, G goal, R start, C goal or start"


@dataclasses.dataclass(frozen=True)
class Variant:
    """A parsed ``[variant]`` table; every field left at None keeps the base task's world."""

    base: str = ""
    """The task this one varies (e.g. ``grasp``), shown by ``lam-robot tasks``."""
    object_mass: float | None = None
    """Fetch: the object's mass in kg (gymnasium-robotics: 2.0)."""
    object_size: float | None = None
    """Fetch: half the cube's edge in metres, MuJoCo's box size (gymnasium-robotics: 0.025)."""
    object_friction: tuple[float, float, float] | None = None
    """Fetch: the object's sliding friction, or [sliding, torsional, rolling] (MuJoCo: 1, 0.005, 0.0001)."""
    table_offset: tuple[float, float, float] | None = None
    """Fetch: [dx, dy, dz] in metres; x and y move the table, dz raises its top (it stays on the floor).
    The object starts on the moved table and table-top goals follow its height."""
    gripper_offset: tuple[float, float, float] | None = None
    """Fetch: [dx, dy, dz] in metres added to the gripper's starting position; object start positions
    and goals are sampled around the gripper, so they move with it."""
    maze: tuple[str, ...] | None = None
    """PointMaze: the maze as rows of text, walls all round (see ``MAZE_HELP``)."""

    def is_fetch(self) -> bool:
        """Whether this variant edits a Fetch world (and so needs the MjSpec-built env)."""
        return any(getattr(self, f) is not None for f in FETCH_FIELDS)

    def maze_map(self) -> list[list[int | str]]:
        """The maze rows as PointMaze's ``maze_map`` (empty when this variant gives no maze)."""
        return [[MAZE_CELLS[c] for c in row] for row in self.maze or ()]


FETCH_FIELDS = ("object_mass", "object_size", "object_friction", "table_offset", "gripper_offset")


def parse_variant(raw: Mapping[str, Any], env_id: str, env_kwargs: Mapping[str, Any], task: str) -> Variant:
    """Check a spec's ``[variant]`` table against its env; a one-line LamRobotError names the problem."""
    where = f"task {task!r}: [variant]"
    allowed = [f.name for f in dataclasses.fields(Variant)]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise LamRobotError(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    values: dict[str, Any] = {}
    if "base" in raw:
        if not isinstance(raw["base"], str):
            raise LamRobotError(f"{where}: 'base' must be a task name, got {raw['base']!r}")
        values["base"] = raw["base"]
    for key, lo, hi in (("object_mass", 0.01, 50.0), ("object_size", 0.01, 0.05)):
        if key in raw:
            values[key] = _number(raw[key], f"{where} {key}", lo, hi)
    if "object_friction" in raw:
        value = raw["object_friction"]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value, *FETCH_OBJECT_FRICTION[1:]]
        values["object_friction"] = _triple(value, f"{where} object_friction", 0.0, 10.0)
    for key in ("table_offset", "gripper_offset"):
        if key in raw:
            values[key] = _triple(raw[key], f"{where} {key}", -0.15, 0.15)
    if "maze" in raw:
        values["maze"] = _maze_rows(raw["maze"], where)
    variant = Variant(**values)

    if variant.is_fetch() and env_id not in FETCH_VARIANT_ENV_IDS:
        raise LamRobotError(
            f"{where}: {', '.join(f for f in FETCH_FIELDS if f in raw)} need a Fetch object env "
            f"({', '.join(FETCH_VARIANT_ENV_IDS)}), not {env_id!r}"
        )
    if variant.maze is not None:
        if not env_id.startswith(MAZE_ENV_PREFIX):
            raise LamRobotError(f"{where}: 'maze' needs a {MAZE_ENV_PREFIX}* env, not {env_id!r}")
        if "maze_map" in env_kwargs:
            raise LamRobotError(f"{where}: give the maze either as [variant] maze or as env_kwargs maze_map, not both")
    return variant


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise LamRobotError(f"{what} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _triple(value: Any, what: str, lo: float, hi: float) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise LamRobotError(f"{what} must be a list of 3 numbers, got {value!r}")
    x, y, z = (_number(v, what, lo, hi) for v in value)
    return (x, y, z)


def _maze_rows(value: Any, where: str) -> tuple[str, ...]:
    """Validate text maze rows: rectangular, known cells, walled all round, free cells connected."""
    if not isinstance(value, list) or not all(isinstance(row, str) for row in value):
        raise LamRobotError(f'{where} maze must be a list of text rows, e.g. ["#####", "#..G#", "#####"]')
    rows = tuple(value)
    if len(rows) < 3 or len(rows[0]) < 3:
        raise LamRobotError(f"{where} maze must be at least 3 rows of at least 3 cells")
    for i, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise LamRobotError(f"{where} maze row {i} {row!r} has {len(row)} cells, row 0 has {len(rows[0])}")
        bad = sorted(set(row) - set(MAZE_CELLS))
        if bad:
            raise LamRobotError(f"{where} maze row {i} {row!r} has unknown cell(s) {''.join(bad)!r}; {MAZE_HELP}")
    grid = [[MAZE_CELLS[c] != 1 for c in row] for row in rows]
    h, w = len(rows), len(rows[0])
    border = [(r, c) for r in range(h) for c in range(w) if r in (0, h - 1) or c in (0, w - 1)]
    if any(grid[r][c] for r, c in border):
        raise LamRobotError(f"{where} maze must have walls all round (its first and last rows and columns)")
    free = [(r, c) for r in range(h) for c in range(w) if grid[r][c]]
    if len(free) < 2:
        raise LamRobotError(f"{where} maze needs at least 2 free cells (a start and a goal)")
    # The point mass cannot leave its region, so a goal in another one could never be reached.
    seen = {free[0]}
    todo = deque([free[0]])
    while todo:
        r, c = todo.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if grid[nr][nc] and (nr, nc) not in seen:
                seen.add((nr, nc))
                todo.append((nr, nc))
    if len(seen) != len(free):
        cut = next(cell for cell in free if cell not in seen)
        raise LamRobotError(f"{where} maze has free cells that cannot be reached from the others, e.g. row {cut[0]}")
    return rows


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2g}x"


def _cm(offset: tuple[float, float, float]) -> str:
    return "(" + ", ".join(f"{v * 100:+.3g}" for v in offset) + ") cm"


def describe_variant(variant: Variant) -> str:
    """What a variant changes, in one short phrase, e.g. ``variant of grasp: object mass 4x, size 1.4x``."""
    obj = []
    if variant.object_mass is not None:
        obj.append(f"mass {_ratio(variant.object_mass, FETCH_OBJECT_MASS)}")
    if variant.object_size is not None:
        obj.append(f"size {_ratio(variant.object_size, FETCH_OBJECT_SIZE)}")
    if variant.object_friction is not None:
        obj.append(f"friction {_ratio(variant.object_friction[0], FETCH_OBJECT_FRICTION[0])}")
    changes = [f"object {', '.join(obj)}"] if obj else []
    if variant.table_offset is not None:
        changes.append(f"table moved {_cm(variant.table_offset)}")
    if variant.gripper_offset is not None:
        changes.append(f"gripper start moved {_cm(variant.gripper_offset)}")
    if variant.maze is not None:
        changes.append(f"its own {len(variant.maze)}x{len(variant.maze[0])} maze map")
    if not changes and not variant.base:
        return ""
    head = f"variant of {variant.base}" if variant.base else "variant"
    return f"{head}: {', '.join(changes)}" if changes else head


def maze_text(maze_map: Sequence[Sequence[Any]]) -> list[str]:
    """PointMaze ``maze_map`` -> text rows (the inverse of ``Variant.maze_map`` up to spelling)."""
    spell = {1: "#", 0: ".", "g": "G", "r": "R", "c": "C"}
    return ["".join(spell[cell] for cell in row) for row in maze_map]
