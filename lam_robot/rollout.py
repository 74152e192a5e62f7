"""Run a policy for whole episodes in a batch of envs; the one loop behind record and evaluate."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Generator, Iterator
from typing import Any, Protocol, cast

import gymnasium as gym
import numpy as np

from lam_robot.errors import LamRobotError
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
    states: np.ndarray | None = None
    """(N, S) MuJoCo full physics state before each step (``PhysicsState``), aligned with obs."""
    control_freq: float | None = None
    """Env steps per second of simulated time (1 / dt)."""

    @property
    def length(self) -> int:
        """Number of steps."""
        return len(self.actions)

    @property
    def ret(self) -> float:
        """Undiscounted return: the sum of the rewards."""
        return float(self.rewards.sum())


class EpisodeBuffer:
    """One episode's steps as they come, per field; ``finish`` stacks them into an Episode.

    With ``physics``, ``capture_state`` (called before each step) stores the MuJoCo state in rows
    preallocated for the task's horizon, so the hot loop only copies into them."""

    def __init__(self, physics: PhysicsState | None = None, horizon: int = 0) -> None:
        self.obs: list[Obs] = []
        self.next_obs: list[Obs] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []
        self.frames: list[np.ndarray] = []
        self.interventions: list[bool] = []
        self.physics = physics
        self.states = physics.rows(horizon) if physics is not None else None

    def capture_state(self) -> None:
        """Store the physics state before the step about to be taken (row ``len(self.actions)``)."""
        if self.physics is None or self.states is None:
            return
        row = len(self.actions)
        if row == len(self.states):  # longer than the horizon given: grow
            self.states = np.concatenate([self.states, np.empty_like(self.states[: max(1, row)])])
        self.physics.get(self.states[row])

    def finish(self, success: bool, seed: int, index: int, keep_frames: bool) -> Episode:
        """The collected steps as one Episode (frames only if ``keep_frames``)."""

        def stack(seq: list[Obs]) -> Obs:
            return {k: np.stack([o[k] for o in seq]) for k in seq[0]}

        n = len(self.actions)
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
            states=self.states[:n].copy() if self.states is not None else None,
            control_freq=self.physics.control_freq if self.physics is not None else None,
        )


def sim_env(env: gym.Env) -> Any:
    """The MuJoCo env under the wrappers: ``env.unwrapped``, or the point env PointMaze wraps."""
    base = env.unwrapped
    return getattr(base, "point_env", base)


class PhysicsState:
    """Reads and sets one env's MuJoCo state: ``mj_getState`` / ``mj_setState`` with mjSTATE_FULLPHYSICS
    (time, qpos, qvel, act, mocap, userdata, plugin state). Python-side task state (a maze's goal) is not
    in it: reset the env with the episode's seed first."""

    def __init__(self, env: gym.Env) -> None:
        import mujoco

        sim = sim_env(env)
        self._mujoco = mujoco
        self.model, self.data = sim.model, sim.data
        self.spec = int(mujoco.mjtState.mjSTATE_FULLPHYSICS)
        self.size = int(mujoco.mj_stateSize(self.model, self.spec))
        self.control_freq = 1.0 / float(sim.dt)

    @classmethod
    def of(cls, env: gym.Env) -> PhysicsState | None:
        """The env's physics state, or None for an env that is not MuJoCo (it has no model and data)."""
        sim = sim_env(env)
        if not (hasattr(sim, "model") and hasattr(sim, "data") and hasattr(sim, "dt")):
            return None
        return cls(env)

    def rows(self, n: int) -> np.ndarray:
        """Preallocated (n, size) float64 rows to capture states into."""
        return np.empty((max(1, n), self.size))

    def get(self, out: np.ndarray) -> None:
        """Copy the current state into ``out`` ((size,) float64)."""
        self._mujoco.mj_getState(self.model, self.data, out, self.spec)

    def set(self, state: np.ndarray) -> None:
        """Set the state and recompute what derives from it (mj_forward)."""
        state = np.ascontiguousarray(state, dtype=np.float64)
        if state.shape != (self.size,):
            raise LamRobotError(
                f"a stored state has {state.shape[-1] if state.ndim else 0} values, but this env's full "
                f"physics state has {self.size}; the file was recorded in another model"
            )
        self._mujoco.mj_setState(self.model, self.data, state, self.spec)
        self._mujoco.mj_forward(self.model, self.data)


def run_episodes(
    task: TaskSpec,
    policy: Policy,
    episodes: int,
    seed: int = 0,
    n_envs: int = 1,
    action_noise: float = 0.0,
    render_episodes: int = 0,
    states: bool = True,
    envs: list[gym.Env] | None = None,
) -> Generator[Episode, None, None]:
    """Yield ``episodes`` finished episodes; episode i is reset with seed ``seed + i``.

    All envs step in lockstep and the policy sees the whole batch each step, so stateful
    policies keep one row per env. ``action_noise`` adds clipped Gaussian noise whose
    generator is seeded per episode, so results do not depend on ``n_envs``. The first
    ``render_episodes`` episodes carry rendered frames. A policy with an ``intervened`` attribute
    ((n_envs,) bool after each predict: who acted) gets its flags into ``Episode.interventions``.
    With ``states`` (and a MuJoCo env) each episode carries its physics state before every step.
    ``envs`` (at least ``n_envs``, built for the same render mode) are used and left open instead of
    new ones: every episode resets with its own seed, so a reused env gives the same episodes.
    """
    if episodes <= 0:
        return
    n_envs = max(1, min(n_envs, episodes))
    owned = envs is None
    if envs is None:
        envs = [task.make_env(render_mode="rgb_array" if render_episodes else None) for _ in range(n_envs)]
    envs = envs[:n_envs]
    physics = [PhysicsState.of(env) if states else None for env in envs]
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
            buffers[slot] = EpisodeBuffer(physics[slot], task.horizon)
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
                buf = buffers[slot]
                buf.capture_state()
                next_obs, reward, terminated, truncated, info = envs[slot].step(action)
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
        for env in envs if owned else []:
            env.close()


def _frame(env: gym.Env) -> np.ndarray:
    """The env's rendered frame (the envs are made with render_mode="rgb_array": one RGB array)."""
    return cast(np.ndarray, env.render())
