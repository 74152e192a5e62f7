"""A trained Transformer policy behind SB3's predict protocol, keeping each env's history in ``state``
(or, for callers that do not pass ``state`` back, in the policy itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lam_robot.policy.checkpoint import Checkpoint, Normalizer, load_checkpoint
from lam_robot.policy.history import History, HistoryKeeper, normalise
from lam_robot.policy.network import TransformerPolicyNet
from lam_robot.rollout import Obs
from lam_robot.tasks import TaskSpec, require_fit


class TransformerPolicy:
    """Acts on the last K observations of each env; ``state`` (or the policy itself) carries those histories."""

    def __init__(self, net: TransformerPolicyNet, normalizer: Normalizer, task: TaskSpec, seed: int = 0) -> None:
        self.net = net
        self.normalizer = normalizer
        self.task = task
        self.context = net.config.context
        self._generator = torch.Generator().manual_seed(seed)
        self._histories = HistoryKeeper(self.context, net.config.obs_dim)
        # Float32 tensors, as in the PPO features extractor, so both normalise identically.
        self.obs_mean = torch.as_tensor(normalizer.obs_mean, dtype=torch.float32)
        self.obs_std = torch.as_tensor(normalizer.obs_std, dtype=torch.float32)

    @classmethod
    def load(cls, directory: str | Path, seed: int = 0, task: TaskSpec | None = None) -> TransformerPolicy:
        """The policy in a checkpoint directory written by train-bc, finetune or dagger; of a multi-task
        checkpoint, the adapter for ``task`` (default: its first task)."""
        ckpt: Checkpoint = load_checkpoint(directory, task)
        return cls(ckpt.net, ckpt.normalizer, ckpt.task, seed=seed)

    def check_env(self, task: TaskSpec, env: gym.Env) -> None:
        """Refuse a task whose observation or action size differs from the checkpoint's."""
        config = self.net.config
        require_fit(
            f"the policy was trained on {self.task.name!r}",
            self.task.policy_obs_keys,
            config.obs_dim,
            config.act_dim,
            task,
            env,
        )

    def reset_history(self) -> None:
        """Forget the history kept for callers that do not pass ``state`` (as a new episode would)."""
        self._histories.reset()

    @torch.no_grad()
    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, History]:
        """Actions for one observation or a batch (dict of (n, ...) arrays), and the new histories.

        ``state`` is what the previous call returned (a ``History``); pass it back, with
        ``episode_start`` flagging envs that just reset, as SB3's ``evaluate_policy`` and
        ``run_episodes`` do. With ``state=None`` the policy continues the history it keeps itself
        across calls, so ``predict(obs)`` in a plain loop sees the last K steps too: pass
        ``episode_start`` (or call ``reset_history()``) when an episode starts. A new batch size starts
        fresh histories.
        """
        flat = self.task.flat_obs(obs)
        single = flat.ndim == 1
        history = self._histories.step(flat.reshape(-1, flat.shape[-1]), state, episode_start)
        x = normalise(torch.from_numpy(history.obs), torch.from_numpy(history.valid), self.obs_mean, self.obs_std)
        mean = self.net.last_mean(x, torch.from_numpy(history.valid))
        if not deterministic:
            mean = mean + self.net.log_std.exp() * torch.randn(mean.shape, generator=self._generator)
        action = np.clip(
            self.normalizer.action_from_unit(mean.numpy()), self.normalizer.act_low, self.normalizer.act_high
        ).astype(np.float32)
        return (action[0] if single else action), history
