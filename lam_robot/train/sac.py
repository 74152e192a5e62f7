"""SAC fine-tuning of a BC Transformer (``finetune --algo sac``), extending Stable-Baselines3 without copying it.

Observations: ``SacHistoryObservation`` gives each env a Dict observation, ``{"observation": the last K
rows of the policy keys other than desired_goal, plus a validity column; "achieved_goal";
"desired_goal"}`` (the goal keys only on goal tasks). The actor's features extractor inserts
``desired_goal`` into every history row at its place among the policy keys before normalising and
running the Transformer, which reproduces the BC network's input exactly (its goal is constant
within an episode) and keeps the goal consistent across the context window when SB3's
``HerReplayBuffer`` relabels it.

Actor: SB3's SAC actor with the BC body as features extractor, no hidden layers, and ``mu`` =
atanh(clamp(BC mean head, +-SQUASH_LIMIT)) with a straight-through clamp. SAC squashes with tanh and
maps [-1, 1] to the env's bounds, exactly as the BC policy maps its normalised mean, so the
deterministic action at step 0 is the BC action with the normalised action clipped to
+-SQUASH_LIMIT (equal wherever |BC mean| <= SQUASH_LIMIT; off by at most 1 - SQUASH_LIMIT of the
half-range elsewhere). The log-std is SB3's state-dependent linear layer, started with zero weights
and the BC log-std as bias. Critics are new: SB3's ContinuousCritic on the newest normalised
observation (goal included).

``FinetuneSAC`` subclasses SB3's SAC: critic-only warm-up for N gradient steps, the actor learning
at a fraction of the critic's rate, batches mixing demo and online transitions (RLPD), and a
decaying BC term (the demo actions' Gaussian NLL, optionally Q-filtered) on the demo half.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.sac.policies import Actor, SACPolicy
from torch import nn

from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import Normalizer
from lam_robot.policy.history import History, normalise
from lam_robot.policy.network import TransformerBody, TransformerConfig, TransformerPolicyNet, gaussian_nll
from lam_robot.tasks import TaskSpec, space_size

GOAL, ACHIEVED = "desired_goal", "achieved_goal"
SQUASH_LIMIT = 0.999
"""The BC mean is clipped to this in normalised units before atanh (finite pre-tanh means)."""
BC_DECAY_EVERY = 1000
"""Gradient steps per factor of --bc-decay."""


def sac_schedule(utd: float, n_envs: int) -> dict[str, Any]:
    """SB3's train_freq and gradient_steps for ``utd`` gradient steps per env step over ``n_envs`` envs
    (each vec-env step collects n_envs transitions)."""
    per_call = utd * n_envs
    if per_call >= 1:
        return {"train_freq": 1, "gradient_steps": max(1, round(per_call))}
    return {"train_freq": max(1, round(1 / per_call)), "gradient_steps": 1}


def goal_layout(task: TaskSpec, env: gym.Env) -> tuple[tuple[str, ...], int | None]:
    """The policy keys kept in the history, and where desired_goal goes in a policy row (None: no goal task)."""
    space = cast(gym.spaces.Dict, env.observation_space)
    goal_task = (
        isinstance(space, gym.spaces.Dict)
        and GOAL in task.policy_obs_keys
        and ACHIEVED in space.spaces
        and GOAL in space.spaces
        and callable(getattr(env.unwrapped, "compute_reward", None))
    )
    if not goal_task:
        return tuple(task.policy_obs_keys), None
    keys = tuple(k for k in task.policy_obs_keys if k != GOAL)
    before = task.policy_obs_keys[: task.policy_obs_keys.index(GOAL)]
    return keys, sum(space_size(space[k]) for k in before)


def check_sac_task(task: TaskSpec, env: gym.Env, her: bool | None) -> bool:
    """One-line errors for what SAC cannot do here; returns whether HER is used."""
    if not isinstance(env.action_space, gym.spaces.Box):
        raise LamRobotError(
            f"--algo sac needs a continuous (Box) action space; task {task.name!r} has {env.action_space}"
        )
    _, goal_at = goal_layout(task, env)
    if her and goal_at is None:
        raise LamRobotError(
            f"--her needs a goal task (observation keys achieved_goal and desired_goal, desired_goal among the "
            f"policy keys, and compute_reward); task {task.name!r} has none: drop --her"
        )
    return goal_at is not None if her is None else her


class SacHistoryObservation(gym.Wrapper):
    """Dict observation: the history of the non-goal policy keys (K rows + validity) and, on goal tasks,
    achieved_goal and desired_goal as the env gives them."""

    def __init__(self, env: gym.Env, task: TaskSpec, context: int) -> None:
        super().__init__(env)
        space = cast(gym.spaces.Dict, env.observation_space)
        self.keys, self.goal_at = goal_layout(task, env)
        dim = sum(space_size(space[k]) for k in self.keys)
        spaces: dict[str, gym.spaces.Space] = {
            "observation": gym.spaces.Box(-np.inf, np.inf, shape=(context, dim + 1), dtype=np.float32)
        }
        if self.goal_at is not None:
            for key in (ACHIEVED, GOAL):
                spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape=(space_size(space[key]),), dtype=np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self._empty = History.empty(1, context, dim)
        self._history = self._empty

    def _convert(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        flat = np.concatenate([np.asarray(obs[k], np.float32).reshape(-1) for k in self.keys])
        self._history = self._history.push(flat[None])
        out = {"observation": self._history.to_box()[0]}
        if self.goal_at is not None:
            out[ACHIEVED] = np.asarray(obs[ACHIEVED], np.float32).reshape(-1)
            out[GOAL] = np.asarray(obs[GOAL], np.float32).reshape(-1)
        return out

    def reset(self, **kwargs: Any):
        """Reset the env and start the history afresh."""
        obs, info = self.env.reset(**kwargs)
        self._history = self._empty
        return self._convert(obs), info

    def step(self, action):
        """Step the env and push the new observation onto the history."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._convert(obs), reward, terminated, truncated, info


