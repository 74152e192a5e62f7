"""Teleoperation: devices, the real-time session, replay, interventions and HG-DAgger.

The live keyboard runs for real, either in a pseudo-terminal (always) or on an X display under
Xvfb with the MuJoCo viewer (when Xvfb is installed); each live file must equal its replay.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from lam_robot.config import BCConfig
from lam_robot.data.dataset import DemoFile, PolicyEpisode, build_windows
from lam_robot.replay import replay_demos
from lam_robot.teleop.devices import parse_spacemouse_report
from lam_robot.teleop.events import InputEvent
from lam_robot.teleop.layouts import GAMEPAD, KEYBOARD, ActionMapper, InputState
from lam_robot.train.bc import train_bc
from tests.conftest import assert_clean_error, file_digest, hdf5_contents, run_cli

HEADER = {"lam_robot_events": 1, "device": "keyboard", "gain": 1.0, "dead_zone": 0.1}


def write_script(path: Path, rows: list[dict], header: dict = HEADER) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return path


def demo_contents(path: Path) -> dict:
    """Every dataset and attribute of every demo, for exact comparison."""
    return hdf5_contents(path, "data")


def assert_same_demos(a: Path, b: Path) -> None:
    left, right = demo_contents(a), demo_contents(b)
    assert left.keys() == right.keys()
    for key in left:
        if key.endswith("@attrs"):
            assert left[key] == right[key], key
        else:
            np.testing.assert_array_equal(left[key], right[key], err_msg=key)


# --- mapping -------------------------------------------------------------------------------------

def test_keyboard_state_holds_keys_toggles_gripper_and_sends_signals():
    state = InputState(KEYBOARD)
    signals = state.apply([InputEvent(0, 0.0, "w", 1.0), InputEvent(0, 0.0, "f", 1.0), InputEvent(0, 0.0, "enter", 1.0)])
    assert signals == ["start"]
    np.testing.assert_array_equal(state.motion(), [1.0, 0.0, -1.0])
    state.apply([InputEvent(1, 0.0, "space", 1.0), InputEvent(1, 0.0, "space", 0.0), InputEvent(1, 0.0, "w", 0.0)])
    assert state.gripper_closed
    np.testing.assert_array_equal(state.motion(), [0.0, 0.0, -1.0])
    # A held key repeated (terminal auto-repeat) is not a second press.
    assert state.apply([InputEvent(2, 0.0, "m", 1.0), InputEvent(2, 0.0, "m", 1.0)]) == ["success"]


def test_gamepad_dead_zone_and_gain():
    state = InputState(GAMEPAD, gain=0.5, dead_zone=0.2)
    state.apply([InputEvent(0, 0.0, "axis1", -0.1), InputEvent(0, 0.0, "axis0", 0.6)])
    motion = state.motion()
    assert motion[0] == 0.0  # inside the dead zone
    assert motion[1] == pytest.approx(-0.5)  # (0.6 - 0.2) / 0.8, stick right = -y
    mapper = ActionMapper(-np.ones(4), np.ones(4))
    action = mapper.action(state, {"observation": np.zeros(25)})
    np.testing.assert_allclose(action, [0.0, -0.25, 0.0, 1.0])


def test_navigation_maps_to_a_velocity_tracking_force():
    state = InputState(KEYBOARD)
    state.apply([InputEvent(0, 0.0, "w", 1.0)])
    mapper = ActionMapper(-np.ones(2), np.ones(2))
    still = mapper.action(state, {"observation": np.array([0.0, 0.0, 0.0, 0.0])})
    fast = mapper.action(state, {"observation": np.array([0.0, 0.0, 2.0, 0.0])})
    assert still[0] == 1.0 and fast[0] == 0.0  # pushes until the point moves at the commanded speed


def test_spacemouse_reports_parse_translation_and_buttons():
    report = [1, *(175).to_bytes(2, "little", signed=True), *(-350).to_bytes(2, "little", signed=True),
              *(0).to_bytes(2, "little", signed=True)]
    assert parse_spacemouse_report(report) == {"x": 0.5, "y": -1.0, "z": 0.0}
    assert parse_spacemouse_report([3, 0b10]) == {"button0": 0.0, "button1": 1.0}
    assert parse_spacemouse_report([]) == {}


# --- replay --------------------------------------------------------------------------------------

def test_replay_drives_a_complete_recording_headless(tmp_path):
    script = write_script(tmp_path / "events.jsonl", [
        {"episode": 0, "step": 0, "control": "f", "value": 1},
        {"episode": 0, "step": 4, "control": "f", "value": 0},
        {"episode": 0, "step": 5, "control": "space", "value": 1},
        {"episode": 0, "time": 0.3, "control": "space", "value": 0},  # time only: step 0.3 // 0.04 = 7
        {"episode": 1, "seed": 7},
        {"episode": 1, "step": 0, "control": "a", "value": 1},
        {"episode": 1, "step": 12, "control": "m", "value": 1},
    ])
    out = tmp_path / "demos.hdf5"
    result = run_cli("record", "--task", "grasp", "--source", f"replay:{script}", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "saved 2 episodes" in result.stdout
    with DemoFile(out, check_values=True) as demos:
        first, second = demos.episode("demo_0"), demos.episode("demo_1")
        events = demos.input_events()
    np.testing.assert_array_equal(first["actions"][0], [0, 0, -1, 1])
    np.testing.assert_array_equal(first["actions"][5], [0, 0, 0, -1])  # gripper closed from step 5 on
    assert len(first["actions"]) == 50 and first["attrs"]["source"] == "teleop"
    assert second["attrs"]["seed"] == 7 and second["attrs"]["success"] is True  # marked by hand
    assert len(second["actions"]) == 12
    assert "input events (replayable): keyboard 2" in run_cli("inspect", str(out)).stdout
    assert events is not None and list(events.events[0]["step"]) == [0, 4, 5, 7]
    # The session stored MuJoCo states: an exact replay reproduces both episodes (the second ended early).
    assert replay_demos(out).max_obs_diff <= 1e-6
    # Replaying the recorded file reproduces it exactly.
    again = tmp_path / "again.hdf5"
    assert run_cli("record", "--task", "grasp", "--source", f"replay:{out}", "--out", str(again)).returncode == 0
    assert_same_demos(out, again)


def test_live_terminal_keyboard_equals_its_replay(tmp_path):
    """A real-time session typed into a pseudo-terminal, then replayed from the file."""
    out = tmp_path / "live.hdf5"
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.Popen([sys.executable, "-m", "lam_robot", "record", "--task", "nav-umaze", "--source",
                             "keyboard", "--out", str(out), "--episodes", "2"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    prompts = _watch(proc.stderr, "to start")
    try:
        for keys in (["\n", "w", "w", "a", "n"], ["\n", "d", "x"], ["\n", "s", "m"]):
            assert prompts.wait_for_next(60), "no start prompt"
            for key in keys:
                os.write(master, key.encode())
                time.sleep(0.15)
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
        os.close(master)
    assert proc.returncode == 0, prompts.text
    assert b"saved 2 episodes" in stdout and b"1 discarded" in stdout
    with DemoFile(out) as demos:
        first = demos.episode("demo_0")
    assert np.abs(first["actions"]).max() > 0.5  # the keys moved the point
    replayed = tmp_path / "replayed.hdf5"
    result = run_cli("record", "--task", "nav-umaze", "--source", f"replay:{out}", "--out", str(replayed))
    assert result.returncode == 0, result.stderr
    assert_same_demos(out, replayed)


class _watch:
    """Reads a stream in a thread and counts occurrences of ``needle``."""

    def __init__(self, stream, needle: str) -> None:
        self.text, self.needle, self.seen = "", needle, 0
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for chunk in iter(lambda: stream.read1(256), b""):
            self.text += chunk.decode(errors="replace")

    def wait_for_next(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text.count(self.needle) > self.seen:
                self.seen += 1
                time.sleep(0.3)
                return True
            time.sleep(0.05)
        return False


@pytest.fixture()
def xvfb_display():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb); the X keyboard and viewer need a display")
    number = 90 + os.getpid() % 100
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket = Path(f"/tmp/.X11-unix/X{number}")
    for _ in range(100):
        if socket.exists():
            break
        time.sleep(0.1)
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


def _press(display: str, keys: list[tuple[str, float]]) -> None:
    """Real key events through the X server's XTest extension."""
    from Xlib import XK, X
    from Xlib import display as xdisplay
    from Xlib.ext import xtest

    conn = xdisplay.Display(display)
    try:
        for name, hold in keys:
            code = conn.keysym_to_keycode(XK.string_to_keysym(name))
            xtest.fake_input(conn, X.KeyPress, code)
            conn.sync()
            time.sleep(hold)
            xtest.fake_input(conn, X.KeyRelease, code)
            conn.sync()
            time.sleep(0.1)
    finally:
        conn.close()


