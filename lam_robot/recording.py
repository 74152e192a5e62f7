"""Recording: roll a policy (or a human at a device) out and hand each finished episode to the one writer.

``record`` is the public entry point (the CLI's ``record`` is one call to it); ``record_episodes`` is the
loop for a policy object already built."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lam_robot.config import RecordConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.data.writer import BackgroundWriter, DemoWriter, check_appendable
from lam_robot.errors import LamRobotError
from lam_robot.rollout import one_torch_thread, run_episodes
from lam_robot.sources import load_policy, policy_source, resolve_policy
from lam_robot.tasks import TaskSpec, load_task

TELEOP_DEFAULTS = {"gain": 1.0, "dead_zone": 0.1}


@dataclasses.dataclass
class RecordStats:
    """What a recording session did: episodes kept, run, successful, env steps (and teleop's extras)."""

    kept: int = 0
    run: int = 0
    successes: int = 0
    steps: int = 0
    discarded: int = 0
    """Teleoperation: episodes the human discarded."""
    interventions: int = 0
    """Steps in which a human took over from the policy (--intervene)."""


def next_seed(path: Path) -> int:
    """The seed that continues a demo file: one past its last episode's seed (0 for a new file)."""
    if not Path(path).is_file():
        return 0
    with DemoFile(path) as existing:
        return 1 + max(int(existing.demo_attrs(n)["seed"]) for n in existing.demo_names)


def record(config: RecordConfig | None = None, /, *, progress: bool = True, **fields: Any) -> RecordStats:
    """Record ``config.episodes`` episodes into ``config.out`` (or build the config from keyword fields)."""
    config = RecordConfig.build(config, fields)
    task = load_task(config.task)
    check_appendable(config.out, task, config.source == "play")  # before any env or progress bar
    seed = next_seed(config.out) if config.seed is None else config.seed
    if config.intervene or is_device(config.source):
        return _record_teleop(config, task, seed)
    for name in ("gain", "dead_zone"):
        if getattr(config, name) is not None:
            raise LamRobotError(f"--{name.replace('_', '-')} applies to teleoperation devices only")
    if config.source == "play" and config.only_success:
        raise LamRobotError("play data has no success to keep; drop --only-success")
    policy = load_policy(config.source, task, seed=seed)
    if config.routed:  # the file stores the env's real goal; only the policy sees waypoints
        from lam_robot.policy.routing import routed_as

        policy = routed_as(policy, config.source, task, config)
    from tqdm import tqdm

    start = time.perf_counter()
    with (
        one_torch_thread(),
        tqdm(
            total=config.episodes, unit="ep", desc=f"record {task.name}", dynamic_ncols=True, disable=not progress
        ) as bar,
    ):

        def show(stats: RecordStats) -> None:
            bar.update(1)
            rate = stats.steps / (time.perf_counter() - start)
            bar.set_postfix(success=f"{stats.successes}/{stats.run}", steps_s=f"{rate:.0f}", refresh=False)

        stats = record_episodes(
            task,
            config.source if config.workers is not None else policy,
            config.out,
            config.episodes,
            policy_source(config.source),
            seed=seed,
            noise=config.noise,
            n_envs=config.n_envs,
            only_success=config.only_success,
            max_attempts=config.max_attempts,
            valid_fraction=config.valid_fraction,
            on_episode=show,
            unlabelled=config.source == "play",
            workers=config.workers,
            ray_address=config.ray_address,
        )
    if stats.kept < config.episodes:
        raise LamRobotError(
            f"only {stats.kept} of {config.episodes} episodes succeeded in {stats.run} attempts "
            f"({stats.kept} saved to {config.out}); lower --noise or raise --max-attempts"
        )
    return stats


def is_device(source: str) -> bool:
    """Whether ``source`` names a teleoperation device (or a replay of one) rather than a policy."""
    from lam_robot.teleop.devices import LIVE_DEVICES

    return source in LIVE_DEVICES or source.startswith("replay:")


def _record_teleop(config: RecordConfig, task: TaskSpec, seed: int) -> RecordStats:
    from lam_robot.teleop.devices import make_device
    from lam_robot.teleop.session import TeleopSession, control_period

    if config.workers is not None:
        raise LamRobotError("--workers applies to recording a policy, not teleoperation (one human, one env); drop it")
    if config.noise or config.n_envs != 1 or config.only_success or config.routed:
        raise LamRobotError("--noise, --n-envs, --only-success and --route do not apply to teleoperation; drop them")
    policy = None
    if config.intervene:
        if is_device(config.source) or config.source == "random":
            raise LamRobotError("--intervene needs a trained policy as --source (policy:DIR or DIR)")
        policy = load_policy(config.source, task, seed=seed)
    env = task.make_env()
    period = control_period(env)
    env.close()
    device = make_device(config.intervene or config.source, period)
    viewer = config.viewer if config.viewer is not None else (device.live and bool(os.environ.get("DISPLAY")))

    def status(text: str) -> None:  # live: one status line rewritten in place; saved episodes scroll
        end = "" if text.startswith("episode") else "\n"
        print(f"\r\x1b[K{text}", end=end, file=sys.stderr, flush=True)

    gain = TELEOP_DEFAULTS["gain"] if config.gain is None else config.gain
    dead_zone = TELEOP_DEFAULTS["dead_zone"] if config.dead_zone is None else config.dead_zone
    with DemoWriter(config.out, task, valid_fraction=config.valid_fraction) as writer, device, one_torch_thread():
        session = TeleopSession(
            task,
            device,
            writer,
            seed=seed,
            gain=gain,
            dead_zone=dead_zone,
            policy=policy,
            viewer=viewer,
            realtime=config.realtime,
            status=status if device.live else None,
        )
        try:
            session_stats = session.run(config.episodes)
        except KeyboardInterrupt:
            session_stats = session.stats
            print(file=sys.stderr)
    return RecordStats(
        kept=session_stats.kept,
        run=len(session_stats.episodes),
        successes=session_stats.successes,
        discarded=session_stats.discarded,
        interventions=session_stats.interventions,
    )


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
    unlabelled: bool = False,
    workers: int | None = None,
    ray_address: str | None = None,
    background_writer: bool = False,
) -> RecordStats:
    """Roll ``policy`` out and append its episodes to ``path``; with ``only_success`` keep successes only;
    ``unlabelled``: write play data (no desired goal, rewards or success).

    ``background_writer``: write in a child process (``BackgroundWriter``), so the HDF5 writes overlap the
    simulation (it can pay only with a core to spare); a kill of the whole process group can then lose
    the episode being written as well. ``on_episode`` is called for committed episodes only.

    With ``workers``, ``policy`` is a name (what ``load_policy`` takes, loaded with ``seed``) and Ray workers
    run the episodes; this process still writes them, in episode order, so the file is the same."""
    attempts = (max_attempts or 10 * episodes) if only_success else episodes
    stats = RecordStats()
    if workers is None:
        runs = run_episodes(task, policy, attempts, seed=seed, n_envs=n_envs, action_noise=noise)
    else:
        from lam_robot.scale.ray_workers import remote_episodes

        runs = remote_episodes(
            task,
            policy,
            attempts,
            workers=workers,
            address=ray_address,
            seed=seed,
            policy_seed=seed,
            n_envs=n_envs,
            action_noise=noise,
        )
    writer: DemoWriter | BackgroundWriter
    if background_writer and workers is None:  # a Ray driver has threads: no fork there
        writer = BackgroundWriter(path, task, valid_fraction=valid_fraction, unlabelled=unlabelled)
    else:
        writer = DemoWriter(path, task, valid_fraction=valid_fraction, unlabelled=unlabelled)

    def report() -> None:  # on_episode sees committed episodes only: a kill keeps all it was told of
        while stats.kept < writer.committed:
            stats.kept += 1
            if on_episode is not None:
                on_episode(stats)

    handed = 0
    with writer, contextlib.closing(runs):
        for ep in runs:
            stats.run += 1
            stats.steps += ep.length
            stats.successes += ep.success
            if only_success and not ep.success:
                continue
            writer.add(ep, source=source, interventions=ep.interventions)
            handed += 1
            report()
            if handed == episodes:
                break
    report()
    return stats


def record_expert(task: TaskSpec, path: str | Path, episodes: int, seed: int = 0, noise: float = 0.0) -> RecordStats:
    """Append ``episodes`` episodes of the task's scripted expert to ``path``."""
    env = task.make_env()
    expert = resolve_policy("expert", task, env)
    env.close()
    return record_episodes(task, expert, path, episodes, "expert", seed=seed, noise=noise)