def make_sac_env_fn(task: TaskSpec, context: int, seed: int, rank: int):
    """A builder of env ``rank`` for SB3's VecEnvs."""

    def build():
        env = SacHistoryObservation(Monitor(task.make_env()), task, context)
        env.reset(seed=seed + rank)
        env.action_space.seed(seed + rank)
        return env

    return build


def policy_rows(obs: dict[str, torch.Tensor], goal_at: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, obs_dim) raw policy rows (desired_goal inserted in every row) and (B, K) validity."""
    history = obs["observation"]
    valid = history[..., -1] > 0.5
    rows = history[..., :-1]
    if goal_at is not None:
        goal = obs[GOAL][:, None, :].expand(-1, rows.shape[1], -1)
        rows = torch.cat([rows[..., :goal_at], goal, rows[..., goal_at:]], dim=-1)
    return rows, valid


class _Rows(BaseFeaturesExtractor):
    obs_mean: torch.Tensor
    obs_std: torch.Tensor

    def __init__(
        self, observation_space: gym.spaces.Dict, features_dim: int, obs_mean: list[float], obs_std: list[float]
    ) -> None:
        super().__init__(observation_space, features_dim=features_dim)
        self.register_buffer("obs_mean", torch.tensor(obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(obs_std, dtype=torch.float32))

    def normalised(self, obs: dict[str, torch.Tensor], goal_at: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        rows, valid = policy_rows(obs, goal_at)
        return normalise(rows, valid, self.obs_mean, self.obs_std), valid


class TransformerGoalFeatures(_Rows):
    """The actor's features: the BC Transformer's feature at the newest step of the (goal-filled) history."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        network: dict[str, Any],
        obs_mean: list[float],
        obs_std: list[float],
        goal_at: int | None,
    ) -> None:
        config = TransformerConfig(**network)
        super().__init__(observation_space, config.d_model, obs_mean, obs_std)
        self.goal_at = goal_at
        self.body = TransformerBody(config)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, d_model) Transformer feature at the newest position."""
        x, valid = self.normalised(obs, self.goal_at)
        return self.body.forward_last(x, valid)


class NewestObsFeatures(_Rows):
    """The critics' features: the newest normalised policy observation (goal included)."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        network: dict[str, Any],
        obs_mean: list[float],
        obs_std: list[float],
        goal_at: int | None,
    ) -> None:
        super().__init__(observation_space, int(network["obs_dim"]), obs_mean, obs_std)
        self.goal_at = goal_at

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, obs_dim) newest normalised observation."""
        return self.normalised(obs, self.goal_at)[0][:, -1]


class SquashedBCMean(nn.Module):
    """SAC's ``mu``: atanh of the BC mean head clipped to +-SQUASH_LIMIT (straight-through, so the
    composite tanh(mu) has gradient 1 and a clipped mean can still come back)."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.head = head

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Pre-tanh mean whose tanh is the clipped BC mean."""
        mean = self.head(latent)
        clipped = mean + (mean.clamp(-SQUASH_LIMIT, SQUASH_LIMIT) - mean).detach()
        return torch.atanh(clipped)


class TransformerSACPolicy(SACPolicy):
    """SAC policy whose actor is the BC Transformer and whose critics are new MLPs. Its constructor
    arguments are plain data, so ``SAC.load`` opens a saved model wherever lam_robot is installed."""

    actor: Actor

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        lr_schedule,
        network: dict[str, Any],
        normalizer: dict[str, list[float]],
        goal_at: int | None,
        critic_hidden: int = 256,
        **kwargs: Any,
    ) -> None:
        self.network = dict(network)
        self.normalizer = normalizer
        self.goal_at = goal_at
        self.critic_hidden = critic_hidden
        for key in ("net_arch", "features_extractor_class", "features_extractor_kwargs", "share_features_extractor"):
            kwargs.pop(key, None)  # set here (a saved model passes them back)
        kwargs.update(
            net_arch={"pi": [], "qf": [critic_hidden, critic_hidden]},
            features_extractor_class=TransformerGoalFeatures,
            features_extractor_kwargs={
                "network": self.network,
                "obs_mean": normalizer["obs_mean"],
                "obs_std": normalizer["obs_std"],
                "goal_at": goal_at,
            },
            share_features_extractor=False,
        )
        super().__init__(observation_space, cast(gym.spaces.Box, action_space), lr_schedule, **kwargs)

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> Actor:
        """SB3's actor with the BC mean head (through atanh) as ``mu`` and a BC-initialised log-std layer."""
        actor = super().make_actor(features_extractor)
        d_model, act_dim = self.network["d_model"], self.network["act_dim"]
        actor.mu = SquashedBCMean(nn.Linear(d_model, act_dim))
        log_std = nn.Linear(d_model, act_dim)
        nn.init.zeros_(log_std.weight)
        nn.init.constant_(log_std.bias, float(self.network.get("init_log_std", -1.0)))
        actor.log_std = log_std  # type: ignore[assignment]  # a Linear without gSDE
        return actor

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None):
        """SB3's twin critics, on the newest normalised observation."""
        if features_extractor is None:
            features_extractor = NewestObsFeatures(
                cast(gym.spaces.Dict, self.observation_space), **self.features_extractor_kwargs
            )
        return super().make_critic(features_extractor)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for key in ("net_arch", "features_extractor_class", "features_extractor_kwargs", "share_features_extractor"):
            data.pop(key, None)
        data.update(
            network=self.network, normalizer=self.normalizer, goal_at=self.goal_at, critic_hidden=self.critic_hidden
        )
        return data

    @property
    def body(self) -> TransformerBody:
        """The actor's Transformer."""
        return cast(TransformerGoalFeatures, self.actor.features_extractor).body

    @property
    def mean_head(self) -> nn.Linear:
        """The BC mean head inside ``mu``."""
        return cast(SquashedBCMean, self.actor.mu).head

    def load_bc(self, net: TransformerPolicyNet, log_std: float | None = None) -> None:
        """Copy the BC network into the actor; ``log_std`` overrides the BC log-std if given."""
        self.body.load_state_dict(net.body.state_dict())
        self.mean_head.load_state_dict(net.mean_head.state_dict())
        layer = cast(nn.Linear, self.actor.log_std)
        with torch.no_grad():
            layer.weight.zero_()
            layer.bias.copy_(net.log_std if log_std is None else torch.full_like(layer.bias, log_std))

    def to_bc_net(self) -> TransformerPolicyNet:
        """A standalone copy of the actor as a BC network: same deterministic action (the BC policy
        clips its mean as SAC's squashing does); the log-std layer's bias becomes its log-std."""
        net = TransformerPolicyNet(TransformerConfig(**self.network))
        net.body.load_state_dict(self.body.state_dict())
        net.mean_head.load_state_dict(self.mean_head.state_dict())
        with torch.no_grad():
            net.log_std.copy_(cast(nn.Linear, self.actor.log_std).bias)
        return net.eval()

    def mean_log_std(self) -> float:
        """The log-std layer's bias, averaged (for log.csv)."""
        return float(cast(nn.Linear, self.actor.log_std).bias.detach().mean())

    def demo_nll(self, obs: dict[str, torch.Tensor], unit_actions: torch.Tensor) -> torch.Tensor:
        """(B,) Gaussian NLL of normalised demo actions under the actor's BC head (the BC loss)."""
        latent = self.actor.features_extractor(obs)
        return gaussian_nll(self.mean_head(latent), cast(nn.Linear, self.actor.log_std)(latent), unit_actions)