def test_x11_keyboard_and_viewer_under_xvfb_equal_their_replay(tmp_path, xvfb_display):
    out = tmp_path / "x11.hdf5"
    env = dict(os.environ, DISPLAY=xvfb_display)
    proc = subprocess.Popen([sys.executable, "-m", "lam_robot", "record", "--task", "grasp", "--source", "keyboard",
                             "--out", str(out), "--episodes", "1", "--viewer"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    prompts = _watch(proc.stderr, "to start")
    try:
        assert prompts.wait_for_next(120), prompts.text
        _press(xvfb_display, [("Return", 0.05), ("f", 0.3), ("space", 0.05), ("r", 0.3), ("n", 0.05)])
        stdout, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, prompts.text
    with DemoFile(out) as demos:
        actions = demos.episode("demo_0")["actions"]
    assert (actions[:, 2] == -1).any() and (actions[:, 2] == 1).any() and (actions[:, 3] == -1).any()
    replayed = tmp_path / "replayed.hdf5"
    assert run_cli("record", "--task", "grasp", "--source", f"replay:{out}", "--out", str(replayed)).returncode == 0
    assert_same_demos(out, replayed)


# --- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    ("gamepad", "no gamepad found"),
    ("spacemouse", "no 3Dconnexion SpaceMouse found"),
    ("replay:/nonexistent/events.jsonl", "no such events file"),
])
def test_missing_devices_give_clear_errors(tmp_path, source, message):
    if source == "gamepad":
        pygame = pytest.importorskip("pygame")
        pygame.joystick.init()
        if pygame.joystick.get_count():
            pytest.skip("a gamepad is plugged in")
    result = run_cli("record", "--task", "grasp", "--source", source, "--out", str(tmp_path / "x.hdf5"))
    assert_clean_error(result, message)
    assert not (tmp_path / "x.hdf5").exists()


