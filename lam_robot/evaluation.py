"""Evaluate any policy in simulation: success with a Wilson interval, return, length, video."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lam_robot.config import EvaluateConfig
from lam_robot.errors import LamRobotError
from lam_robot.rollout import Episode, Policy, one_torch_thread, run_episodes
from lam_robot.sources import load_policy
from lam_robot.tasks import TaskSpec, load_task


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (good at 0%, 100% and small n)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # Clamped so that rounding never puts the observed rate outside its own interval.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


@dataclasses.dataclass
class EvalResult:
    """Success rate with its 95% Wilson interval, returns, lengths and speed of one evaluation run."""

    task: str
    policy: str
    episodes: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_return: float
    std_return: float
    mean_length: float
    steps_per_second: float
    seed: int
    n_envs: int
    video: str | None = None

    def to_dict(self) -> dict:
        """The fields as a dict (what ``--json`` prints)."""
        return dataclasses.asdict(self)


def write_video(frames: list[np.ndarray], path: Path, fps: int) -> None:
    """Encode RGB ``frames`` as an H.264 MP4 at ``path``."""
    import imageio.v2 as imageio

    if not frames:
        raise LamRobotError("no frames were rendered; cannot write a video")
    # imageio's stub types __enter__ as the base class (no append_data): keep the Writer it returns
    writer = imageio.get_writer(path, fps=fps, codec="libx264", macro_block_size=16, quality=7)
    with writer:
        for frame in frames:
            writer.append_data(frame)


def evaluate_policy(
    task: TaskSpec,
    policy: Policy,
    policy_name: str,
    episodes: int,
    seed: int = 0,
    n_envs: int = 1,
    video: Path | None = None,
    video_episodes: int = 3,
    on_episode: Callable[[Episode], None] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> EvalResult:
    """Roll out ``episodes`` seeded episodes; the first ``video_episodes`` go to ``video`` if given.

    With ``workers``, Ray workers run the episodes, each loading the policy ``policy_name`` names (with
    ``seed``); the results are the same."""
    if episodes <= 0:
        raise LamRobotError(f"--episodes must be positive, got {episodes}")
    if video is not None and not video.parent.is_dir():
        raise LamRobotError(f"directory {video.parent} for the video does not exist; create it first")
    render = min(video_episodes, episodes) if video is not None else 0
    successes, returns, lengths, frames = 0, [], [], []
    start = time.perf_counter()
    if workers is None:
        runs = run_episodes(task, policy, episodes, seed=seed, n_envs=n_envs, render_episodes=render, states=False)
    else:
        from lam_robot.scale.ray_workers import remote_episodes

        runs = remote_episodes(
            task,
            policy_name,
            episodes,
            workers=workers,
            address=ray_address,
            seed=seed,
            policy_seed=seed,
            n_envs=n_envs,
            render_episodes=render,
            states=False,
        )
    for ep in runs:
        successes += ep.success
        returns.append(ep.ret)
        lengths.append(ep.length)
        if ep.frames:
            frames.append((ep.index, ep.frames))
        if on_episode is not None:
            on_episode(ep)
    elapsed = time.perf_counter() - start
    if video is not None:
        ordered = [f for _, ep_frames in sorted(frames, key=lambda item: item[0]) for f in ep_frames]
        write_video(ordered, video, fps=_render_fps(task))
    low, high = wilson_interval(successes, episodes)
    return EvalResult(
        task=task.name,
        policy=policy_name,
        episodes=episodes,
        successes=successes,
        success_rate=successes / episodes,
        ci_low=low,
        ci_high=high,
        mean_return=float(np.mean(returns)),
        std_return=float(np.std(returns)),
        mean_length=float(np.mean(lengths)),
        steps_per_second=sum(lengths) / max(elapsed, 1e-9),
        seed=seed,
        n_envs=n_envs,
        video=str(video) if video is not None else None,
    )


def evaluate(config: EvaluateConfig | None = None, /, *, progress: bool = True, **fields: Any) -> EvalResult:
    """Evaluate the policy ``config.policy`` names on ``config.task`` (or build the config from keyword
    fields); writes the video and the JSON results when asked."""
    import json

    from tqdm import tqdm

    config = EvaluateConfig.build(config, fields)
    for path in (config.json, config.video):
        if path is not None and not path.parent.is_dir():
            raise LamRobotError(f"directory {path.parent} for {path.name} does not exist; create it first")
    task = load_task(config.task)
    policy = load_policy(config.policy, task, seed=config.seed)
    if config.routed:
        from lam_robot.policy.routing import routed_as

        policy = routed_as(policy, config.policy, task, config)
    with (
        one_torch_thread(),
        tqdm(
            total=config.episodes, unit="ep", desc=f"evaluate {task.name}", dynamic_ncols=True, disable=not progress
        ) as bar,
    ):
        result = evaluate_policy(
            task,
            policy,
            config.policy,
            config.episodes,
            seed=config.seed,
            n_envs=config.n_envs,
            video=config.video,
            video_episodes=config.video_episodes,
            on_episode=lambda ep: bar.update(1),
            workers=config.workers,
            ray_address=config.ray_address,
        )
    if config.json is not None:
        config.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _render_fps(task: TaskSpec) -> int:
    env = task.make_env()
    try:
        return int(env.metadata.get("render_fps") or 25)
    finally:
        env.close()
