"""Run a policy for whole episodes in a batch of envs; the one loop behind record and evaluate."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from typing import Any, Protocol, cast

import gymnasium as gym
import numpy as np

from lam_robot.tasks import TaskSpec

Obs = dict[str, np.ndarray]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Batched inference of a few rows per step, and PPO on small batches, run fastest on one torch thread
    here (more threads spin against the simulator); the caller's setting comes back afterwards."""
    torch = sys.modules.get("torch")  # a policy without torch needs nothing
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Policy(Protocol):
    """Stable-Baselines3's predict protocol; experts, BC and fine-tuned policies all follow it."""

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """Actions for a batch of observations, and the policy's next recurrent state."""


@dataclasses.dataclass
class Episode:
    """One finished episode, step-aligned: obs[t], actions[t] -> rewards[t], next_obs[t]."""

    obs: Obs
    next_obs: Obs
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    success: bool
    seed: int
    index: int
    """Position in the run (0-based); episode ``index`` was reset with ``seed``."""
    frames: list[np.ndarray] | None = None
    interventions: np.ndarray | None = None
    """(N,) bool, for a policy that reports ``intervened``: steps where someone else acted."""

    @property
    def length(self) -> int:
        """Number of steps."""
        return len(self.actions)

    @property
    def ret(self) -> float:
        """Undiscounted return: the sum of the rewards."""
        return float(self.rewards.sum())


class EpisodeBuffer:
    """One episode's steps as they come, per field; ``finish`` stacks them into an Episode."""

    def __init__(self) -> None:
        self.obs: list[Obs] = []
        self.next_obs: list[Obs] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.frames: list[np.ndarray] = []
        self.interventions: list[bool] = []

    def finish(self, success: bool, seed: int, index: int, keep_frames: bool) -> Episode:
        """The collected steps as one Episode (frames only if ``keep_frames``)."""

        def stack(seq: list[Obs]) -> Obs:
            return {k: np.stack([o[k] for o in seq]) for k in seq[0]}

        return Episode(
            obs=stack(self.obs),
            next_obs=stack(self.next_obs),
            actions=np.asarray(self.actions, dtype=np.float32),
            rewards=np.asarray(self.rewards, dtype=np.float64),
            terminated=np.asarray(self.terminated, dtype=bool),
            truncated=np.asarray(self.truncated, dtype=bool),
            success=success,
            seed=seed,
            index=index,
            frames=self.frames if keep_frames else None,
            interventions=np.asarray(self.interventions, dtype=bool) if self.interventions else None,
        )


def run_episodes(
    task: TaskSpec,
    policy: Policy,
    episodes: int,
    seed: int = 0,
    n_envs: int = 1,
    action_noise: float = 0.0,
    render_episodes: int = 0,
) -> Iterator[Episode]:
    """Yield ``episodes`` finished episodes; episode i is reset with seed ``seed + i``.

    All envs step in lockstep and the policy sees the whole batch each step, so stateful
    policies keep one row per env. ``action_noise`` adds clipped Gaussian noise whose
    generator is seeded per episode, so results do not depend on ``n_envs``. The first
    ``render_episodes`` episodes carry rendered frames. A policy with an ``intervened`` attribute
    ((n_envs,) bool after each predict: who acted) gets its flags into ``Episode.interventions``.
    """
    if episodes <= 0:
        return
    n_envs = max(1, min(n_envs, episodes))
    envs = [task.make_env(render_mode="rgb_array" if render_episodes else None) for _ in range(n_envs)]
    action_space = cast(gym.spaces.Box, envs[0].action_space)  # continuous control only
    low, high = action_space.low, action_space.high
    try:
        next_index = 0
        slot_index = [-1] * n_envs
        slot_rng: list[np.random.Generator | None] = [None] * n_envs
        buffers = [EpisodeBuffer() for _ in range(n_envs)]
        current: list[Obs] = [{}] * n_envs
        episode_start = np.ones(n_envs, dtype=bool)

        def start(slot: int) -> None:
            nonlocal next_index
            slot_index[slot] = next_index
            ep_seed = seed + next_index
            current[slot], _ = envs[slot].reset(seed=ep_seed)
            envs[slot].action_space.seed(ep_seed)
            slot_rng[slot] = np.random.default_rng([ep_seed, 1])
            buffers[slot] = EpisodeBuffer()
            if slot_index[slot] < render_episodes:
                buffers[slot].frames.append(_frame(envs[slot]))
            episode_start[slot] = True
            next_index += 1

        for slot in range(n_envs):
            start(slot)
        state = None
        finished = 0
        while finished < episodes:
            batch = {k: np.stack([current[s][k] for s in range(n_envs)]) for k in current[0]}
            actions, state = policy.predict(batch, state=state, episode_start=episode_start.copy(), deterministic=True)
            actions = np.asarray(actions, dtype=np.float32).reshape(n_envs, -1)
            intervened = getattr(policy, "intervened", None)
            episode_start[:] = False
            for slot in range(n_envs):
                if slot_index[slot] < 0:
                    continue  # this env has no episode left to run
                action = actions[slot]
                if action_noise > 0:
                    rng = slot_rng[slot]
                    assert rng is not None  # set by start() for every slot with an episode
                    action = action + rng.normal(0.0, action_noise, size=action.shape)
                action = np.clip(action, low, high).astype(np.float32)
                next_obs, reward, terminated, truncated, info = envs[slot].step(action)
                buf = buffers[slot]
                buf.obs.append(current[slot])
                buf.next_obs.append(next_obs)
                buf.actions.append(action)
                buf.rewards.append(float(reward))
                buf.terminated.append(bool(terminated))
                buf.truncated.append(bool(truncated))
                if intervened is not None:
                    buf.interventions.append(bool(intervened[slot]))
                if slot_index[slot] < render_episodes:
                    buf.frames.append(_frame(envs[slot]))
                current[slot] = next_obs
                if terminated or truncated:
                    index = slot_index[slot]
                    yield buf.finish(task.is_success(info), seed + index, index, keep_frames=index < render_episodes)
                    finished += 1
                    if next_index < episodes:
                        start(slot)
                    else:
                        slot_index[slot] = -1
    finally:
        for env in envs:
            env.close()


def _frame(env: gym.Env) -> np.ndarray:
    """The env's rendered frame (the envs are made with render_mode="rgb_array": one RGB array)."""
    return cast(np.ndarray, env.render())
