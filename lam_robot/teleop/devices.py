"""Input devices: each reads its hardware and returns ``(control, value)`` changes since the last poll.

Every device imports its library only when opened, and a missing library, device or display
raises a ``LamRobotError`` naming what is needed.
"""

from __future__ import annotations

import os
import queue
import select
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lam_robot.errors import LamRobotError
from lam_robot.teleop.events import EventScript, InputEvent, load_event_script, script_from_recorded
from lam_robot.teleop.layouts import GAMEPAD, KEYBOARD, SPACEMOUSE, Layout

if TYPE_CHECKING:  # each device imports its library only when opened
    import pygame
    from pynput import keyboard

DEVICE_HELP = "keyboard, gamepad, spacemouse, or replay:FILE (an events .jsonl, or a demo .hdf5 to replay its episodes)"


class Device:
    """A live device: ``read()`` returns the input changes since the last call, never blocks."""

    layout: Layout
    live = True

    def open(self) -> None:
        """Check for and grab the hardware; raise LamRobotError naming what is missing."""

    def close(self) -> None:
        """Release the hardware (and restore anything open() changed)."""

    def begin_episode(self) -> None:
        """Forget per-episode state (steps restart at 0)."""

    def read(self, step: int) -> list[tuple[str, float]]:
        """The ``(control, value)`` changes since the last call; ``step`` is the session's step in the episode."""
        raise NotImplementedError

    def __enter__(self) -> Device:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key_name(char: str) -> str | None:
    special = {"\n": "enter", "\r": "enter", " ": "space", "\x1b": "esc", "\x7f": "backspace", "\x08": "backspace"}
    if char in special:
        return special[char]
    return char.lower() if char.isprintable() else None


class X11Keyboard(Device):
    """Key presses and releases from the X display (pynput), so held keys keep moving the robot."""

    layout = KEYBOARD

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._listener: keyboard.Listener | None = None

    def open(self) -> None:
        """Start listening to the X display's key presses and releases."""
        if not os.environ.get("DISPLAY"):
            raise LamRobotError(
                "the keyboard needs an X display (DISPLAY is not set) or an interactive terminal; "
                "run it on a desktop, under xvfb-run, or from a terminal"
            )
        try:
            from pynput import keyboard
        except ImportError as exc:
            raise LamRobotError(
                f"the X keyboard cannot start ({exc}); check that the display {os.environ['DISPLAY']} "
                "is reachable and that pynput is installed (pip install 'lam-robot[teleop]')"
            ) from exc

        def name(key) -> str | None:
            char = getattr(key, "char", None)
            if char is not None:
                return _key_name(char)
            return getattr(key, "name", None)

        def on(value: float):
            def handler(key) -> None:
                control = name(key)
                if control is not None:
                    self._events.put((control, value))

            return handler

        listener = keyboard.Listener(on_press=on(1.0), on_release=on(0.0))
        listener.start()
        listener.wait()
        self._listener = listener

    def close(self) -> None:
        """Stop the key listener."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def read(self, step: int) -> list[tuple[str, float]]:
        """The key presses (1.0) and releases (0.0) since the last call."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out