def test_unknown_intervention_device_is_refused(tmp_path):
    result = run_cli("record", "--task", "grasp", "--source", "expert", "--intervene", "joystick",
                     "--out", str(tmp_path / "x.hdf5"))
    assert_clean_error(result, "unknown input device 'joystick'")


def test_keyboard_without_display_or_terminal_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    result = subprocess.run([sys.executable, "-m", "lam_robot", "record", "--task", "grasp", "--source", "keyboard",
                             "--out", str(tmp_path / "x.hdf5")], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, env=env, timeout=120)
    assert_clean_error(result, "needs an interactive terminal")


def test_bad_event_files_and_event_less_demo_files(tmp_path, grasp_demos):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"device": "keyboard"}\n')
    out = tmp_path / "x.hdf5"
    assert_clean_error(run_cli("record", "--task", "grasp", "--source", f"replay:{bad}", "--out", str(out)),
                       "does not start with the header line")
    broken = write_script(tmp_path / "broken.jsonl", [{"episode": 0, "step": "soon", "control": "w", "value": 1}])
    assert_clean_error(run_cli("record", "--task", "grasp", "--source", f"replay:{broken}", "--out", str(out)),
                       "line 2: not an input event")
    digest = file_digest(grasp_demos)
    assert_clean_error(run_cli("record", "--task", "grasp", "--source", f"replay:{grasp_demos}", "--out", str(out)),
                       "holds no recorded input events")
    assert file_digest(grasp_demos) == digest and not out.exists()


# --- interventions and HG-DAgger -------------------------------------------------------------------

@pytest.fixture(scope="module")
def grasp_bc(grasp_demos, tmp_path_factory):
    out = tmp_path_factory.mktemp("teleop-bc") / "bc"
    train_bc(BCConfig(data=str(grasp_demos), out=str(out), epochs=2, context=4, d_model=16, n_layers=1, n_heads=2,
                      batch_size=64), progress=False)
    return out