class DemoBuffer:
    """Demo transitions in the SAC observation layout, sampled uniformly (the second replay buffer)."""

    def __init__(
        self,
        obs: dict[str, np.ndarray],
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: dict[str, np.ndarray],
        dones: np.ndarray,
        ends: np.ndarray | None = None,
    ) -> None:
        t = torch.from_numpy
        self.obs = {k: t(np.ascontiguousarray(v, np.float32)) for k, v in obs.items()}
        self.next_obs = {k: t(np.ascontiguousarray(v, np.float32)) for k, v in next_obs.items()}
        self.actions = t(np.ascontiguousarray(actions, np.float32))
        self.rewards = t(np.asarray(rewards, np.float32).reshape(-1, 1))
        self.dones = t(np.asarray(dones, np.float32).reshape(-1, 1))
        self.ends = t(np.asarray(ends, np.int64)) if ends is not None else None
        """Index of the last transition of each transition's demo (where hindsight goals may come from)."""
        self.her_share = 0.0
        self.compute_reward: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def relabel_goals(self, her_goals: int, compute_reward: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        """From now on, ``her_goals`` of every ``her_goals + 1`` sampled transitions get a goal their demo reached at
        that step or later (uniformly, HER's future strategy), and ``compute_reward(achieved, goal)`` rewards them."""
        if self.ends is None or GOAL not in self.obs:
            raise LamRobotError("hindsight goals for demos need a goal task's demos (achieved_goal, desired_goal)")
        self.her_share = her_goals / (her_goals + 1)
        self.compute_reward = compute_reward

    def __len__(self) -> int:
        return len(self.actions)

    def sample(self, n: int, hindsight: bool = True) -> DictReplayBufferSamples:
        """n transitions drawn uniformly with replacement; after ``relabel_goals`` and unless ``hindsight`` is
        False, a share with hindsight goals."""
        idx = torch.randint(len(self), (n,))
        obs, next_obs = {k: v[idx] for k, v in self.obs.items()}, {k: v[idx] for k, v in self.next_obs.items()}
        rewards = self.rewards[idx]
        if hindsight and self.compute_reward is not None and self.ends is not None:
            chosen = torch.rand(n) < self.her_share
            rows = idx[chosen]
            later = rows + (torch.rand(len(rows)) * (self.ends[rows] - rows + 1)).long()
            goal = self.next_obs[ACHIEVED][later]
            obs[GOAL][chosen] = goal
            next_obs[GOAL][chosen] = goal
            reward = self.compute_reward(self.next_obs[ACHIEVED][rows].numpy(), goal.numpy())
            rewards[chosen] = torch.as_tensor(np.asarray(reward, np.float32)).reshape(-1, 1)
        return DictReplayBufferSamples(obs, self.actions[idx], next_obs, self.dones[idx], rewards)

    @classmethod
    def from_file(
        cls, path, bc_task: TaskSpec, task: TaskSpec, env: gym.Env, context: int, normalizer: Normalizer
    ) -> DemoBuffer:
        """Every demo of ``path`` (train and valid splits) through the one reader, in the layout of
        ``SacHistoryObservation``; actions in SAC's [-1, 1] units; on goal tasks the reward is the env's
        own compute_reward (what HER relabelling uses too), otherwise the recorded one."""
        keys, goal_at = goal_layout(task, env)
        parts: dict[str, list[np.ndarray]] = {}
        with DemoFile(path, check_values=True, task=bc_task) as demos:
            names = demos.split("train") + demos.split("valid")
            if not names:
                raise LamRobotError(f"{path} has no demos in mask/train or mask/valid")
            for name in names:
                demo = demos.demo(name)
                obs = {k: demo["obs"][k][()] for k in demo["obs"]}
                nxt = {k: demo["next_obs"][k][()] for k in demo["next_obs"]}
                missing = [k for k in (*keys, *((ACHIEVED, GOAL) if goal_at is not None else ())) if k not in obs]
                if missing:
                    raise LamRobotError(f"{path}: {name}/obs lacks key(s) {', '.join(missing)} that SAC needs")
                n = len(demo["actions"])
                flat = np.concatenate([obs[k].reshape(n, -1) for k in keys], axis=1).astype(np.float32)
                flat_next = np.concatenate([nxt[k].reshape(n, -1) for k in keys], axis=1).astype(np.float32)
                history = History.empty(1, context, flat.shape[1])
                boxes = []
                for row in np.concatenate([flat, flat_next[-1:]]):
                    history = history.push(row[None])
                    boxes.append(history.to_box()[0])
                box = np.stack(boxes)
                # next_obs[t] is obs[t + 1] within an episode; the history of obs[t + 1] is box[t + 1].
                part = {
                    "obs.observation": box[:-1],
                    "next.observation": box[1:],
                    "actions": np.clip(normalizer.action_to_unit(demo["actions"][()]), -1.0, 1.0),
                    "dones": demo["terminated"][()].astype(np.float32),
                }
                if goal_at is not None:
                    for key in (ACHIEVED, GOAL):
                        part[f"obs.{key}"] = obs[key].reshape(n, -1).astype(np.float32)
                        part[f"next.{key}"] = nxt[key].reshape(n, -1).astype(np.float32)
                    infos = np.array([{} for _ in range(n)])
                    reward = env.unwrapped.compute_reward(part[f"next.{ACHIEVED}"], part[f"next.{GOAL}"], infos)  # type: ignore[attr-defined]
                    part["rewards"] = np.asarray(reward, np.float32).reshape(n)
                else:
                    part["rewards"] = demo["rewards"][()].astype(np.float32)
                for key, value in part.items():
                    parts.setdefault(key, []).append(value)
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        lengths = np.array([len(a) for a in parts["actions"]])
        obs_keys = ["observation"] + ([ACHIEVED, GOAL] if goal_at is not None else [])
        return cls(
            {k: cat[f"obs.{k}"] for k in obs_keys},
            cat["actions"],
            cat["rewards"],
            {k: cat[f"next.{k}"] for k in obs_keys},
            cat["dones"],
            np.repeat(np.cumsum(lengths) - 1, lengths),
        )


def _concat(a: DictReplayBufferSamples, b: DictReplayBufferSamples) -> DictReplayBufferSamples:
    def cat(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, y.to(x.device, x.dtype)])

    return DictReplayBufferSamples(
        {k: cat(a.observations[k], b.observations[k]) for k in a.observations},
        cat(a.actions, b.actions),
        {k: cat(a.next_observations[k], b.next_observations[k]) for k in a.next_observations},
        cat(a.dones, b.dones),
        cat(a.rewards, b.rewards),
    )


