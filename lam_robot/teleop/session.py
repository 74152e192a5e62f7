"""A teleoperation session: a device (or a replay of one) drives the robot, paced in real time,
and every kept episode is appended to the demo file together with its input events.

With a policy, the robot acts until the human takes over (the ``takeover`` control) and hands
back; each step's ``interventions`` flag is saved (HG-DAgger's data).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import gymnasium as gym
import numpy as np

from lam_robot.data.writer import DemoWriter
from lam_robot.errors import LamRobotError
from lam_robot.rollout import Episode, EpisodeBuffer, PhysicsState, Policy, sim_env
from lam_robot.tasks import TaskSpec
from lam_robot.teleop.devices import Device, Replay
from lam_robot.teleop.events import InputEvent, events_to_array
from lam_robot.teleop.layouts import ActionMapper, InputState

# Signals that end or drop an episode; ignored at step 0, where a live session's start button
# and a replay's first events arrive together.
ENDING = ("reset", "discard", "success")


@dataclasses.dataclass
class EpisodeLog:
    """What happened in one episode, kept or not: for status lines and the latency benchmark."""

    seed: int
    outcome: str
    """kept | discarded | quit | closed"""
    clock0: float
    """perf_counter() at the episode's reset; event and step times are relative to it."""
    step_times: list[float]
    events: list[InputEvent]


@dataclasses.dataclass
class SessionStats:
    """Counts over a session, and one EpisodeLog per episode run."""

    kept: int = 0
    successes: int = 0
    discarded: int = 0
    interventions: int = 0
    episodes: list[EpisodeLog] = dataclasses.field(default_factory=list)


def control_period(env: Any) -> float:
    """Seconds of simulated time per env step (gymnasium-robotics keeps it on the MuJoCo env)."""
    return float(sim_env(env).dt)  # PointMaze wraps a MuJoCo point env


class Viewer:
    """A passive mujoco.viewer window on the env's model, closed only after its render thread ends
    (freeing the model, or GLFW's exit handler, under a live render thread crashes)."""

    def __init__(self, env: Any) -> None:
        if not os.environ.get("DISPLAY"):
            raise LamRobotError(
                "the viewer needs a display (DISPLAY is not set); run on a desktop or under "
                "xvfb-run, or pass --viewer False"
            )
        import mujoco.viewer

        inner = sim_env(env)
        before = set(threading.enumerate())
        try:
            self.handle = mujoco.viewer.launch_passive(inner.model, inner.data, show_left_ui=False, show_right_ui=False)
        except Exception as exc:  # GLFW/OpenGL failures come as several exception types
            raise LamRobotError(
                f"cannot open the MuJoCo viewer ({exc}); check the display's OpenGL, or pass --viewer False"
            ) from exc
        self.threads = [t for t in threading.enumerate() if t not in before]

    def is_running(self) -> bool:
        """Whether the viewer window is still open."""
        return self.handle.is_running()

    def sync(self) -> None:
        """Show the current simulation state."""
        self.handle.sync()

    def close(self, timeout: float = 10.0) -> None:
        """Close the window and wait up to ``timeout`` seconds per render thread for it to end."""
        self.handle.close()
        for thread in self.threads:
            thread.join(timeout)


