"""From device input to the task's action.

A layout says, for one kind of device, which controls move the robot and which buttons mean
start / reset / discard / success / takeover / quit. ``InputState`` folds a device's events
into held values; ``ActionMapper`` turns them into an action of the task: a Cartesian delta
plus gripper for grasp, a planar velocity (tracked by a P-controller on the point's force)
for navigation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.teleop.events import InputEvent

SIGNALS = ("start", "reset", "discard", "success", "takeover", "quit")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one device's controls map to motion, the gripper and session signals."""

    name: str
    axes: dict[str, tuple[int, float]]
    """Analog control -> (motion axis 0/1/2 = x/y/z, sign)."""
    keys: dict[str, tuple[int, float]]
    """Digital control held down -> (motion axis, direction)."""
    gripper: str
    """Control whose press toggles the gripper."""
    signals: dict[str, str]
    """Control whose press sends a session signal -> the signal."""
    help: str


KEYBOARD = Layout(
    "keyboard",
    axes={},
    keys={"w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0)},
    gripper="space",
    signals={
        "enter": "start",
        "n": "reset",
        "x": "discard",
        "m": "success",
        "t": "takeover",
        "q": "quit",
        "esc": "quit",
    },
    help="w/s a/d move x/y, r/f up/down, space gripper; enter start, n save+next, x discard, m mark success, "
    "t take over/hand back, q quit",
)
GAMEPAD = Layout(
    "gamepad",
    axes={"axis1": (0, -1.0), "axis0": (1, -1.0), "axis4": (2, -1.0)},
    keys={},
    gripper="button0",
    signals={
        "button7": "start",
        "button2": "reset",
        "button1": "discard",
        "button3": "success",
        "button4": "takeover",
        "button6": "quit",
    },
    help="left stick x/y, right stick up/down, A gripper; Start start, X save+next, B discard, Y mark success, "
    "LB take over/hand back, Back quit",
)
SPACEMOUSE = Layout(
    "spacemouse",
    axes={"y": (0, -1.0), "x": (1, -1.0), "z": (2, -1.0)},
    keys={},
    gripper="button0",
    signals={"button1": "reset"},
    help="push the cap to move, left button gripper, right button start / save+next; Ctrl-C quits",
)
LAYOUTS = {layout.name: layout for layout in (KEYBOARD, GAMEPAD, SPACEMOUSE)}


class InputState:
    """Held values of one device, updated by its events; press edges become signals."""

    def __init__(self, layout: Layout, gain: float = 1.0, dead_zone: float = 0.1) -> None:
        self.layout = layout
        self.gain = gain
        self.dead_zone = dead_zone
        self.values: dict[str, float] = {}
        self.gripper_closed = False

    def apply(self, events: list[InputEvent]) -> list[str]:
        """Update the held values from ``events``; return the signals of controls newly pressed."""
        signals = []
        for event in events:
            was_down = self.values.get(event.control, 0.0) > 0.5
            self.values[event.control] = event.value
            if event.value > 0.5 and not was_down:
                if event.control == self.layout.gripper:
                    self.gripper_closed = not self.gripper_closed
                if event.control in self.layout.signals:
                    signals.append(self.layout.signals[event.control])
        return signals

    def motion(self) -> np.ndarray:
        """(3,) in [-1, 1] before gain: x, y, z."""
        move = np.zeros(3)
        for control, (axis, sign) in self.layout.axes.items():
            value = self.values.get(control, 0.0)
            if abs(value) > self.dead_zone:  # rescaled so motion starts from 0 at the dead-zone edge
                move[axis] += sign * np.sign(value) * (abs(value) - self.dead_zone) / (1.0 - self.dead_zone)
        for control, (axis, direction) in self.layout.keys.items():
            if self.values.get(control, 0.0) > 0.5:
                move[axis] += direction
        return np.clip(move, -1.0, 1.0)


class ActionMapper:
    """Held device input -> the task's action, inside the action bounds."""

    def __init__(
        self, action_low: np.ndarray, action_high: np.ndarray, max_speed: float = 2.0, velocity_gain: float = 2.0
    ) -> None:
        self.low, self.high = action_low, action_high
        if len(action_low) not in (2, 4):
            raise LamRobotError(
                f"teleoperation maps to 4-d (Cartesian delta + gripper) or 2-d (planar) actions, "
                f"not {len(action_low)}-d"
            )
        self.max_speed = max_speed
        self.velocity_gain = velocity_gain

    def action(self, state: InputState, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The action for the current input ``state``: a Cartesian delta and gripper, or a planar force."""
        move = state.gain * state.motion()
        if len(self.low) == 4:
            action = np.array([*move, -1.0 if state.gripper_closed else 1.0])
        else:  # PointMaze: obs[2:4] is the point's velocity; the action is a force
            target = self.max_speed * move[:2]
            action = self.velocity_gain * (target - np.asarray(obs["observation"])[2:4])
        return np.clip(action, self.low, self.high).astype(np.float32)