class TerminalKeyboard(Device):
    """Keys typed into a terminal (works over ssh, no display). A terminal reports presses only, so
    a key counts as held for ``hold_steps`` steps after its last repeat, then a release is emitted."""

    layout = KEYBOARD

    def __init__(self, fd: int | None = None, hold_steps: int = 8) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.hold_steps = hold_steps
        self._held: dict[str, int] = {}
        self._saved_mode: list[Any] | None = None  # termios attributes to restore on close

    def open(self) -> None:
        """Put the terminal in cbreak mode (keys arrive unbuffered); remember its old mode."""
        import termios
        import tty

        if not os.isatty(self.fd):
            raise LamRobotError(
                "the keyboard needs an interactive terminal (standard input is not one) or an X "
                "display; run from a terminal or use --source replay:FILE"
            )
        self._saved_mode = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def close(self) -> None:
        """Restore the terminal's mode."""
        if self._saved_mode is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_mode)
            self._saved_mode = None

    def begin_episode(self) -> None:
        """Forget held keys."""
        self._held.clear()

    def read(self, step: int) -> list[tuple[str, float]]:
        """Presses of newly typed keys, and releases of keys not repeated for ``hold_steps`` steps."""
        out = []
        for held, until in list(self._held.items()):
            if step >= until:
                del self._held[held]
                out.append((held, 0.0))
        while select.select([self.fd], [], [], 0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:
                break
            for char in chunk.decode(errors="ignore"):
                control = _key_name(char)
                if control is None:
                    continue
                if control not in self._held:
                    out.append((control, 1.0))
                self._held[control] = step + self.hold_steps
        return out


def open_keyboard() -> Device:
    """The X keyboard when a display exists (true key holds), otherwise the terminal."""
    return X11Keyboard() if os.environ.get("DISPLAY") else TerminalKeyboard()


class Gamepad(Device):
    """The first joystick pygame finds (SDL's mapping: Xbox-style axes and buttons)."""

    layout = GAMEPAD

    def __init__(self) -> None:
        self._stick: pygame.joystick.JoystickType | None = None
        self._last: dict[str, float] = {}

    def open(self) -> None:
        """Initialise pygame and take the first joystick."""
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # events need a video driver, not a window
        try:
            import pygame
        except ImportError as exc:
            raise LamRobotError(f"the gamepad device needs pygame ({exc}); pip install 'lam-robot[teleop]'") from exc
        pygame.display.init()
        pygame.joystick.init()
        if pygame.joystick.get_count() == 0:
            pygame.quit()
            raise LamRobotError(
                "no gamepad found (pygame sees no joystick); plug one in, check its permissions "
                "(/dev/input/js*), or use --source keyboard"
            )
        stick = pygame.joystick.Joystick(0)
        stick.init()
        self._stick = stick

    def close(self) -> None:
        """Release the joystick and shut pygame down."""
        if self._stick is not None:
            import pygame

            pygame.quit()
            self._stick = None

    def read(self, step: int) -> list[tuple[str, float]]:
        """Axes and buttons whose value changed since the last call."""
        import pygame

        stick = self._stick
        assert stick is not None, "open() the gamepad before reading it"
        pygame.event.pump()
        current = {f"axis{i}": round(stick.get_axis(i), 3) for i in range(stick.get_numaxes())}
        current |= {f"button{i}": float(stick.get_button(i)) for i in range(stick.get_numbuttons())}
        return _changes(self._last, current)


def _changes(last: dict[str, float], current: dict[str, float]) -> list[tuple[str, float]]:
    out = [(k, v) for k, v in current.items() if last.get(k, 0.0) != v]
    last.update(current)
    return out


SPACEMOUSE_VENDORS = (0x046D, 0x256F)  # Logitech-era and current 3Dconnexion vendor ids
SPACEMOUSE_RANGE = 350.0  # full deflection in HID counts


def parse_spacemouse_report(report: bytes | list[int]) -> dict[str, float]:
    """One HID input report -> controls it sets. Report 1: translation (int16 x, y, z; newer models
    append rotation), report 2: rotation, report 3: button bitmask."""
    data = bytes(report)
    if not data:
        return {}

    def axes(names: tuple[str, ...], payload: bytes) -> dict[str, float]:
        out = {}
        for i, name in enumerate(names):
            if len(payload) >= 2 * i + 2:
                raw = int.from_bytes(payload[2 * i : 2 * i + 2], "little", signed=True)
                out[name] = round(max(-1.0, min(1.0, raw / SPACEMOUSE_RANGE)), 3)
        return out

    if data[0] == 1:
        return axes(("x", "y", "z", "roll", "pitch", "yaw"), data[1:13])
    if data[0] == 2:
        return axes(("roll", "pitch", "yaw"), data[1:7])
    if data[0] == 3 and len(data) > 1:
        return {f"button{i}": float(bool(data[1] >> i & 1)) for i in range(2)}
    return {}


class SpaceMouse(Device):
    """A 3Dconnexion SpaceMouse read over HID (hidapi)."""

    layout = SPACEMOUSE

    def __init__(self) -> None:
        self._dev: Any = None  # a hid.device once open (hidapi has no type information)
        self._last: dict[str, float] = {}

    def open(self) -> None:
        """Open the first 3Dconnexion device over HID, non-blocking."""
        try:
            import hid
        except ImportError as exc:
            raise LamRobotError(f"the spacemouse device needs hidapi ({exc}); pip install 'lam-robot[teleop]'") from exc
        found = [d for d in hid.enumerate() if d["vendor_id"] in SPACEMOUSE_VENDORS]
        if not found:
            raise LamRobotError(
                "no 3Dconnexion SpaceMouse found over HID; plug it in and give your user access to "
                "/dev/hidraw* (a udev rule), or use --source keyboard"
            )
        self._dev = hid.device()
        try:
            self._dev.open_path(found[0]["path"])
        except OSError as exc:
            raise LamRobotError(f"cannot open the SpaceMouse ({exc}); check the permissions of /dev/hidraw*") from exc
        self._dev.set_nonblocking(True)

    def close(self) -> None:
        """Close the HID device."""
        if self._dev is not None:
            self._dev.close()
            self._dev = None

    def read(self, step: int) -> list[tuple[str, float]]:
        """Axes and buttons whose value changed in the HID reports since the last call."""
        current: dict[str, float] = {}
        while report := self._dev.read(16):
            current |= parse_spacemouse_report(report)
        return _changes(self._last, current)


class Replay(Device):
    """Plays back recorded events: the events of step ``s`` are returned when the session polls step ``s``."""

    live = False

    def __init__(self, script: EventScript, layout: Layout) -> None:
        self.script = script
        self.layout = layout
        self.episode = -1
        self._pending: list[InputEvent] = []

    def next_episode(self) -> bool:
        """Move to the script's next episode; False when none is left."""
        self.episode += 1
        if self.episode >= len(self.script.episodes):
            return False
        self._pending = list(self.script.episodes[self.episode])
        return True

    @property
    def seed(self) -> int | None:
        """The recorded reset seed of the current episode, if the script has one."""
        return self.script.seeds[self.episode]

    def take(self, step: int) -> list[InputEvent]:
        """The pending events due by ``step``, removed from the queue."""
        due = [e for e in self._pending if e.step <= step]
        self._pending = self._pending[len(due) :]
        return due


LIVE_DEVICES = {"keyboard": open_keyboard, "gamepad": Gamepad, "spacemouse": SpaceMouse}


def make_device(spec: str, control_period: float) -> Device:
    """``keyboard``, ``gamepad``, ``spacemouse`` or ``replay:FILE``."""
    from lam_robot.teleop.layouts import LAYOUTS

    if spec in LIVE_DEVICES:
        return LIVE_DEVICES[spec]()
    if spec.startswith("replay:"):
        path = Path(spec[len("replay:") :])
        script = _demo_file_script(path) if path.suffix in (".hdf5", ".h5") else load_event_script(path, control_period)
        if script.device not in LAYOUTS:
            raise LamRobotError(f"{path}: unknown device {script.device!r}; expected one of {sorted(LAYOUTS)}")
        return Replay(script, LAYOUTS[script.device])
    raise LamRobotError(f"unknown input device {spec!r}; use {DEVICE_HELP}")


def _demo_file_script(path: Path) -> EventScript:
    from lam_robot.data.dataset import DemoFile

    with DemoFile(path) as demos:
        recorded = demos.input_events()
    if recorded is None:
        raise LamRobotError(
            f"{path} holds no recorded input events (only teleoperated episodes and "
            "interventions carry them); record with --source keyboard|gamepad|spacemouse"
        )
    return script_from_recorded(recorded)
