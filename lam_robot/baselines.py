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
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import BasePolicy

from lam_robot.config import BaselineConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.interop import to_imitation
from lam_robot.policy.mlp import flat_env, save_mlp, unflatten
from lam_robot.rollout import one_torch_thread
from lam_robot.tasks import TaskSpec, load_task, require_same_task

if TYPE_CHECKING:
    from imitation.algorithms.adversarial.common import AdversarialTrainer
    from imitation.rewards.reward_nets import RewardNet

ALGOS = ("bc-mlp", "dagger", "gail", "airl")
# DAgger: about 10 rounds, each followed by as many BC batches as bc-mlp gets in total / 10 at its
# default 10k; with 200 batches a round it trained far less than bc-mlp and scored below it.
DAGGER_ROUNDS = 10
DAGGER_BATCHES_PER_ROUND = 1000


class FlatExpert(BasePolicy):
    """The task's scripted expert as an SB3 policy over flat observations (what imitation's DAgger asks)."""

    def __init__(self, task: TaskSpec) -> None:
        from lam_robot.sources import resolve_policy

        env = task.make_env()
        self.dict_space = cast(gym.spaces.Dict, env.observation_space)  # goal envs: a dict of spaces
        self.expert = resolve_policy("expert", task, env)
        flat_space = gym.spaces.flatten_space(env.observation_space)
        action_space = env.action_space
        env.close()
        super().__init__(flat_space, action_space)

    def _predict(
        self, observation: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False
    ) -> torch.Tensor:
        assert isinstance(observation, torch.Tensor)  # built over a flat (Box) observation space
        obs = unflatten(self.dict_space, observation.cpu().numpy().astype(np.float64))
        action, _ = self.expert.predict(obs)
        return torch.as_tensor(np.asarray(action), dtype=torch.float32)


@dataclasses.dataclass
class BaselineResult:
    """Where a baseline run saved its MLP checkpoint, and how much it trained."""

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


def train_baseline(
    algo: str, data: str | Path, task: TaskSpec, out: str | Path, steps: int, seed: int = 0, n_envs: int = 4
) -> BaselineResult:
    """``steps``: BC gradient steps for bc-mlp; environment steps for dagger, gail and airl."""
    if algo not in ALGOS:
        raise LamRobotError(f"unknown --algo {algo!r}; choose one of {', '.join(ALGOS)}")
    if steps <= 0:
        raise LamRobotError(f"--steps must be positive, got {steps}")
    with DemoFile(data) as demos:
        require_same_task(demos.task, task, f"{data} holds demos of task", "give demos of that task")
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
            trainer = bc.BC(
                observation_space=venv.observation_space,
                action_space=venv.action_space,
                demonstrations=trajectories,
                rng=rng,
                batch_size=64,
                custom_logger=logger,
            )
            if algo == "bc-mlp":
                trainer.train(n_batches=steps, progress_bar=False, log_interval=10**9)
                gradient_steps = steps
            else:
                from imitation.algorithms.dagger import SimpleDAggerTrainer

                with tempfile.TemporaryDirectory() as scratch:
                    dagger = SimpleDAggerTrainer(
                        venv=venv,
                        scratch_dir=scratch,
                        expert_policy=FlatExpert(task),
                        bc_trainer=trainer,
                        rng=rng,
                        expert_trajs=trajectories,
                        custom_logger=logger,
                    )
                    dagger.train(
                        steps,
                        rollout_round_min_timesteps=max(1, steps // DAGGER_ROUNDS),
                        bc_train_kwargs={
                            "n_batches": DAGGER_BATCHES_PER_ROUND,
                            "progress_bar": False,
                            "log_interval": 10**9,
                        },
                    )
                env_steps = steps
            policy = trainer.policy
        else:
            from imitation.algorithms.adversarial.airl import AIRL
            from imitation.algorithms.adversarial.gail import GAIL
            from imitation.rewards.reward_nets import BasicRewardNet, BasicShapedRewardNet
            from imitation.util.networks import RunningNorm
            from stable_baselines3 import PPO

            learner = PPO("MlpPolicy", venv, n_steps=256, batch_size=64, n_epochs=5, seed=seed, verbose=0, device="cpu")
            reward_net: RewardNet
            adversarial: AdversarialTrainer
            if algo == "gail":
                reward_net = BasicRewardNet(
                    venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm
                )
                adversarial = GAIL(
                    demonstrations=trajectories,
                    demo_batch_size=256,
                    gen_replay_buffer_capacity=2048,
                    n_disc_updates_per_round=4,
                    venv=venv,
                    gen_algo=learner,
                    reward_net=reward_net,
                    allow_variable_horizon=True,
                    custom_logger=logger,
                )
            else:
                reward_net = BasicShapedRewardNet(
                    venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm
                )
                adversarial = AIRL(
                    demonstrations=trajectories,
                    demo_batch_size=256,
                    gen_replay_buffer_capacity=2048,
                    n_disc_updates_per_round=4,
                    venv=venv,
                    gen_algo=learner,
                    reward_net=reward_net,
                    allow_variable_horizon=True,
                    custom_logger=logger,
                )
            adversarial.train(steps)
            env_steps = steps
            policy = learner.policy
    finally:
        venv.close()
    save_mlp(
        out,
        policy,
        task,
        algo,
        {"demos": str(data), "steps": steps, "env_steps": env_steps, "gradient_steps": gradient_steps, "seed": seed},
    )
    return BaselineResult(out, algo, env_steps, gradient_steps)


def baseline(config: BaselineConfig | None = None, /, **fields: Any) -> BaselineResult:
    """Train the baseline ``config.algo`` on ``config.data``; keyword fields build the config."""
    c = BaselineConfig.build(config, fields)
    with one_torch_thread():
        return train_baseline(c.algo, c.data, load_task(c.task), c.out, c.steps, seed=c.seed, n_envs=c.n_envs)
