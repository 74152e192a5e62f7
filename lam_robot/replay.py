"""Exact replay: reset a recorded demo's env, set its first MuJoCo state, re-apply its actions.

The recorder stores the full physics state before every step (``states``). Replay resets the env with
the demo's seed (which restores what lives in Python, such as a maze's goal), sets the first state,
steps the recorded actions and compares every observation with the recorded one. On the shipped tasks
the simulation is deterministic, so the largest difference is 0 and anything above ``TOLERANCE``
means the file, the simulator or the task changed since recording.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from lam_robot.data import schema
from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.evaluation import write_video
from lam_robot.rollout import PhysicsState
from lam_robot.tasks import TaskSpec, load_task

TOLERANCE = 1e-6


@dataclasses.dataclass
class DemoReplay:
    """How closely one demo was reproduced."""

    name: str
    steps: int
    max_obs_diff: float
    """Largest absolute difference between a replayed and the recorded observation (any key, any step)."""
    max_state_diff: float
    """Largest absolute difference between the replayed and the recorded physics state before a step."""


@dataclasses.dataclass
class ReplayResult:
    """The replay of one file's demos, and whether it stayed within ``tolerance``."""

    file: str
    task: str
    demos: list[DemoReplay]
    tolerance: float
    video: str | None = None

    @property
    def max_obs_diff(self) -> float:
        """Largest observation difference over all replayed demos."""
        return max(d.max_obs_diff for d in self.demos)

    @property
    def passed(self) -> bool:
        """Whether every observation was reproduced within the tolerance."""
        return self.max_obs_diff <= self.tolerance

    def require_pass(self) -> None:
        """LamRobotError, naming the worst demo, unless the replay reproduced the recording."""
        if not self.passed:
            worst = max(self.demos, key=lambda d: d.max_obs_diff)
            raise LamRobotError(
                f"{self.file}: replay differs from the recording by up to {worst.max_obs_diff:.3g} "
                f"({worst.name}; tolerance {self.tolerance:g}); the simulator, the task or the file changed since "
                "recording"
            )

    def to_dict(self) -> dict[str, Any]:
        """The result as plain values (what ``--json`` would print)."""
        return dataclasses.asdict(self) | {"max_obs_diff": self.max_obs_diff, "passed": self.passed}


def replay_demos(
    path: str | Path,
    demo: int | None = None,
    video: Path | None = None,
    task: str | TaskSpec | None = None,
    tolerance: float = TOLERANCE,
) -> ReplayResult:
    """Replay demo ``demo`` (its index; default: every demo) of ``path`` and measure how far the
    observations drift from the recorded ones; ``video`` renders the replay to an MP4. ``task`` is needed
    only for a file that does not name its task (written by another program)."""
    given = load_task(task) if isinstance(task, (str, Path)) else task
    if video is not None and not Path(video).parent.is_dir():
        raise LamRobotError(f"directory {Path(video).parent} for the video does not exist; create it first")
    with DemoFile(path, task=given) as demos:
        spec = demos.task
        names = demos.demo_names if demo is None else [schema.demo_name(demo)]
        if names[0] not in demos.demo_names:
            raise LamRobotError(
                f"{path} has no demo_{demo}; it holds {', '.join(demos.demo_names[:5])}"
                + (" ..." if len(demos) > 5 else "")
            )
        without = [n for n in names if "states" not in demos.demo(n)]
        if without:
            raise LamRobotError(
                f"{path}: {without[0]} has no MuJoCo states to replay from (recorded by an older lam-robot or "
                "another program); record it again to replay it"
            )
        episodes = [demos.episode(n) for n in names]
    env = spec.make_env(render_mode="rgb_array" if video is not None else None)
    frames: list[np.ndarray] | None = [] if video is not None else None
    try:
        physics = PhysicsState.of(env)
        if physics is None:
            raise LamRobotError(f"task {spec.name!r} is not a MuJoCo env; replay needs MuJoCo states")
        results = [_replay_one(env, physics, name, ep, frames) for name, ep in zip(names, episodes)]
        fps = int(env.metadata.get("render_fps") or round(physics.control_freq))
    finally:
        env.close()
    if video is not None and frames is not None:
        write_video(frames, Path(video), fps=fps)
    return ReplayResult(str(path), spec.name, results, tolerance, None if video is None else str(video))


def _replay_one(
    env: Any, physics: PhysicsState, name: str, ep: dict[str, Any], frames: list[np.ndarray] | None
) -> DemoReplay:
    states = ep["states"]
    obs, _ = env.reset(seed=int(ep["attrs"]["seed"]))
    physics.set(states[0])
    obs_diff = _obs_diff(obs, ep["obs"], 0)
    state_diff = 0.0
    now = np.empty(physics.size)
    if frames is not None:
        frames.append(env.render())
    for t, action in enumerate(ep["actions"]):
        physics.get(now)
        state_diff = max(state_diff, float(np.abs(now - states[t]).max()))
        obs, *_ = env.step(np.asarray(action, dtype=np.float32))
        obs_diff = max(obs_diff, _obs_diff(obs, ep["next_obs"], t))
        if frames is not None:
            frames.append(env.render())
    return DemoReplay(name, len(ep["actions"]), obs_diff, state_diff)


def _obs_diff(obs: dict[str, np.ndarray], recorded: dict[str, np.ndarray], t: int) -> float:
    """Largest absolute difference between a live observation and row ``t`` of the recorded one."""
    return max(float(np.abs(np.asarray(obs[k], dtype=np.float64) - recorded[k][t]).max()) for k in recorded)
