"""Baselines from the `imitation` library on our demos and tasks: BC with an MLP, DAgger (with the
task's scripted expert), GAIL and AIRL. Each run ends in an MLP checkpoint (safetensors + JSON)
that `lam-robot evaluate` and `record` accept like any policy.

Observations are flattened as gymnasium's FlattenObservation does for the env's Dict space
(all keys, sorted), the same layout as `lam_robot.interop.to_imitation`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import FlattenObservation
from safetensors.torch import load_file, save_file
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.interop import to_imitation
from lam_robot.policy.checkpoint import CONFIG, WEIGHTS, package_versions, read_json, write_json
from lam_robot.rollout import Obs
from lam_robot.tasks import TaskSpec

ALGOS = ("bc-mlp", "dagger", "gail", "airl")
# DAgger: about 10 rounds, each followed by as many BC batches as bc-mlp gets in total / 10 at its
# default 10k; with 200 batches a round it trained far less than bc-mlp and scored below it.
DAGGER_ROUNDS = 10
DAGGER_BATCHES_PER_ROUND = 1000
MLP_KIND = "sb3-mlp"


def flat_env(task: TaskSpec) -> gym.Env:
    return FlattenObservation(task.make_env())


def _unflatten(space: gym.spaces.Dict, flat: np.ndarray) -> Obs:
    rows = [gym.spaces.unflatten(space, row) for row in np.atleast_2d(flat)]
    return {k: np.stack([row[k] for row in rows]) for k in space.keys()}


class FlatExpert(BasePolicy):
    """The task's scripted expert as an SB3 policy over flat observations (what imitation's DAgger asks)."""

    def __init__(self, task: TaskSpec) -> None:
        from lam_robot.policies import resolve_policy

        env = task.make_env()
        self.dict_space = env.observation_space
        self.expert = resolve_policy("expert", task, env)
        flat_space = gym.spaces.flatten_space(env.observation_space)
        action_space = env.action_space
        env.close()
        super().__init__(flat_space, action_space)

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        obs = _unflatten(self.dict_space, observation.cpu().numpy().astype(np.float64))
        action, _ = self.expert.predict(obs)
        return torch.as_tensor(np.asarray(action), dtype=torch.float32)


class MlpPolicy:
    """An SB3 MLP policy from a baseline run, behind our predict protocol (dict observations)."""

    def __init__(self, policy: ActorCriticPolicy, task: TaskSpec, dict_space: gym.spaces.Dict) -> None:
        self.policy = policy.eval()
        self.task = task
        self.dict_space = dict_space

    def predict(self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        single = next(iter(obs.values())).ndim == 1
        batch = {k: np.atleast_2d(obs[k]) for k in self.dict_space.keys()}
        flat = np.concatenate([batch[k].reshape(len(batch[k]), -1) for k in self.dict_space.keys()], axis=1)
        action, _ = self.policy.predict(flat.astype(np.float32), deterministic=deterministic)
        return (action[0] if single else action), state


def save_mlp(directory: Path, policy: ActorCriticPolicy, task: TaskSpec, algo: str, extra: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(directory / WEIGHTS))
    write_json(directory / CONFIG, {"format_version": 1, "kind": MLP_KIND, "algo": algo,
                                     "net_arch": policy.net_arch, "activation": policy.activation_fn.__name__,
                                     "task": task.to_dict(), "versions": dict(package_versions()), **extra})


def load_mlp(directory: Path, task: TaskSpec) -> MlpPolicy:
    config = read_json(Path(directory) / CONFIG, "checkpoint config")
    saved_task = TaskSpec.from_dict(config["task"], origin=str(directory))
    env = task.make_env()
    dict_space, action_space = env.observation_space, env.action_space
    env.close()
    flat_space = gym.spaces.flatten_space(dict_space)
    policy = ActorCriticPolicy(flat_space, action_space, lambda _: 0.0, net_arch=config["net_arch"],
                               activation_fn=getattr(torch.nn, config.get("activation", "Tanh")))
    try:
        policy.load_state_dict(load_file(str(Path(directory) / WEIGHTS)))
    except (RuntimeError, OSError, ValueError) as exc:
        raise LamRobotError(f"{directory} does not fit task {task.name!r} (trained on {saved_task.name!r}) or is "
                            f"corrupt: {str(exc).splitlines()[0][:160]}") from exc
    return MlpPolicy(policy, task, dict_space)


def checkpoint_kind(directory: str | Path) -> str:
    return read_json(Path(directory) / CONFIG, "checkpoint config").get("kind", "transformer-gaussian")


@dataclasses.dataclass
class BaselineResult:
    out: Path
    algo: str
    env_steps: int
    gradient_steps: int


def _venv(task: TaskSpec, n_envs: int, seed: int):
    from imitation.data.wrappers import RolloutInfoWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv

    def build(rank: int):
        def make():
            env = RolloutInfoWrapper(flat_env(task))
            env.reset(seed=seed + rank)
            return env
        return make

    return DummyVecEnv([build(i) for i in range(n_envs)])


def train_baseline(algo: str, data: str | Path, task: TaskSpec, out: str | Path, steps: int, seed: int = 0,
                   n_envs: int = 4) -> BaselineResult:
    """``steps``: BC gradient steps for bc-mlp; environment steps for dagger, gail and airl."""
    if algo not in ALGOS:
        raise LamRobotError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
    if steps <= 0:
        raise LamRobotError(f"--steps must be positive, got {steps}")
    with DemoFile(data) as demos:
        if demos.task.name != task.name:
            raise LamRobotError(f"{data} holds demos of task {demos.task.name!r}, not {task.name!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LamRobotError(f"{out} is not empty; use another --out")
    from imitation.algorithms import bc
    from imitation.util.logger import configure

    logger = configure(str(out / "logs"), format_strs=["csv"])  # imitation's tables go to a file, not the terminal
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    trajectories = to_imitation(data)
    venv = _venv(task, n_envs, seed)
    env_steps = gradient_steps = 0
    try:
        if algo in ("bc-mlp", "dagger"):
            trainer = bc.BC(observation_space=venv.observation_space, action_space=venv.action_space,
                            demonstrations=trajectories, rng=rng, batch_size=64, custom_logger=logger)
            if algo == "bc-mlp":
                trainer.train(n_batches=steps, progress_bar=False, log_interval=10**9)
                gradient_steps = steps
            else:
                from imitation.algorithms.dagger import SimpleDAggerTrainer

                with tempfile.TemporaryDirectory() as scratch:
                    dagger = SimpleDAggerTrainer(venv=venv, scratch_dir=scratch, expert_policy=FlatExpert(task),
                                                 bc_trainer=trainer, rng=rng, expert_trajs=trajectories,
                                                 custom_logger=logger)
                    dagger.train(steps, rollout_round_min_timesteps=max(1, steps // DAGGER_ROUNDS),
                                 bc_train_kwargs={"n_batches": DAGGER_BATCHES_PER_ROUND, "progress_bar": False,
                                                  "log_interval": 10**9})
                env_steps = steps
            policy = trainer.policy
        else:
            from imitation.algorithms.adversarial.airl import AIRL
            from imitation.algorithms.adversarial.gail import GAIL
            from imitation.rewards.reward_nets import BasicRewardNet, BasicShapedRewardNet
            from imitation.util.networks import RunningNorm
            from stable_baselines3 import PPO

            learner = PPO("MlpPolicy", venv, n_steps=256, batch_size=64, n_epochs=5, seed=seed, verbose=0,
                          device="cpu")
            if algo == "gail":
                reward_net = BasicRewardNet(venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm)
                adversarial = GAIL(demonstrations=trajectories, demo_batch_size=256, gen_replay_buffer_capacity=2048,
                                   n_disc_updates_per_round=4, venv=venv, gen_algo=learner, reward_net=reward_net,
                                   allow_variable_horizon=True, custom_logger=logger)
            else:
                reward_net = BasicShapedRewardNet(venv.observation_space, venv.action_space,
                                                  normalize_input_layer=RunningNorm)
                adversarial = AIRL(demonstrations=trajectories, demo_batch_size=256, gen_replay_buffer_capacity=2048,
                                   n_disc_updates_per_round=4, venv=venv, gen_algo=learner, reward_net=reward_net,
                                   allow_variable_horizon=True, custom_logger=logger)
            adversarial.train(steps)
            env_steps = steps
            policy = learner.policy
    finally:
        venv.close()
    save_mlp(out, policy, task, algo, {"demos": str(data), "steps": steps, "env_steps": env_steps,
                                        "gradient_steps": gradient_steps, "seed": seed})
    return BaselineResult(out, algo, env_steps, gradient_steps)