def test_intervention_flags_and_actions_follow_the_takeover(tmp_path, grasp_bc):
    script = write_script(tmp_path / "takeover.jsonl", [
        {"episode": 0, "step": 5, "control": "t", "value": 1},
        {"episode": 0, "step": 5, "control": "r", "value": 1},
        {"episode": 0, "step": 6, "control": "t", "value": 0},
        {"episode": 0, "step": 15, "control": "t", "value": 1},
    ])
    out = tmp_path / "interventions.hdf5"
    result = run_cli("record", "--task", "grasp", "--source", f"policy:{grasp_bc}", "--intervene", f"replay:{script}",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "10 intervention steps" in result.stdout
    with DemoFile(out) as demos:
        episode = demos.episode("demo_0")
    flags = episode["interventions"]
    assert episode["attrs"]["source"] == "policy"
    np.testing.assert_array_equal(np.flatnonzero(flags), np.arange(5, 15))
    np.testing.assert_array_equal(episode["actions"][5:15], np.tile([0, 0, 1, 1], (10, 1)))
    assert not np.array_equal(episode["actions"][4], [0, 0, 1, 1])
    replayed = tmp_path / "replayed.hdf5"
    assert run_cli("record", "--task", "grasp", "--source", f"policy:{grasp_bc}", "--intervene", f"replay:{out}",
                   "--out", str(replayed)).returncode == 0
    assert_same_demos(out, replayed)


def test_windows_end_only_at_labelled_steps():
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    actions = np.ones((6, 1), np.float32)
    labels = np.array([0, 0, 1, 1, 0, 1], bool)
    windows = build_windows([PolicyEpisode(obs, actions, labels), PolicyEpisode(obs, actions, np.ones(6, bool))], 3)
    assert len(windows) == 3 + 6
    ends = windows.starts + 2
    assert windows.labels[ends].all() and windows.valid[ends].all()
    # The unlabelled policy steps stay in the history of later windows.
    assert windows.valid[windows.starts[0]: windows.starts[0] + 3].all()


def test_train_bc_refuses_policy_episodes_without_interventions(tmp_path, grasp_bc):
    """The human watched but never took over: nothing in the file is a label."""
    script = write_script(tmp_path / "watch.jsonl", [{"episode": 0, "step": 3, "control": "w", "value": 1}])
    out = tmp_path / "robot-only.hdf5"
    assert run_cli("record", "--task", "grasp", "--source", f"policy:{grasp_bc}", "--intervene", f"replay:{script}",
                   "--out", str(out)).returncode == 0
    result = run_cli("train-bc", "--data", str(out), "--out", str(tmp_path / "bc"), "--epochs", "1")
    assert_clean_error(result, "has no labelled steps")


def test_dagger_rounds_add_interventions_and_resume(tmp_path, grasp_bc):
    out = tmp_path / "dagger"
    common = ["dagger", "--policy", str(grasp_bc), "--task", "grasp", "--out", str(out), "--episodes-per-round", "2",
              "--epochs", "1", "--eval-episodes", "2", "--n-envs", "2"]
    result = run_cli(*common, "--rounds", "1")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["intervention_steps"] > 0 and rows[1]["episodes_in_data"] == rows[0]["episodes_in_data"] + 2
    assert (out / "round_1" / "model.safetensors").exists() and (out / "rounds.png").exists()
    result = run_cli(*common, "--rounds", "2")
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in rows] == [0, 1, 2]  # round 1 was kept, not redone
    assert run_cli("evaluate", "--policy", str(out / "round_2"), "--task", "grasp", "--episodes", "2").returncode == 0


def test_dagger_refuses_a_policy_of_another_task(tmp_path, grasp_bc):
    assert_clean_error(run_cli("dagger", "--policy", str(grasp_bc), "--task", "nav-umaze", "--out",
                               str(tmp_path / "d")), "was trained on task 'grasp'")


def test_input_events_without_their_device_are_rejected(tmp_path):
    script = write_script(tmp_path / "events.jsonl", [{"episode": 0, "step": 0, "control": "w", "value": 1}])
    out = tmp_path / "demos.hdf5"
    assert run_cli("record", "--task", "nav-umaze", "--source", f"replay:{script}", "--out", str(out)).returncode == 0
    with h5py.File(out, "a") as f:
        del f["data/demo_0"].attrs["input_device"]
    digest = file_digest(out)
    assert_clean_error(run_cli("inspect", str(out)), "has input_events but no 'input_device' attribute")
    assert file_digest(out) == digest
