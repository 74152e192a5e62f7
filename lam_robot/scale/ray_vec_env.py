"""An SB3 ``VecEnv`` whose envs live in Ray actors, for ``finetune --workers``.

Each actor holds a contiguous slice of the envs and steps it with SubprocVecEnv's own semantics (auto-reset,
``terminal_observation``, ``TimeLimit.truncated``), so for the same env builders and seeds the rollouts are
the same as SubprocVecEnv's. Per step one round trip per actor carries its envs' actions out and their
observations, rewards, dones and infos back. A worker that dies is replaced by a new one built from the same
env builders; its envs' episodes in progress end there as truncated (``info["worker_restarted"]``), so PPO
bootstraps them and the rollout goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from lam_robot.errors import LamRobotError
from lam_robot.scale.ray_workers import RayActorError, RayTaskError, connect, init_failure, ray, unwrap

RESTART_SEED = 1_000_003
"""Offset of the reset seeds of a replaced worker's envs (a restart should not replay the first episodes)."""


@ray.remote(num_cpus=1, max_restarts=0)
class EnvWorker:
    """A Ray actor holding a few envs; every method takes or returns one entry per env it holds."""

    def __init__(self, env_fns: CloudpickleWrapper) -> None:
        from stable_baselines3.common.vec_env.patch_gym import _patch_env

        self.envs = [_patch_env(fn()) for fn in env_fns.var]

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """The first env's observation and action spaces."""
        return self.envs[0].observation_space, self.envs[0].action_space

    def reset(self, seeds: list[int | None], options: list[dict]) -> list[tuple[Any, dict]]:
        """Reset every env; (obs, reset_info) each."""
        out = []
        for env, seed, opts in zip(self.envs, seeds, options):
            out.append(env.reset(seed=seed, **({"options": opts} if opts else {})))
        return out

    def step(self, actions: np.ndarray) -> list[tuple[Any, Any, bool, dict, dict]]:
        """Step every env, resetting finished ones as SubprocVecEnv's worker does."""
        out = []
        for env, action in zip(self.envs, actions):
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            reset_info: dict = {}
            if done:
                info["terminal_observation"] = obs
                obs, reset_info = env.reset()
            out.append((obs, reward, done, info, reset_info))
        return out

    def call(self, local: list[int], what: str, name: Any, args: tuple = (), kwargs: dict | None = None) -> list:
        """get_attr, set_attr, env_method, is_wrapped or render on the envs at ``local`` positions."""
        from stable_baselines3.common.env_util import is_wrapped

        out = []
        for i in local:
            env = self.envs[i]
            if what == "get_attr":
                out.append(env.get_wrapper_attr(name))
            elif what == "set_attr":
                setattr(env, name, args[0])
                out.append(None)
            elif what == "env_method":
                out.append(env.get_wrapper_attr(name)(*args, **(kwargs or {})))
            elif what == "is_wrapped":
                out.append(is_wrapped(env, name))
            else:
                out.append(env.render())
        return out

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


