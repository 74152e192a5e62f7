"""The checkpoint format of the MLP baselines (`lam-robot baseline`): an SB3 ActorCriticPolicy's
weights in safetensors plus config.json with ``kind`` = ``sb3-mlp``; beside the Transformer's
format in checkpoint.py. Observations are flattened as gymnasium's FlattenObservation does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import FlattenObservation
from safetensors.torch import load_file, save_file
from stable_baselines3.common.policies import ActorCriticPolicy

from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import CONFIG, WEIGHTS, package_versions, read_json, write_json
from lam_robot.rollout import Obs
from lam_robot.tasks import TaskSpec

MLP_KIND = "sb3-mlp"


def flat_env(task: TaskSpec) -> gym.Env:
    """The task's env with its Dict observation flattened (keys sorted)."""
    return FlattenObservation(task.make_env())


def unflatten(space: gym.spaces.Dict, flat: np.ndarray) -> Obs:
    """Flat rows back into a batched dict observation."""
    rows = [gym.spaces.unflatten(space, row) for row in np.atleast_2d(flat)]
    return {k: np.stack([row[k] for row in rows]) for k in space.keys()}


class MlpPolicy:
    """An SB3 MLP policy from a baseline run, behind our predict protocol (dict observations)."""

    def __init__(self, policy: ActorCriticPolicy, task: TaskSpec, dict_space: gym.spaces.Dict) -> None:
        self.policy = policy.eval()
        self.task = task
        self.dict_space = dict_space

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """SB3's predict on our dict observations, flattened as the baseline was trained."""
        single = next(iter(obs.values())).ndim == 1
        batch = {k: np.atleast_2d(obs[k]) for k in self.dict_space.keys()}
        flat = np.concatenate([batch[k].reshape(len(batch[k]), -1) for k in self.dict_space.keys()], axis=1)
        action, _ = self.policy.predict(flat.astype(np.float32), deterministic=deterministic)
        return (action[0] if single else action), state


def save_mlp(directory: Path, policy: ActorCriticPolicy, task: TaskSpec, algo: str, extra: dict[str, Any]) -> None:
    """Write an MLP baseline checkpoint: safetensors weights and config.json with its kind."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(directory / WEIGHTS))
    write_json(
        directory / CONFIG,
        {
            "format_version": 1,
            "kind": MLP_KIND,
            "algo": algo,
            "net_arch": policy.net_arch,
            "activation": policy.activation_fn.__name__,
            "task": task.to_dict(),
            "versions": dict(package_versions()),
            **extra,
        },
    )


def load_mlp(directory: Path, task: TaskSpec | None = None) -> MlpPolicy:
    """Open an MLP baseline checkpoint for ``task`` (default: the task it was trained on)."""
    config = read_json(Path(directory) / CONFIG, "checkpoint config")
    saved_task = TaskSpec.from_dict(config["task"], origin=str(directory))
    task = task or saved_task
    env = task.make_env()
    dict_space, action_space = cast(gym.spaces.Dict, env.observation_space), env.action_space
    env.close()
    flat_space = gym.spaces.flatten_space(dict_space)
    policy = ActorCriticPolicy(
        flat_space,
        action_space,
        lambda _: 0.0,
        net_arch=config["net_arch"],
        activation_fn=getattr(torch.nn, config.get("activation", "Tanh")),
    )
    try:
        policy.load_state_dict(load_file(str(Path(directory) / WEIGHTS)))
    except (RuntimeError, OSError, ValueError) as exc:
        raise LamRobotError(
            f"{directory} does not fit task {task.name!r} (trained on {saved_task.name!r}) or is "
            f"corrupt: {str(exc).splitlines()[0][:160]}"
        ) from exc
    return MlpPolicy(policy, task, dict_space)
