"""A trained Transformer policy behind SB3's predict protocol, keeping each env's history in ``state``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import Checkpoint, Normalizer, load_checkpoint
from lam_robot.policy.network import TransformerPolicyNet
from lam_robot.rollout import Obs
from lam_robot.tasks import TaskSpec, space_size

History = tuple[np.ndarray, np.ndarray]  # (n, K, obs_dim) normalised observations, (n, K) validity


class TransformerPolicy:
    """Acts on the last K observations of each env; ``state`` carries those histories between calls."""

    def __init__(self, net: TransformerPolicyNet, normalizer: Normalizer, task: TaskSpec, seed: int = 0) -> None:
        self.net = net
        self.normalizer = normalizer
        self.task = task
        self.context = net.config.context
        self._generator = torch.Generator().manual_seed(seed)

    @classmethod
    def load(cls, directory: str | Path, seed: int = 0) -> TransformerPolicy:
        ckpt: Checkpoint = load_checkpoint(directory)
        return cls(ckpt.net, ckpt.normalizer, ckpt.task, seed=seed)

    def check_env(self, task: TaskSpec, env: gym.Env) -> None:
        """Refuse a task whose observation or action size differs from the checkpoint's."""
        space = env.observation_space
        missing = [k for k in self.task.policy_obs_keys if k not in space.keys()]
        if missing:
            raise LamRobotError(
                f"the policy (trained on {self.task.name!r}) needs observation key(s) "
                f"{', '.join(missing)}, which task {task.name!r} lacks"
            )
        obs_size = sum(space_size(space[k]) for k in self.task.policy_obs_keys)
        if obs_size != self.net.config.obs_dim:
            raise LamRobotError(
                f"the policy was trained on {self.task.name!r} with observation size "
                f"{self.net.config.obs_dim}, but task {task.name!r} gives {obs_size}"
            )
        act_size = space_size(env.action_space)
        if act_size != self.net.config.act_dim:
            raise LamRobotError(
                f"the policy was trained on {self.task.name!r} with action size "
                f"{self.net.config.act_dim}, but task {task.name!r} takes {act_size}"
            )

    def initial_state(self, n: int) -> History:
        return (np.zeros((n, self.context, self.net.config.obs_dim), np.float32), np.zeros((n, self.context), bool))

    def push(self, obs: Obs, state: History | None, episode_start: np.ndarray | None) -> tuple[History, bool]:
        """Append this step's observations to each env's history (cleared where an episode starts)."""
        flat = self.normalizer.obs(self.task.flat_obs(obs))
        single = flat.ndim == 1
        flat = flat.reshape(-1, flat.shape[-1])
        n = flat.shape[0]
        if state is None or state[0].shape[0] != n:
            history, valid = self.initial_state(n)
        else:
            history, valid = np.roll(state[0], -1, axis=1), np.roll(state[1], -1, axis=1)
        if episode_start is not None:
            restart = np.asarray(episode_start, bool).reshape(-1)
            history[restart] = 0.0
            valid[restart] = False
        history[:, -1] = flat
        valid[:, -1] = True
        return (history, valid), single

    @torch.no_grad()
    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, History]:
        (history, valid), single = self.push(obs, state, episode_start)
        mean = self.net.last_mean(torch.from_numpy(history), torch.from_numpy(valid))
        if not deterministic:
            mean = mean + self.net.log_std.exp() * torch.randn(mean.shape, generator=self._generator)
        action = np.clip(
            self.normalizer.action_from_unit(mean.numpy()), self.normalizer.act_low, self.normalizer.act_high
        ).astype(np.float32)
        return (action[0] if single else action), (history, valid)
