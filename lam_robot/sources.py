"""Turn a policy name from the command line into an object with SB3's ``predict``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.rollout import Obs, Policy
from lam_robot.tasks import TaskSpec

POLICY_HELP = (
    "expert (the task's scripted expert), play (the expert wandering between goals of its own: "
    "unlabelled play data for `lam-robot pretrain`), random, a checkpoint directory (DIR or policy:DIR, "
    "from train-bc or finetune), a fine-tuning run's SB3 model (RUN/ppo.zip or RUN/sac.zip), or py:module:attr "
    "(an importable object with predict(obs), a class, or a plain callable obs -> action)"
)


class RandomPolicy:
    """Uniform random actions: the floor any learned policy must beat."""

    def __init__(self, action_space: gym.spaces.Box, seed: int = 0) -> None:
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """SB3's predict protocol: actions for one observation or a batch."""
        batch = next(iter(obs.values())).shape[:-1]
        return self.rng.uniform(self.low, self.high, size=batch + self.low.shape).astype(np.float32), state


class CallablePolicy:
    """Adapts a plain ``obs -> action`` function to the predict protocol, one row at a time."""

    def __init__(self, fn: Callable[[Obs], np.ndarray]) -> None:
        self.fn = fn

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """SB3's predict protocol: actions for one observation or a batch."""
        first = next(iter(obs.values()))
        if first.ndim == 1:
            return np.asarray(self.fn(obs), dtype=np.float32), state
        rows = [self.fn({k: v[i] for k, v in obs.items()}) for i in range(first.shape[0])]
        return np.asarray(rows, dtype=np.float32), state


def import_object(target: str) -> Any:
    """``module:attr`` (attr may be dotted) -> the object."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise LamRobotError(f"py:{target} must look like py:package.module:attr")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise LamRobotError(f"cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LamRobotError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def policy_source(name: str) -> str:
    """The ``source`` attribute that episodes of this policy get in a demo file."""
    if name == "play":
        return "play"
    return "expert" if name == "expert" or name.startswith("py:") else "policy"


def resolve_policy(name: str, task: TaskSpec, env: gym.Env, seed: int = 0) -> Policy:
    """Build the policy named on the command line for ``task``; ``env`` supplies spaces and maps."""
    if name == "expert":
        from lam_robot.experts import make_expert

        try:
            return make_expert(task.expert, env)
        except ValueError as exc:
            raise LamRobotError(f"task {task.name!r}: {exc}") from exc
    if name == "play":
        from lam_robot.experts import make_expert
        from lam_robot.experts.play import PlayPolicy

        goal_keys = task.require_goals("play data (--source play)")
        try:
            expert = make_expert(task.expert, env)
        except ValueError as exc:
            raise LamRobotError(f"task {task.name!r}: play data needs its expert: {exc}") from exc
        return PlayPolicy(expert, task.make_env(), goal_keys)
    if name == "random":
        return RandomPolicy(cast(gym.spaces.Box, env.action_space), seed=seed)
    if name.removeprefix("policy:").endswith(".zip"):
        from lam_robot.policy.sb3_bridge import load_ppo
        from lam_robot.train.sac_files import is_sac_zip, load_sac

        path = name.removeprefix("policy:")
        return load_sac(path, task, env) if is_sac_zip(path) else load_ppo(path, task, env)
    if name.startswith("policy:") or Path(name).is_dir():
        from lam_robot.policy.loading import load

        return load(name.removeprefix("policy:"), task, seed=seed)
    if name.startswith("py:"):
        obj = import_object(name[3:])
        if isinstance(obj, type):
            obj = obj.from_env(env) if hasattr(obj, "from_env") else obj()
        if hasattr(obj, "predict"):
            return obj
        if callable(obj):
            return CallablePolicy(obj)
        raise LamRobotError(f"{name} is neither an object with predict(obs) nor a callable obs -> action")
    raise LamRobotError(f"unknown policy {name!r}; use {POLICY_HELP}")


def load_policy(name: str, task: TaskSpec | str | None = None, seed: int = 0) -> Policy:
    """Any policy by name: a checkpoint directory (Transformer or MLP baseline), RUN/ppo.zip or RUN/sac.zip, ``expert``,
    ``random`` or ``py:module:attr``; ``task`` (a spec or its name) defaults to a checkpoint's own task."""
    from lam_robot.tasks import load_task

    if isinstance(task, str):
        task = load_task(task)
    if task is None:
        task = _saved_task(name)
    env = task.make_env()
    try:
        return resolve_policy(name, task, env, seed=seed)
    finally:
        env.close()


def _saved_task(name: str) -> TaskSpec:
    from lam_robot.policy.checkpoint import CONFIG, read_json

    directory = Path(name.removeprefix("policy:"))
    if directory.suffix == ".zip":  # RUN/ppo.zip (sac.zip) sits beside RUN's BC-format checkpoint
        directory = directory.parent
    if not (directory / CONFIG).is_file():
        raise LamRobotError(f"policy {name!r} has no task of its own; give the task to run it in")
    return TaskSpec.from_dict(read_json(directory / CONFIG, "checkpoint config")["task"], origin=str(directory))