class _MixedSampler:
    """Stands in for the replay buffer during one SAC gradient step: ``n_demo`` of each batch from the demos
    (none without them); keeps the batch for the BC and AWAC steps that follow. With ``bc_own_goals`` the BC
    term gets its own draw of demos with the goals they were recorded with, whatever the critics' half got."""

    def __init__(self, online: Any, demos: DemoBuffer | None, n_demo: int, bc_own_goals: bool = False) -> None:
        self.online, self.demos, self.n_demo = online, demos, n_demo if demos is not None else 0
        self.bc_own_goals = bc_own_goals
        self.demo_batch: DictReplayBufferSamples | None = None
        self.bc_batch: DictReplayBufferSamples | None = None
        self.batch: DictReplayBufferSamples | None = None

    def sample(self, batch_size: int, env: Any = None) -> DictReplayBufferSamples:
        """Online transitions first, then demo transitions."""
        batch = self.online.sample(batch_size - self.n_demo, env=env)
        if self.demos is not None and self.n_demo:
            self.demo_batch = self.demos.sample(self.n_demo)
            self.bc_batch = self.demos.sample(self.n_demo, hindsight=False) if self.bc_own_goals else self.demo_batch
            batch = _concat(batch, self.demo_batch)
        self.batch = batch
        return batch


