"""Causal Transformer over the last K observations, ending in a diagonal Gaussian over actions.

The log-std is a state-independent parameter, as in SB3's DiagGaussianDistribution, so the
same network can become the actor of an SB3 PPO policy without changing its outputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch
from torch import nn

from lam_robot.config import BCConfig
from lam_robot.errors import LamRobotError


@dataclasses.dataclass
class TransformerConfig:
    """Shape of the policy network."""

    obs_dim: int
    """Size of the concatenated policy observation."""
    act_dim: int
    """Size of the action."""
    context: int = 10
    """K: how many recent observations the policy sees (steps before the episode start are masked)."""
    d_model: int = 128
    """Width of the token embeddings."""
    n_layers: int = 3
    """Transformer encoder layers."""
    n_heads: int = 4
    """Attention heads; must divide d_model."""
    dropout: float = 0.1
    """Dropout in attention and feed-forward layers during training."""
    init_log_std: float = -1.0
    """Initial log standard deviation of the action Gaussian (normalised action units)."""

    def __post_init__(self) -> None:
        for name in ("obs_dim", "act_dim", "context", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) <= 0:
                raise LamRobotError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise LamRobotError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if not 0.0 <= self.dropout < 1.0:
            raise LamRobotError(f"dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def for_bc(cls, config: BCConfig, obs_dim: int, act_dim: int) -> TransformerConfig:
        """The network a behaviour-cloning run's settings describe, for these sizes."""
        return cls(
            obs_dim=obs_dim,
            act_dim=act_dim,
            context=config.context,
            d_model=config.d_model,
            n_layers=config.n_layers,
            n_heads=config.n_heads,
            dropout=config.dropout,
            init_log_std=config.init_log_std,
        )