class TeleopSession:
    """Drives the task's env from a device (or a replay), episode by episode, and saves kept episodes."""

    def __init__(
        self,
        task: TaskSpec,
        device: Device,
        writer: DemoWriter,
        *,
        seed: int = 0,
        gain: float = 1.0,
        dead_zone: float = 0.1,
        policy: Policy | None = None,
        viewer: bool = False,
        realtime: bool | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        self.task = task
        self.device = device
        self.writer = writer
        self.seed = seed
        self.replay = isinstance(device, Replay)
        if isinstance(device, Replay):  # a replay maps inputs exactly as the recording did
            gain, dead_zone = device.script.gain, device.script.dead_zone
        self.gain, self.dead_zone = gain, dead_zone
        self.policy = policy
        self.viewer = viewer
        self.realtime = device.live if realtime is None else realtime
        self.status = status
        self.stats = SessionStats()

    def run(self, episodes: int) -> SessionStats:
        """Run until ``episodes`` are kept, the device quits, or a replay runs out; return the statistics."""
        env = self.task.make_env()
        action_space = cast(gym.spaces.Box, env.action_space)  # continuous control only
        mapper = ActionMapper(action_space.low, action_space.high)
        period = control_period(env)
        viewer = Viewer(env) if self.viewer else None
        index = 0
        try:
            while self.stats.kept < episodes:
                seed = self.seed + index
                if isinstance(self.device, Replay):
                    if not self.device.next_episode():
                        break
                    seed = self.device.seed if self.device.seed is not None else seed
                log = self._episode(env, mapper, period, seed, viewer)
                self.stats.episodes.append(log)
                index += 1
                if log.outcome in ("quit", "closed"):
                    break
        finally:
            if viewer is not None:
                viewer.close()
            env.close()
        return self.stats

    def _read_input(self, step: int, clock0: float, state: InputState, log: EpisodeLog) -> list[str]:
        """The device's events for ``step``, logged and applied to ``state``; returns their signals."""
        if isinstance(self.device, Replay):
            events = self.device.take(step)
        else:
            now = time.perf_counter() - clock0
            events = [InputEvent(step, now, control, value) for control, value in self.device.read(step)]
        log.events += events
        return state.apply(events)

    def _say(self, text: str) -> None:
        if self.status is not None:
            self.status(text)

    def _episode(self, env: Any, mapper: ActionMapper, period: float, seed: int, viewer: Any) -> EpisodeLog:
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        self.device.begin_episode()
        state = InputState(self.device.layout, self.gain, self.dead_zone)
        human = self.policy is None
        clock0 = time.perf_counter()
        log = EpisodeLog(seed, "kept", clock0, [], [])
        if self.device.live:
            self._say(f"episode {self.stats.kept + 1}: {self._start_hint()}")
            while True:  # waiting for start; these events count as step 0's
                signals = self._read_input(0, clock0, state, log)
                if "quit" in signals:
                    log.outcome = "quit"
                    return log
                human ^= "takeover" in signals and self.policy is not None
                if "start" in signals or "reset" in signals:
                    break
                if viewer is not None:  # show the new episode's start while waiting
                    if not viewer.is_running():
                        log.outcome = "closed"
                        return log
                    viewer.sync()
                time.sleep(period)
        buffer = EpisodeBuffer(PhysicsState.of(env), self.task.horizon)
        flags: list[bool] = []
        policy_state = None
        marked = False
        last_status = 0.0
        deadline = time.perf_counter()
        while True:
            tick = time.perf_counter()
            step = len(buffer.actions)
            signals = self._read_input(step, clock0, state, log)
            if "quit" in signals:
                log.outcome = "quit"
                return log
            human ^= "takeover" in signals and self.policy is not None
            if step > 0 and "discard" in signals:
                log.outcome = "discarded"
                self.stats.discarded += 1
                return log
            if step > 0 and ("reset" in signals or "success" in signals):
                marked = "success" in signals
                break
            if self.policy is not None:  # called every step so its history stays whole
                batch = {k: v[None] for k, v in obs.items()}
                robot, policy_state = self.policy.predict(
                    batch, state=policy_state, episode_start=np.array([step == 0]), deterministic=True
                )
                robot = np.clip(np.asarray(robot, dtype=np.float32).reshape(-1), mapper.low, mapper.high)
            action = mapper.action(state, obs) if human else robot
            log.step_times.append(time.perf_counter() - clock0)
            buffer.capture_state()
            next_obs, reward, terminated, truncated, info = env.step(action)
            buffer.obs.append(obs)
            buffer.next_obs.append(next_obs)
            buffer.actions.append(action)
            buffer.rewards.append(float(reward))
            buffer.terminated.append(bool(terminated))
            buffer.truncated.append(bool(truncated))
            flags.append(human)
            obs = next_obs
            if viewer is not None:
                if not viewer.is_running():
                    log.outcome = "closed"
                    return log
                viewer.sync()
            if terminated or truncated:
                break
            if self.device.live and tick - last_status > 0.25:
                last_status = tick
                self._say(
                    f"episode {self.stats.kept + 1} | {tick - clock0:5.1f} s | step {step + 1}/"
                    f"{self.task.horizon} | {'human' if human else 'robot'} in control | "
                    f"success: {'yes' if self.task.is_success(info) else 'no'}"
                )
            if self.realtime:  # absolute deadlines, so sleep overshoot does not add up; no bursts to catch up
                deadline = max(deadline + period, time.perf_counter() - period)
                time.sleep(max(0.0, deadline - time.perf_counter()))
        success = marked or self.task.is_success(info)
        episode = buffer.finish(success, seed, self.stats.kept, keep_frames=False)
        self._save(episode, flags, log)
        return log

    def _save(self, episode: Episode, flags: list[bool], log: EpisodeLog) -> None:
        interventions = np.asarray(flags, dtype=bool) if self.policy is not None else None
        self.writer.add(
            episode,
            source="teleop" if self.policy is None else "policy",
            interventions=interventions,
            input_events=events_to_array(log.events),
            input_device={"device": self.device.layout.name, "gain": self.gain, "dead_zone": self.dead_zone},
        )
        self.stats.kept += 1
        self.stats.successes += episode.success
        self.stats.interventions += int(interventions.sum()) if interventions is not None else 0
        self._say(
            f"saved episode {self.stats.kept} ({episode.length} steps, "
            f"{'success' if episode.success else 'no success'})"
        )

    def _start_hint(self) -> str:
        signals = self.device.layout.signals
        start = [c for c, s in signals.items() if s in ("start", "reset")]
        return f"press {' or '.join(start)} to start ({self.device.layout.help})"
