"""Teleoperation latency: from a key reaching the machine to the action it changes being applied.

    python benchmarks/teleop_latency.py [--presses 40] [--tasks grasp nav-umaze]

A real-time session runs in this process on the terminal keyboard, fed through a pseudo-terminal;
a thread types keys at random moments and notes when each one was written. The latency of a
press is the time from that write to the env step whose action first used it. With a display
(DISPLAY set, e.g. under xvfb-run) the X keyboard is measured too, with keys sent through XTest.
Input is read once per control step, so the expected latency is about half a control period
plus the step's own work; the report gives it as a ratio to the period. Also reported: the
achieved control rate against the task's. Episodes are lengthened so one holds all presses.
Writes benchmarks/results/teleop_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pty
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.data.writer import DemoWriter  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.teleop.devices import TerminalKeyboard, X11Keyboard  # noqa: E402
from lam_robot.teleop.session import TeleopSession, control_period  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEYS = "wasd"


class Typist(threading.Thread):
    """Types ``presses`` keys at random gaps (longer than a terminal key's hold), then ends the episode."""

    def __init__(self, send, presses: int, gap: tuple[float, float], seed: int) -> None:
        super().__init__(daemon=True)
        self.send, self.presses, self.gap = send, presses, gap
        self.rng = random.Random(seed)
        self.sent: list[tuple[str, float]] = []

    def run(self) -> None:
        time.sleep(1.0)
        self.send("enter")
        for i in range(self.presses):
            time.sleep(self.rng.uniform(*self.gap))
            key = KEYS[i % len(KEYS)]
            self.sent.append((key, time.perf_counter()))
            self.send(key)
        time.sleep(self.gap[1])
        self.send("n")


def terminal_sender(fd: int):
    names = {"enter": "\n"}
    return lambda key: os.write(fd, names.get(key, key).encode())


def x11_sender():
    from Xlib import X, XK, display
    from Xlib.ext import xtest

    conn = display.Display()
    names = {"enter": "Return"}

    def send(key: str) -> None:
        code = conn.keysym_to_keycode(XK.string_to_keysym(names.get(key, key)))
        for kind in (X.KeyPress, X.KeyRelease):
            xtest.fake_input(conn, kind, code)
            conn.sync()
    return send


def measure(task_name: str, device_name: str, presses: int, seed: int) -> dict:
    task = load_task(task_name)
    env = task.make_env()
    period = control_period(env)
    env.close()
    hold = 8 * period  # the terminal keyboard's hold: a press inside it is not a new press
    gap = (max(0.15, 1.5 * hold), max(0.3, 2.5 * hold))
    task = dataclasses.replace(task, horizon=int((presses * gap[1] + 5) / period))
    if device_name == "terminal":
        master, slave = pty.openpty()
        device, send = TerminalKeyboard(fd=slave), terminal_sender(master)
    else:
        device, send = X11Keyboard(), x11_sender()
    typist = Typist(send, presses, gap, seed)
    with tempfile.TemporaryDirectory() as tmp, device:
        with DemoWriter(Path(tmp) / "latency.hdf5", task) as writer:
            session = TeleopSession(task, device, writer, realtime=True)
            typist.start()
            stats = session.run(1)
    log = stats.episodes[0]
    latencies = []
    pending = [e for e in log.events if e.value > 0.5 and e.control in KEYS]
    for key, sent in typist.sent:
        match = next(e for e in pending if e.control == key and log.clock0 + e.time >= sent - 1e-3)
        pending.remove(match)
        latencies.append(log.clock0 + log.step_times[match.step] - sent)
    intervals = [b - a for a, b in zip(log.step_times, log.step_times[1:])]
    ms = sorted(1000 * x for x in latencies)
    return {"task": task_name, "device": device_name, "presses": len(ms), "control_period_ms": 1000 * period,
            "latency_mean_ms": statistics.mean(ms), "latency_p50_ms": ms[len(ms) // 2],
            "latency_p95_ms": ms[int(0.95 * (len(ms) - 1))], "latency_max_ms": ms[-1],
            "latency_over_period": statistics.mean(ms) / (1000 * period),
            "target_hz": 1 / period, "achieved_hz": 1 / statistics.mean(intervals),
            "step_interval_sd_ms": 1000 * statistics.stdev(intervals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["grasp", "nav-umaze"])
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    devices = ["terminal"] + (["x11"] if os.environ.get("DISPLAY") else [])
    rows = [measure(task, device, args.presses, args.seed) for task in args.tasks for device in devices]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "teleop_latency.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| task | keyboard | presses | control period | latency mean | p50 | p95 | max | mean / period | "
             "control rate (target) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['device']} | {r['presses']} | {r['control_period_ms']:.0f} ms | "
                     f"{r['latency_mean_ms']:.1f} ms | {r['latency_p50_ms']:.1f} | {r['latency_p95_ms']:.1f} | "
                     f"{r['latency_max_ms']:.1f} | {r['latency_over_period']:.2f} | "
                     f"{r['achieved_hz']:.1f} Hz ({r['target_hz']:.0f}) |")
    table = "\n".join(lines) + "\n"
    (args.results / "teleop_latency.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