class TransformerBody(nn.Module):
    """(B, K, obs_dim) normalised observations + (B, K) validity -> (B, K, d_model) features."""

    causal: torch.Tensor

    def __init__(self, config: TransformerConfig, with_embed: bool = True) -> None:
        super().__init__()
        self.config = config
        # A multi-task trunk has no embedding of its own: each task family's adapter brings one.
        self.embed: nn.Module = nn.Linear(config.obs_dim, config.d_model) if with_embed else nn.Identity()
        self.position = nn.Parameter(torch.zeros(config.context, config.d_model))
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.n_heads,
            dim_feedforward=4 * config.d_model,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model)
        nn.init.normal_(self.position, std=0.02)
        causal = torch.triu(torch.ones(config.context, config.context, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Position t sees the valid positions <= t."""
        return self.encode(self.embed(obs), valid)

    def encode(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, K, d_model) embedded observations -> features: the trunk a multi-task net shares."""
        x, mask = self._tokens(tokens, valid)
        return self.norm(self.encoder(x, mask=mask))

    def forward_last(self, obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, d_model): ``forward(obs, valid)[:, -1]`` computed for the newest position only in the last
        layer (its other outputs feed nothing), which makes a PPO update about a third cheaper."""
        x, mask = self._tokens(self.embed(obs), valid)
        *lower, last = self.encoder.layers
        for layer in lower:
            x = layer(x, src_mask=mask)
        # The last norm_first encoder layer, for one query: x + attention(norm1(x)), then + MLP(norm2(.)).
        h = last.norm1(x)
        y = x[:, -1:] + last.dropout1(last.self_attn(h[:, -1:], h, h, attn_mask=mask[:, -1:], need_weights=False)[0])
        y = y + last.dropout2(last.linear2(last.dropout(last.activation(last.linear1(last.norm2(y))))))
        return self.norm(y)[:, 0]

    def _tokens(self, tokens: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings plus positions, and the (B * heads, K, K) additive attention mask."""
        k = tokens.shape[1]
        x = tokens + self.position[-k:]
        # Padding is masked as a key; a padded query still sees itself, so no row is all-masked.
        blocked = self.causal[:k, :k] | ~valid[:, None, :]
        blocked = blocked & ~torch.eye(k, dtype=torch.bool, device=tokens.device)
        mask = torch.zeros(blocked.shape, dtype=tokens.dtype, device=tokens.device).masked_fill(blocked, -math.inf)
        return x, mask.repeat_interleave(self.config.n_heads, dim=0)


class TransformerPolicyNet(nn.Module):
    """The body plus a linear head for the action mean and a state-independent log-std."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.body = TransformerBody(config)
        self.mean_head = nn.Linear(config.d_model, config.act_dim)
        self.log_std = nn.Parameter(torch.full((config.act_dim,), config.init_log_std))
        nn.init.zeros_(self.mean_head.bias)
        nn.init.normal_(self.mean_head.weight, std=0.01)

    def features(self, obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, K, d_model) Transformer features."""
        return self.body(obs, valid)

    def forward(self, obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, K, act_dim) action means, one per position."""
        return self.mean_head(self.body(obs, valid))

    def last_mean(self, obs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The action mean at the newest position: what the policy acts on. Computed by
        ``forward_last``, the path of the PPO actor, so BC inference and the actor agree exactly."""
        return self.mean_head(self.body.forward_last(obs, valid))


class TaskAdapter(nn.Module):
    """A task family's own layers around the shared trunk: observation embedding, action-mean head, log-std."""

    def __init__(self, config: TransformerConfig, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.embed = nn.Linear(obs_dim, config.d_model)
        self.mean_head = nn.Linear(config.d_model, act_dim)
        self.log_std = nn.Parameter(torch.full((act_dim,), config.init_log_std))
        nn.init.zeros_(self.mean_head.bias)
        nn.init.normal_(self.mean_head.weight, std=0.01)


class MultiTaskPolicyNet(nn.Module):
    """One Transformer trunk (positions, encoder, final norm: ``body.*``) shared by several task families,
    each with its own ``TaskAdapter`` (``adapters.<name>.*``), so tasks whose observation or action sizes
    differ train together. ``task_net(name)`` is the single-task ``TransformerPolicyNet`` of one adapter,
    sharing these parameters, which every policy, the PPO bridge and SAC take as they are.
    ``config`` is the trunk's settings with the first adapter's sizes."""

    def __init__(self, config: TransformerConfig, sizes: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        if not sizes:
            raise LamRobotError("a multi-task network needs at least one adapter")
        self.config = config
        self.body = TransformerBody(config, with_embed=False)
        self.adapters = nn.ModuleDict({name: TaskAdapter(config, o, a) for name, (o, a) in sizes.items()})
        self.max_act = max(a for _, a in sizes.values())

    @property
    def sizes(self) -> dict[str, tuple[int, int]]:
        """Adapter name -> (observation size, action size), in adapter order."""
        return {name: (a.obs_dim, a.act_dim) for name, a in self._adapters()}

    def _adapters(self) -> list[tuple[str, TaskAdapter]]:
        return [(name, cast(TaskAdapter, a)) for name, a in self.adapters.items()]

    def forward(
        self, obs: torch.Tensor, valid: torch.Tensor, adapter: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of several tasks in one batch: (B, K, max_obs) observations zero-padded on the right, (B, K)
        validity, (B,) adapter index of each row. Returns (B, K, max_act) action means, (B, max_act) log-stds
        and the (B, max_act) mask of each row's real action dims (padding dims are zero)."""
        batch, k = obs.shape[:2]
        tokens = obs.new_zeros(batch, k, self.config.d_model)
        # Every adapter runs, on zero rows if need be, so each parameter takes part (DDP expects that).
        for i, (_, a) in enumerate(self._adapters()):
            rows = adapter == i
            tokens = tokens.index_put((rows,), a.embed(obs[rows][..., : a.obs_dim]))
        features = self.body.encode(tokens, valid)
        mean = obs.new_zeros(batch, k, self.max_act)
        log_std = obs.new_zeros(batch, self.max_act)
        dims = torch.zeros(batch, self.max_act, dtype=torch.bool, device=obs.device)
        for i, (_, a) in enumerate(self._adapters()):
            rows = adapter == i
            pad = self.max_act - a.act_dim
            mean = mean.index_put((rows,), nn.functional.pad(a.mean_head(features[rows]), (0, pad)))
            count = int(rows.sum())
            log_std = log_std.index_put((rows,), nn.functional.pad(a.log_std, (0, pad)).expand(count, -1))
            dims[rows, : a.act_dim] = True
        return mean, log_std, dims

    def task_net(self, name: str) -> TransformerPolicyNet:
        """The single-task network of adapter ``name``: its state-dict keys are a single-task checkpoint's,
        and its parameters are this net's own (training one trains the other)."""
        a = cast(TaskAdapter, self.adapters[name])
        net = TransformerPolicyNet(dataclasses.replace(self.config, obs_dim=a.obs_dim, act_dim=a.act_dim))
        net.body.embed = a.embed
        net.body.position = self.body.position
        net.body.encoder = self.body.encoder
        net.body.norm = self.body.norm
        net.mean_head = a.mean_head
        net.log_std = a.log_std
        return net.train(self.training)


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-position negative log-likelihood of a diagonal Gaussian, summed over action dims."""
    z = (target - mean) * torch.exp(-log_std)
    return (0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)


def masked_mean(per_step: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of a per-position loss over the labelled positions only (padding and a policy's own steps out)."""
    weights = labels.to(per_step.dtype)
    return (per_step * weights).sum() / weights.sum()


def masked_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gaussian NLL averaged over the labelled positions: BC's loss and fine-tuning's BC regulariser."""
    return masked_mean(gaussian_nll(mean, log_std, target), labels)