class _NoStep:
    """Stands in for the actor's optimizer during SB3's update when the actor learns by AWAC instead: SB3's
    actor loss is computed but not applied (its learning-rate writes land here too)."""

    def __init__(self, real: torch.optim.Optimizer) -> None:
        self.param_groups = [{"lr": group["lr"]} for group in real.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing: the AWAC step clears the gradients itself."""

    def step(self, closure: Any = None) -> None:
        """Nothing."""


def _without_graph(function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return function(*args, **kwargs)

    return call


class FinetuneSAC(SAC):
    """SB3 SAC plus critic warm-up, a slower actor, demo/online batch mixing and a decaying, optionally
    Q-filtered BC term on the demo half."""

    policy: TransformerSACPolicy

    def __init__(
        self,
        *args: Any,
        critic_warmup: int = 0,
        actor_lr_scale: float = 1.0,
        demo_ratio: float = 0.5,
        bc_weight: float = 0.0,
        bc_decay: float = 1.0,
        q_filter: bool = False,
        actor_update: str = "awac",
        awac_lambda: float = 1.0,
        bc_own_goals: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bc_own_goals = bc_own_goals
        self.actor_update = actor_update
        self.awac_lambda = awac_lambda
        self.critic_warmup = critic_warmup
        self.actor_lr_scale = actor_lr_scale
        self.demo_ratio = demo_ratio
        self.bc_weight = bc_weight
        self.bc_decay = bc_decay
        self.q_filter = q_filter
        self.gradient_steps_done = 0
        self.demo_buffer: DemoBuffer | None = None
        self.act_from_start = False
        self.proposal: Actor | None = None

    def start_from_bc(self, net: TransformerPolicyNet, log_std: float | None, proposal: bool) -> None:
        """Load the BC network into the actor and act with it from the first step (SB3 acts uniformly at
        random until learning starts, which suits a random actor only); ``proposal`` keeps a frozen copy
        whose action is taken wherever the critics value it above the actor's (IBRL, acting only)."""
        self.policy.load_bc(net, log_std)
        self.act_from_start = True
        if proposal:
            self.proposal = copy.deepcopy(self.policy.actor).requires_grad_(False).eval()

    def _sample_action(
        self, learning_starts: int, action_noise: Any = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        action, buffer_action = super()._sample_action(
            0 if self.act_from_start else learning_starts, action_noise, n_envs
        )
        if self.proposal is None:
            return action, buffer_action
        obs, _ = self.policy.obs_to_tensor(cast(dict[str, np.ndarray], self._last_obs))
        with torch.no_grad():
            bc = self.proposal(obs, deterministic=False)
            own = torch.as_tensor(buffer_action, dtype=torch.float32)
            pick = (self._min_q(obs, bc) > self._min_q(obs, own)).numpy()
        self.logger.record_mean("rollout/bc_proposal_share", float(pick.mean()))
        buffer_action = np.where(pick[:, None], bc.numpy(), buffer_action).astype(np.float32)
        return self.policy.unscale_action(buffer_action), buffer_action

    def _min_q(self, obs: Any, actions: torch.Tensor) -> torch.Tensor:
        return torch.min(torch.cat(self.critic(obs, actions), dim=1), dim=1).values

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "demo_buffer", "proposal"]  # the demos stay in their file, BC in its

    @property
    def warming(self) -> bool:
        """Whether only the critic learns now."""
        return self.gradient_steps_done < self.critic_warmup

    def _update_learning_rate(self, optimizers) -> None:
        super()._update_learning_rate(optimizers)
        # The actor (and the entropy coefficient, which follows it) wait out the warm-up, then learn slower;
        # with AWAC the entropy coefficient stays at its initial value.
        scale = 0.0 if self.warming else self.actor_lr_scale
        for optimizer in (self.actor.optimizer, self.ent_coef_optimizer):
            if optimizer is not None:
                for group in optimizer.param_groups:
                    group["lr"] *= (
                        0.0 if optimizer is self.ent_coef_optimizer and self.actor_update == "awac" else scale
                    )

    def bc_weight_now(self) -> float:
        """The BC term's weight after its decay."""
        return self.bc_weight * self.bc_decay ** (self.gradient_steps_done / BC_DECAY_EVERY)

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """SB3's SAC update, one gradient step at a time, on mixed batches, each followed by the BC term (and,
        with AWAC, by the advantage-weighted actor step in place of SB3's)."""
        awac = self.actor_update == "awac"
        n_demo = round(batch_size * self.demo_ratio) if self.demo_buffer is not None else 0
        for _ in range(gradient_steps):
            online, actor_optimizer = self.replay_buffer, self.actor.optimizer
            sampler = _MixedSampler(online, self.demo_buffer, n_demo, self.bc_own_goals) if n_demo or awac else None
            if sampler is not None:
                self.replay_buffer = sampler  # type: ignore[assignment]
            if awac:
                self.actor.optimizer = _NoStep(actor_optimizer)  # type: ignore[assignment]
                # SB3's actor loss is not applied, so its actions need no graph through the Transformer: the
                # backward pass through it was the largest waste of a step (the same draws, the same updates).
                self.actor.action_log_prob = _without_graph(self.actor.action_log_prob)  # type: ignore[method-assign]
            try:
                super().train(1, batch_size)
            finally:
                self.replay_buffer, self.actor.optimizer = online, actor_optimizer
                self.actor.__dict__.pop("action_log_prob", None)
            if awac and sampler is not None and sampler.batch is not None and not self.warming:
                self._awac_step(sampler.batch)
            weight = self.bc_weight_now()
            if sampler is not None and sampler.bc_batch is not None and weight > 1e-4 and not self.warming:
                self._bc_step(sampler.bc_batch, weight)
            self.gradient_steps_done += 1
        self.logger.record("train/bc_weight", self.bc_weight_now() if self.demo_buffer is not None else 0.0)
        self.logger.record("train/critic_warmup", float(self.warming))

    def _awac_step(self, batch: DictReplayBufferSamples) -> None:
        """AWAC (Nair et al. 2020): the Gaussian NLL of the batch's own actions, weighted by exp(advantage /
        lambda) normalised over the batch; the actor never follows the critic's action gradient off the data."""
        with torch.no_grad():
            own = self.actor(batch.observations, deterministic=False)
            advantage = self._min_q(batch.observations, batch.actions) - self._min_q(batch.observations, own)
            weights = torch.softmax(advantage / self.awac_lambda, dim=0) * len(advantage)
        loss = (weights * self.policy.demo_nll(batch.observations, batch.actions)).mean()
        optimizer = self.actor.optimizer
        for group in optimizer.param_groups:
            group["lr"] = self.lr_schedule(self._current_progress_remaining) * self.actor_lr_scale
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), 10.0)
        optimizer.step()
        self.logger.record("train/awac_loss", float(loss.detach()))
        self.logger.record("train/awac_weight_max", float(weights.max()))

    def _bc_step(self, batch: DictReplayBufferSamples, weight: float) -> None:
        nll = self.policy.demo_nll(batch.observations, batch.actions)
        keep = torch.ones_like(nll)
        if self.q_filter:
            with torch.no_grad():
                own = self.actor(batch.observations, deterministic=True)
                keep = (self._min_q(batch.observations, batch.actions) > self._min_q(batch.observations, own)).float()
            self.logger.record("train/q_filter_kept", float(keep.mean()))
        loss = weight * (nll * keep).sum() / keep.sum().clamp(min=1.0)
        self.actor.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), 10.0)
        self.actor.optimizer.step()
        self.logger.record("train/bc_loss", float(loss.detach()) / weight)


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.{index}.{name}": torch.as_tensor(value)
        for index, param_state in optimizer.state_dict()["state"].items()
        for name, value in param_state.items()
    }


def _load_optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head == prefix:
            index, name = rest.split(".", 1)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})


def sac_extras(model: FinetuneSAC) -> dict[str, torch.Tensor]:
    """What a SAC resume snapshot needs besides the policy weights and the actor's optimizer: the
    critics' and the entropy coefficient's optimizers and the entropy coefficient itself."""
    extras = _optimizer_tensors("critic_optim", model.critic.optimizer)
    if model.ent_coef_optimizer is not None and model.log_ent_coef is not None:
        extras.update(_optimizer_tensors("ent_optim", model.ent_coef_optimizer))
        extras["log_ent_coef"] = model.log_ent_coef.detach().clone()
    return extras


def restore_sac_extras(model: FinetuneSAC, extras: dict[str, torch.Tensor]) -> None:
    """The inverse of ``sac_extras``."""
    _load_optimizer_tensors("critic_optim", model.critic.optimizer, extras)
    if model.ent_coef_optimizer is not None and model.log_ent_coef is not None and "log_ent_coef" in extras:
        _load_optimizer_tensors("ent_optim", model.ent_coef_optimizer, extras)
        with torch.no_grad():
            model.log_ent_coef.copy_(extras["log_ent_coef"])