class RayVecEnv(VecEnv):
    """SB3 VecEnv over ``workers`` Ray actors, each holding ``len(env_fns) / workers`` envs (in env order).

    One actor per worker rather than per env: a step costs one round trip per actor, and on a few cores
    fewer, busier processes beat many idle ones (benchmarks/scaling.py measures both)."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]], workers: int, address: str | None = None) -> None:
        if not 1 <= workers <= len(env_fns):
            raise LamRobotError(f"--workers must be in [1, {len(env_fns)}] (one env at least each), got {workers}")
        connect(address, workers)
        self.env_fns = env_fns
        self.slices = [[int(i) for i in part] for part in np.array_split(np.arange(len(env_fns)), workers)]
        self.actors = [self._start(slot) for slot in range(workers)]
        self.restarts = 0
        self.closed = False
        self.pending: list[Any] | None = None
        observation_space, action_space = self._get(self.actors[0].spaces.remote())
        super().__init__(len(env_fns), observation_space, action_space)
        self.last_obs: list[Any] = [None] * self.num_envs

    def _start(self, slot: int) -> Any:
        fns = CloudpickleWrapper([self.env_fns[i] for i in self.slices[slot]])
        return EnvWorker.remote(fns)  # type: ignore[attr-defined]

    @staticmethod
    def _get(ref: Any) -> Any:
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            raise unwrap(exc) from None

    def _replace(self, slot: int, exc: RayActorError) -> list[tuple[Any, dict]]:
        """A new worker for ``slot`` with its envs reset on fresh seeds; their (obs, reset_info)."""
        if exc.actor_init_failed:
            raise init_failure(exc) from None
        self.restarts += 1
        ray.kill(self.actors[slot])
        self.actors[slot] = self._start(slot)
        seeds = [RESTART_SEED * self.restarts + i for i in self.slices[slot]]
        return self._get(self.actors[slot].reset.remote(seeds, [{}] * len(seeds)))

    def pids(self) -> list[int]:
        """The worker processes' ids, one per actor."""
        return [self._get(actor.pid.remote()) for actor in self.actors]

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seeds and options set since the last reset)."""
        refs = [
            actor.reset.remote([self._seeds[i] for i in part], [self._options[i] for i in part])
            for actor, part in zip(self.actors, self.slices)
        ]
        results: list[tuple[Any, dict]] = []
        for slot, ref in enumerate(refs):
            try:
                results += self._get(ref)
            except RayActorError as exc:
                self._replace(slot, exc)  # then reset it as asked
                part = self.slices[slot]
                results += self._get(
                    self.actors[slot].reset.remote([self._seeds[i] for i in part], [self._options[i] for i in part])
                )
        obs, infos = zip(*results)
        self.reset_infos = list(infos)
        self.last_obs = list(obs)
        self._reset_seeds()
        self._reset_options()
        return _stack(obs, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        """Send each worker its envs' actions."""
        self.pending = [actor.step.remote(actions[part]) for actor, part in zip(self.actors, self.slices)]

    def step_wait(self) -> VecEnvStepReturn:
        """Gather the workers' steps; a dead worker's envs come back truncated and reset by its replacement."""
        assert self.pending is not None, "step_wait without step_async"
        results: list[tuple[Any, Any, bool, dict, dict]] = []
        for slot, ref in enumerate(self.pending):
            try:
                results += self._get(ref)
            except RayActorError as exc:
                for i, (obs, reset_info) in zip(self.slices[slot], self._replace(slot, exc)):
                    info = {"TimeLimit.truncated": True, "terminal_observation": self.last_obs[i]}
                    results.append((obs, 0.0, True, info | {"worker_restarted": True}, reset_info))
        self.pending = None
        obs, rewards, dones, infos, reset_infos = zip(*results)
        self.reset_infos = list(reset_infos)
        self.last_obs = list(obs)
        return _stack(obs, self.observation_space), np.stack(rewards), np.stack(dones), list(infos)

    def close(self) -> None:
        """Close the envs and end the workers."""
        if self.closed:
            return
        for actor in self.actors:
            try:
                ray.get(actor.close.remote())
            except RayActorError:
                pass
            ray.kill(actor)
        self.closed = True

    def _call(self, what: str, name: Any, indices: VecEnvIndices, *args: Any, **kwargs: Any) -> list[Any]:
        wanted = list(self._get_indices(indices))
        refs = []
        for actor, part in zip(self.actors, self.slices):
            local = [part.index(i) for i in wanted if i in part]
            if local:
                refs.append(actor.call.remote(local, what, name, args, kwargs))
        return [value for ref in refs for value in self._get(ref)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each env (through its wrappers)."""
        return self._call("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on each env."""
        self._call("set_attr", attr_name, indices, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of each env (through its wrappers)."""
        return self._call("env_method", method_name, indices, *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each env is wrapped with ``wrapper_class``."""
        return self._call("is_wrapped", wrapper_class, indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each env's rendered frame."""
        return self._call("render", None, None)


def _stack(obs: Sequence[Any], space: gym.Space) -> VecEnvObs:
    """Per-env observations stacked on a first axis (dict observations key by key)."""
    if isinstance(space, gym.spaces.Dict):
        return {key: np.stack([o[key] for o in obs]) for key in space.spaces}
    return np.stack(obs)
