"""Timed input events: what a device produced, and at which env step the session applied it.

Replay goes by ``step``, so a replayed episode repeats the recorded one exactly, however fast
it runs; ``time`` (seconds since the episode began) is kept for latency and for hand-written
scripts, which may give ``time`` alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from lam_robot.data.dataset import RecordedInputs
from lam_robot.errors import LamRobotError

EVENTS_FORMAT = 1
EVENT_DTYPE = np.dtype([("step", "<i4"), ("time", "<f8"), ("control", "S24"), ("value", "<f4")])


@dataclasses.dataclass(frozen=True)
class InputEvent:
    """One timed input change of a device control."""

    step: int
    """The env step before whose action the event took effect."""
    time: float
    """Seconds since the episode began when the input arrived."""
    control: str
    """Device-specific name: a key (``w``, ``enter``), ``axis0``, ``button3``, ``x``."""
    value: float
    """1/0 for press/release, the position for an axis."""


def events_to_array(events: list[InputEvent]) -> np.ndarray:
    """Events -> a structured array of EVENT_DTYPE (how a demo file stores them)."""
    return np.array([(e.step, e.time, e.control.encode(), e.value) for e in events], dtype=EVENT_DTYPE)


def events_from_array(array: np.ndarray) -> list[InputEvent]:
    """A structured array of EVENT_DTYPE -> events."""
    return [InputEvent(int(r["step"]), float(r["time"]), r["control"].decode(), float(r["value"])) for r in array]


@dataclasses.dataclass
class EventScript:
    """A file of timed input events: which device layout produced them, and the events per episode."""

    device: str
    gain: float
    dead_zone: float
    episodes: list[list[InputEvent]]
    seeds: list[int | None]
    """Reset seed per episode; None: the session's --seed plus the episode's position."""


def script_from_recorded(recorded: RecordedInputs) -> EventScript:
    """A demo file's recorded input events as a replayable script."""
    device = recorded.device
    return EventScript(
        device["device"],
        float(device["gain"]),
        float(device["dead_zone"]),
        [events_from_array(a) for a in recorded.events],
        list(recorded.seeds),
    )


def load_event_script(path: str | Path, control_period: float) -> EventScript:
    """Read a JSON-lines events file; events with ``time`` but no ``step`` get ``step = time // period``."""
    path = Path(path)
    if not path.is_file():
        raise LamRobotError(f"{path}: no such events file; give a .jsonl file of input events")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError) as exc:
        raise LamRobotError(f"{path} is not a JSON-lines events file ({exc})") from exc
    if not rows or not isinstance(rows[0], dict) or rows[0].get("lam_robot_events") != EVENTS_FORMAT:
        raise LamRobotError(
            f"{path} does not start with the header line "
            f'{{"lam_robot_events": {EVENTS_FORMAT}, "device": ...}}; see the README, section Teleoperation'
        )
    header = rows[0]
    episodes: dict[int, list[InputEvent]] = {}
    seeds: dict[int, int | None] = {}
    for number, row in enumerate(rows[1:], start=2):
        try:
            index = int(row.get("episode", 0))
            if "control" not in row:
                seeds[index] = None if row.get("seed") is None else int(row["seed"])
                episodes.setdefault(index, [])
                continue
            time = float(row.get("time", 0.0))
            step = int(row["step"]) if "step" in row else int(time // control_period)
            episodes.setdefault(index, []).append(InputEvent(step, time, str(row["control"]), float(row["value"])))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise LamRobotError(
                f"{path} line {number}: not an input event ({exc}); "
                'expected {"episode": 0, "step": 3, "control": "w", "value": 1}'
            ) from exc
    if not episodes:
        raise LamRobotError(f"{path} holds no input events")
    order = sorted(episodes)
    for events in episodes.values():
        events.sort(key=lambda e: e.step)  # stable: same-step events keep their file order
    try:
        return EventScript(
            str(header["device"]),
            float(header.get("gain", 1.0)),
            float(header.get("dead_zone", 0.1)),
            [episodes[i] for i in order],
            [seeds.get(i) for i in order],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LamRobotError(f"{path}: bad header line ({exc})") from exc
