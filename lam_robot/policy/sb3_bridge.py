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

The policy's ``predict`` also takes the env's own dict observation (single or batched) and then
keeps each env's history itself, so ``PPO.load("RUN/ppo.zip").predict(env_obs)`` acts like the
BC-format checkpoint of the same run; ``load_ppo`` opens such a file without unpickling anything.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, NamedTuple, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from lam_robot.errors import LamRobotError
from lam_robot.policy.history import History, HistoryKeeper, normalise
from lam_robot.policy.network import TransformerBody, TransformerConfig, TransformerPolicyNet, masked_nll
from lam_robot.tasks import TaskSpec, require_fit, space_size


class HistoryObservation(gym.Wrapper):
    """Observation = (K, obs_dim + 1): the last K policy observations (oldest first, zeros before the
    episode start) with a last column that is 1 on real rows."""

    def __init__(self, env: gym.Env, task: TaskSpec, context: int) -> None:
        super().__init__(env)
        self.task = task
        space = cast(gym.spaces.Dict, env.observation_space)
        dim = sum(space_size(space[k]) for k in task.policy_obs_keys)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(context, dim + 1), dtype=np.float32)
        self._empty = History.empty(1, context, dim).to_box()[0]
        self._box = self._empty

    def _push(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        # History.push then to_box, in place of their rolls and concatenation: the same float32 values.
        box = np.empty_like(self._box)
        box[:-1] = self._box[1:]
        box[-1, :-1] = self.task.flat_obs(obs)
        box[-1, -1] = 1.0
        self._box = box
        return box.copy()  # the caller may write into what it gets; the next push reads self._box

    def reset(self, **kwargs: Any):
        """Reset the env and start the history afresh."""
        obs, info = self.env.reset(**kwargs)
        self._box = self._empty
        return self._push(obs), info

    def step(self, action):
        """Step the env and push the new observation onto the history."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._push(obs), reward, terminated, truncated, info


class HistoryFeatures(BaseFeaturesExtractor):
    """History -> [Transformer feature at the newest step, normalised newest observation]."""

    obs_mean: torch.Tensor
    obs_std: torch.Tensor

    def __init__(
        self, observation_space: gym.spaces.Box, network: dict[str, Any], obs_mean: list[float], obs_std: list[float]
    ) -> None:
        config = TransformerConfig(**network)
        super().__init__(observation_space, features_dim=config.d_model + config.obs_dim)
        self.body = TransformerBody(config)
        self.register_buffer("obs_mean", torch.tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(obs_std, dtype=torch.float32))

    def normalise(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, obs_dim + 1) history -> normalised observations and validity (the BC policy's routine)."""
        valid = history[..., -1] > 0.5
        return normalise(history[..., :-1], valid, self.obs_mean, self.obs_std), valid

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """[Transformer feature at the newest step, normalised newest observation]."""
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
        """Actor and critic latents."""
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        """The actor latent: the Transformer feature as is."""
        return features[:, : self.d_model]

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        """The critic latent, on a detached feature so value gradients never reach the body."""
        return self.critic(torch.cat([features[:, : self.d_model].detach(), features[:, self.d_model :]], dim=-1))


class TransformerActorCriticPolicy(ActorCriticPolicy):
    """PPO policy whose actor is the BC Transformer. Its constructor arguments are plain data (no
    paths), so a saved model opens with plain ``PPO.load`` wherever lam_robot is installed."""

    features_extractor: HistoryFeatures

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
        self.obs_keys: tuple[str, ...] = tuple(
            str(k) for k in normalizer.get("obs_keys", ())
        )  # absent in files saved before predict took dicts
        self._histories = HistoryKeeper(network["context"], network["obs_dim"])
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
        # SB3 types this slot as its MlpExtractor; SplitLatents offers the same interface.
        self.mlp_extractor = SplitLatents(  # type: ignore[assignment]
            self.network["d_model"], self.network["obs_dim"], self.value_hidden
        )

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        # Two parameter groups, so the actor can learn slower than the fresh critic (see FinetunePPO).
        actor_ids = {id(p) for p in self.actor_parameters()}
        critic = [p for p in self.parameters() if id(p) not in actor_ids]
        # SB3 types optimizer_class as the bare Optimizer base, whose __init__ takes no lr.
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
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

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SB3's forward; without gradients (rollout collection) under inference mode, which skips autograd's
        bookkeeping: the same outputs, ~10% faster on small batches."""
        if torch.is_grad_enabled():
            return super().forward(obs, deterministic)
        with torch.inference_mode():
            return super().forward(obs, deterministic)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """SB3's predict; it also takes the env's own dict observation (one, or a batch of (n, ...) arrays).

        A history observation (the ``HistoryObservation`` Box) behaves as in SB3. For a dict
        observation the policy builds the history itself: ``state`` is what the previous call
        returned (a ``History``), as SB3's ``evaluate_policy`` passes it back; with ``state=None``
        the policy continues the history it keeps across calls. ``episode_start`` (or
        ``reset_history()``) starts an env's history afresh; a new batch size starts all afresh.
        """
        if not isinstance(observation, dict):
            return super().predict(observation, state, episode_start, deterministic)
        if not self.obs_keys:
            raise LamRobotError(
                "this PPO model predates dict observations (no obs_keys saved); open it with "
                "lam_robot.policy.sb3_bridge.load_ppo(path, task) or pass the HistoryObservation array"
            )
        missing = [k for k in self.obs_keys if k not in observation]
        if missing:
            raise LamRobotError(f"the observation has no key(s) {', '.join(missing)} (it has {', '.join(observation)})")
        flat = np.concatenate([np.asarray(observation[k], dtype=np.float64) for k in self.obs_keys], axis=-1)
        single = flat.ndim == 1
        history = self._histories.step(flat.reshape(-1, flat.shape[-1]), state, episode_start)
        actions, _ = super().predict(history.to_box(), None, None, deterministic)
        return (actions[0] if single else actions), history

    def reset_history(self) -> None:
        """Forget the history kept for callers of ``predict`` that do not pass ``state`` back."""
        self._histories.reset()

    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters that came from BC: body, mean head and log-std."""
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


class ZipHeader(NamedTuple):
    """The plain (JSON) entries of a lam-robot fine-tuning model that loading it needs."""

    data: dict[str, Any]
    context: int
    obs_dim: int
    low: np.ndarray
    high: np.ndarray


def read_zip_header(path: Path, algo: str) -> ZipHeader:
    """The JSON ``data`` entry of an SB3 ``.zip`` written by ``finetune --algo ALGO``, read without unpickling."""
    if not path.is_file():
        raise LamRobotError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
        kwargs = data["policy_kwargs"]
        network, normalizer = kwargs["network"], kwargs["normalizer"]
        low, high = (np.asarray(normalizer[k], np.float32) for k in ("act_low", "act_high"))
        return ZipHeader(data, int(network["context"]), int(network["obs_dim"]), low, high)
    except (zipfile.BadZipFile, KeyError, TypeError, ValueError) as exc:  # JSON errors are ValueErrors
        raise LamRobotError(
            f"{path} is not a {algo.upper()} model from lam-robot finetune ({type(exc).__name__}: {exc})"
        ) from exc


def load_ppo(path: str | Path, task: TaskSpec | None = None, env: gym.Env | None = None) -> PPO:
    """A lam-robot fine-tuning ``ppo.zip`` opened by SB3's ``PPO.load`` on the CPU without unpickling,
    checked against ``task`` (whose env, or ``env``, gives the sizes) if given."""
    path = Path(path)
    data, context, obs_dim, low, high = read_zip_header(path, "ppo")
    # SB3 pickles classes, spaces, schedules and buffers into the file. Those that inference needs
    # are rebuilt from the plain entries instead, the others left out, so loading runs no code from it.
    rebuilt: dict[str, Any] = {
        "policy_class": TransformerActorCriticPolicy,
        "observation_space": gym.spaces.Box(-np.inf, np.inf, shape=(context, obs_dim + 1), dtype=np.float32),
        "action_space": gym.spaces.Box(low, high, dtype=np.float32),
        "clip_range": 0.2,  # training only; PPO.load needs a value
    }
    pickled = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    try:
        model = PPO.load(path, device="cpu", custom_objects={k: rebuilt.get(k) for k in pickled})
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise LamRobotError(f"{path} is corrupt or not a lam-robot PPO model ({reason})") from exc
    if task is not None:
        _check_task(cast(TransformerActorCriticPolicy, model.policy), path, task, env)
    return model


def _check_task(policy: TransformerActorCriticPolicy, path: Path, task: TaskSpec, env: gym.Env | None) -> None:
    """Refuse a task whose observation or action size differs from the model's; fill in old files' keys."""
    keys = policy.obs_keys or task.policy_obs_keys
    probe = env if env is not None else task.make_env()
    try:
        require_fit(f"{path} was trained", keys, policy.network["obs_dim"], policy.network["act_dim"], task, probe)
    finally:
        if env is None:
            probe.close()
    policy.obs_keys = tuple(keys)
