"""The BC Transformer as the actor of a Stable-Baselines3 PPO policy, with a fresh critic.

Envs are wrapped in ``HistoryObservation``, whose Box observation holds each env's last K
raw policy observations plus a validity column, so SB3's VecEnvs, rollout buffer and
``predict`` work unchanged. ``TransformerActorCriticPolicy`` subclasses SB3's
ActorCriticPolicy: the features extractor normalises the history and runs the Transformer
body; the actor latent is the newest position's feature and SB3's own ``action_net`` and
``log_std`` receive the BC mean head and log-std, so the deterministic action at the start
of fine-tuning is the BC action. The critic is a fresh MLP on the newest normalised
observation and the (detached) Transformer feature, so value-loss gradients never reach
the pretrained body.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from lam_robot.policy.network import TransformerBody, TransformerConfig, TransformerPolicyNet, masked_nll
from lam_robot.tasks import TaskSpec


class HistoryObservation(gym.Wrapper):
    """Observation = (K, obs_dim + 1): the last K policy observations (oldest first, zeros before the
    episode start) with a last column that is 1 on real rows."""

    def __init__(self, env: gym.Env, task: TaskSpec, context: int) -> None:
        super().__init__(env)
        self.task = task
        dim = int(sum(np.prod(env.observation_space[k].shape) for k in task.policy_obs_keys))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(context, dim + 1), dtype=np.float32)
        self._history = np.zeros((context, dim + 1), np.float32)

    def _push(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._history = np.roll(self._history, -1, axis=0)
        self._history[-1, :-1] = self.task.flat_obs(obs)
        self._history[-1, -1] = 1.0
        return self._history.copy()

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._history[:] = 0.0
        return self._push(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._push(obs), reward, terminated, truncated, info


class HistoryFeatures(BaseFeaturesExtractor):
    """History -> [Transformer feature at the newest step, normalised newest observation]."""

    def __init__(
        self, observation_space: gym.spaces.Box, network: dict[str, Any], obs_mean: list[float], obs_std: list[float]
    ) -> None:
        config = TransformerConfig(**network)
        super().__init__(observation_space, features_dim=config.d_model + config.obs_dim)
        self.body = TransformerBody(config)
        self.register_buffer("obs_mean", torch.tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(obs_std, dtype=torch.float32))

    def normalise(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = history[..., -1] > 0.5
        x = (history[..., :-1] - self.obs_mean) / self.obs_std
        return x * valid[..., None], valid  # padding rows are zeros in normalised space, as in BC training

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        x, valid = self.normalise(history)
        return torch.cat([self.body.forward_last(x, valid), x[:, -1]], dim=-1)


class SplitLatents(nn.Module):
    """SB3's mlp_extractor slot: the actor latent is the Transformer feature as is; the critic is fresh."""

    def __init__(self, d_model: int, obs_dim: int, value_hidden: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.latent_dim_pi = d_model
        self.latent_dim_vf = value_hidden
        self.critic = nn.Sequential(
            nn.Linear(d_model + obs_dim, value_hidden), nn.Tanh(), nn.Linear(value_hidden, value_hidden), nn.Tanh()
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, : self.d_model]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.critic(torch.cat([features[:, : self.d_model].detach(), features[:, self.d_model :]], dim=-1))


class TransformerActorCriticPolicy(ActorCriticPolicy):
    """PPO policy whose actor is the BC Transformer. Its constructor arguments are plain data (no
    paths), so a saved model opens with plain ``PPO.load`` wherever lam_robot is installed."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        lr_schedule,
        network: dict[str, Any],
        normalizer: dict[str, list[float]],
        value_hidden: int = 256,
        actor_lr_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self.network = dict(network)
        self.normalizer = normalizer
        self.value_hidden = value_hidden
        self.actor_lr_scale = actor_lr_scale
        kwargs.update(
            features_extractor_class=HistoryFeatures,
            share_features_extractor=True,
            ortho_init=False,
            features_extractor_kwargs={
                "network": self.network,
                "obs_mean": normalizer["obs_mean"],
                "obs_std": normalizer["obs_std"],
            },
            log_std_init=float(network.get("init_log_std", 0.0)),
        )
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = SplitLatents(self.network["d_model"], self.network["obs_dim"], self.value_hidden)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        # Two parameter groups, so the actor can learn slower than the fresh critic (see FinetunePPO).
        actor_ids = {id(p) for p in self.actor_parameters()}
        critic = [p for p in self.parameters() if id(p) not in actor_ids]
        self.optimizer = self.optimizer_class(
            [
                {"params": list(self.actor_parameters()), "lr_scale": self.actor_lr_scale},
                {"params": critic, "lr_scale": 1.0},
            ],
            lr=lr_schedule(1),
            **self.optimizer_kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in (
            "features_extractor_class",
            "features_extractor_kwargs",
            "share_features_extractor",
            "ortho_init",
            "log_std_init",
        ):
            data.pop(key, None)  # set by __init__ itself
        data.update(
            network=self.network,
            normalizer=self.normalizer,
            value_hidden=self.value_hidden,
            actor_lr_scale=self.actor_lr_scale,
        )
        return data

    def actor_parameters(self) -> list[nn.Parameter]:
        return [*self.features_extractor.body.parameters(), *self.action_net.parameters(), self.log_std]

    def load_bc(self, net: TransformerPolicyNet, log_std: float | None = None) -> None:
        """Copy the BC network into the actor; ``log_std`` overrides the BC log-std if given."""
        self.features_extractor.body.load_state_dict(net.body.state_dict())
        self.action_net.load_state_dict(net.mean_head.state_dict())
        with torch.no_grad():
            self.log_std.copy_(net.log_std if log_std is None else torch.full_like(self.log_std, log_std))

    def to_bc_net(self) -> TransformerPolicyNet:
        """A standalone copy of the actor as a BC network (for evaluation and BC-format checkpoints)."""
        net = TransformerPolicyNet(TransformerConfig(**self.network))
        net.body.load_state_dict(self.features_extractor.body.state_dict())
        net.mean_head.load_state_dict(self.action_net.state_dict())
        with torch.no_grad():
            net.log_std.copy_(self.log_std)
        return net.eval()

    def bc_nll(
        self, obs: torch.Tensor, valid: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Gaussian NLL of demo actions under the actor, on windows already normalised (BC regulariser)."""
        mean = self.action_net(self.features_extractor.body(obs, valid))
        return masked_nll(mean, self.log_std, actions, labels)
