"""Episodes in Ray worker processes, for ``record`` and ``evaluate`` with ``--workers``.

Each worker is a Ray actor that loads the policy once by name and runs ``rollout.run_episodes`` on chunks of
episode indices. The driver hands out chunks, takes finished episodes back (numpy arrays through Ray's object
store) and yields them in index order, so its one writer sees exactly what a single process would: episode i
is reset with seed SEED+i whatever the worker count. A worker that dies is replaced and its chunk run again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Generator
from typing import Any

import gymnasium as gym

from lam_robot.errors import LamRobotError

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ModuleNotFoundError as exc:  # an optional extra: only --workers needs it
    raise LamRobotError("--workers runs in Ray, which is not installed; pip install 'lam-robot[ray]'") from exc
from lam_robot.rollout import Episode, one_torch_thread, run_episodes
from lam_robot.sources import RandomPolicy, load_policy
from lam_robot.tasks import TaskSpec

MAX_LEAD_CHUNKS = 4
"""Chunks per worker that may finish ahead of the next episode the driver yields (bounds its buffer)."""


def connect(address: str | None, workers: int) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one started on this machine by ``ray start``), or start
    a local Ray with a CPU per worker; a process that is already connected stays connected."""
    if not ray.is_initialized():
        quiet: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,  # the workers' own logs stay in Ray's session directory
            "logging_level": logging.ERROR,
        }
        if address is None:
            ray.init(num_cpus=max(workers, os.cpu_count() or 1), **quiet)
        else:
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise LamRobotError(
                    f"cannot join the Ray cluster at {address!r} ({str(exc).splitlines()[0]}); start one with "
                    "`ray start --head`, or drop --ray-address for a local Ray"
                ) from exc
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < workers:
        raise LamRobotError(f"the Ray cluster has {cpus} CPUs and --workers {workers} needs one each; lower --workers")


def unwrap(exc: RayTaskError) -> Exception:
    """The worker's own LamRobotError (a one-line message for the user), else Ray's error as it is."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, LamRobotError) else exc


def init_failure(exc: RayActorError) -> LamRobotError:
    """A worker whose constructor raised: replacing it would fail the same way, so say why in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "unknown")
    return LamRobotError(f"a Ray worker could not start: {reason}")


@ray.remote(num_cpus=1, max_restarts=0)
class EpisodeWorker:
    """A Ray actor holding one policy; runs chunks of episodes with ``run_episodes``."""

    def __init__(self, task: TaskSpec, source: str, policy_seed: int, options: dict[str, Any]) -> None:
        self.task, self.source, self.policy_seed, self.options = task, source, policy_seed, options
        self.policy = load_policy(source, task, seed=policy_seed)
        self.envs: dict[bool, list[gym.Env]] = {}  # rendering or not -> envs kept from chunk to chunk

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def run(self, start: int, count: int, seed: int, render_episodes: int) -> list[Episode]:
        """Episodes ``start`` .. ``start + count - 1`` of the run; episode i is reset with ``seed + i``."""
        policy = self.policy
        if self.source == "random":  # its generator is the policy's only state: seed it per chunk, not per worker
            env = self.task.make_env()
            policy = RandomPolicy(env.action_space, seed=self.policy_seed + start)  # type: ignore[arg-type]
            env.close()
        render = max(0, min(count, render_episodes - start))
        envs = self.envs.setdefault(bool(render), [])
        while len(envs) < min(count, self.options["n_envs"]):  # building a maze env costs more than an episode
            envs.append(self.task.make_env(render_mode="rgb_array" if render else None))
        with one_torch_thread():
            episodes = list(
                run_episodes(
                    self.task, policy, count, seed=seed + start, render_episodes=render, envs=envs, **self.options
                )
            )
        return [dataclasses.replace(ep, index=ep.index + start) for ep in episodes]


def remote_episodes(
    task: TaskSpec,
    source: str,
    episodes: int,
    *,
    workers: int,
    address: str | None = None,
    seed: int = 0,
    policy_seed: int = 0,
    n_envs: int = 1,
    action_noise: float = 0.0,
    render_episodes: int = 0,
    states: bool = True,
) -> Generator[Episode, None, None]:
    """``run_episodes`` for the policy named ``source``, spread over ``workers`` Ray actors; yields in index order.

    Chunks hold ``n_envs`` episodes (what one worker steps in lockstep) and do not depend on ``workers``. Each
    worker has up to two chunks queued so that it never waits for the driver. Stopping the iteration early
    (``record --only-success`` has enough) ends the workers."""
    if episodes <= 0:
        return
    connect(address, workers)
    options = {"n_envs": n_envs, "action_noise": action_noise, "states": states}
    chunk = max(1, n_envs)
    restarts_left = 3 * workers

    def new_worker() -> Any:
        return EpisodeWorker.remote(task, source, policy_seed, options)  # type: ignore[attr-defined]

    actors = [new_worker() for _ in range(workers)]
    generation = [0] * workers  # bumped when a slot's worker is replaced
    pending: dict[Any, tuple[int, int, int, int]] = {}  # object ref -> (slot, generation, start, count)
    in_flight = [0] * workers
    done: dict[int, Episode] = {}
    next_start = next_yield = 0

    def submit(slot: int, start: int, count: int) -> None:
        ref = actors[slot].run.remote(start, count, seed, render_episodes)
        pending[ref] = (slot, generation[slot], start, count)
        in_flight[slot] += 1

    def top_up() -> None:
        nonlocal next_start
        lead = next_yield + MAX_LEAD_CHUNKS * chunk * workers
        for slot in range(workers):
            while in_flight[slot] < 2 and next_start < min(episodes, lead):
                count = min(chunk, episodes - next_start)
                submit(slot, next_start, count)
                next_start += count

    try:
        top_up()
        while next_yield < episodes:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            slot, gen, start, count = pending.pop(ref)
            in_flight[slot] -= 1
            try:
                for ep in ray.get(ref):
                    done[ep.index] = ep
            except RayTaskError as exc:
                raise unwrap(exc) from None
            except RayActorError as exc:
                if exc.actor_init_failed:
                    raise init_failure(exc) from None
                if gen == generation[slot]:  # the slot's other queued chunks fail too: replace it once
                    if restarts_left == 0:
                        raise LamRobotError(f"Ray workers died {3 * workers} times; see Ray's logs") from None
                    restarts_left -= 1
                    actors[slot] = new_worker()
                    generation[slot] += 1
                submit(slot, start, count)
            while next_yield in done:
                yield done.pop(next_yield)
                next_yield += 1
            top_up()
    finally:
        for actor in actors:
            ray.kill(actor)
