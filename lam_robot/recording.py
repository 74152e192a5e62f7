"""Recording: roll a policy out and hand each finished episode to the one writer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lam_robot.data.writer import DemoWriter
from lam_robot.rollout import run_episodes
from lam_robot.sources import resolve_policy
from lam_robot.tasks import TaskSpec


@dataclasses.dataclass
class RecordStats:
    kept: int = 0
    run: int = 0
    successes: int = 0
    steps: int = 0


def record_episodes(
    task: TaskSpec,
    policy: Any,
    path: str | Path,
    episodes: int,
    source: str,
    seed: int = 0,
    noise: float = 0.0,
    n_envs: int = 1,
    only_success: bool = False,
    max_attempts: int | None = None,
    valid_fraction: float = 0.1,
    on_episode: Callable[[RecordStats], None] | None = None,
) -> RecordStats:
    """Roll ``policy`` out and append its episodes to ``path``; with ``only_success`` keep successes only."""
    attempts = (max_attempts or 10 * episodes) if only_success else episodes
    stats = RecordStats()
    with DemoWriter(path, task, valid_fraction=valid_fraction) as writer:
        for ep in run_episodes(task, policy, attempts, seed=seed, n_envs=n_envs, action_noise=noise):
            stats.run += 1
            stats.steps += ep.length
            stats.successes += ep.success
            if only_success and not ep.success:
                continue
            writer.add(ep, source=source, interventions=ep.interventions)
            stats.kept += 1
            if on_episode is not None:
                on_episode(stats)
            if stats.kept == episodes:
                break
    return stats


def record_expert(task: TaskSpec, path: str | Path, episodes: int, seed: int = 0, noise: float = 0.0) -> RecordStats:
    """Append ``episodes`` episodes of the task's scripted expert to ``path``."""
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    return record_episodes(task, expert, path, episodes, "expert", seed=seed, noise=noise)
