"""Run configurations: one dataclass per command that trains, a docstring under each field
(the CLI turns them into options and help), validated in ``__post_init__``. No torch here,
so building the command line stays fast."""

from __future__ import annotations

import dataclasses
from typing import Literal

from lam_robot.errors import LamRobotError

LOSSES = ("nll", "mse")


@dataclasses.dataclass
class BCConfig:
    """Everything that defines a behaviour-cloning run; saved in every checkpoint."""

    data: str
    """HDF5 demo file; trains on mask/train, validates on mask/valid."""
    out: str
    """Run directory: best checkpoint, last/ (for resuming), log.csv, curves.png."""
    loss: Literal["nll", "mse"] = "nll"
    """nll: Gaussian negative log-likelihood (learns mean and std); mse: squared error on the mean."""
    context: int = 10
    """K, observations the policy sees."""
    epochs: int = 100
    """Passes over the training windows (one window ends at every training step)."""
    batch_size: int = 256
    """Windows per gradient step."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_fraction: float = 0.05
    """Share of all steps spent warming the learning rate up linearly; cosine decay to 0 after."""
    grad_clip: float = 1.0
    """Maximum global gradient norm."""
    seed: int = 0
    """Seeds initialisation, batch order and dropout."""
    d_model: int = 64
    """Transformer width (64 x 2 layers matched 128 x 2-3 on grasp at 2-4x the speed on CPU)."""
    n_layers: int = 2
    """Transformer layers."""
    n_heads: int = 4
    """Attention heads."""
    dropout: float = 0.1
    """Dropout rate during training."""
    init_log_std: float = -1.0
    """Initial log-std of the action Gaussian (normalised units); MSE leaves it there."""
    eval_every: int = 0
    """Evaluate success in the sim every N epochs (0: never)."""
    eval_episodes: int = 20
    """Episodes per sim evaluation."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise LamRobotError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("context", "epochs", "batch_size", "eval_episodes"):
            if getattr(self, name) <= 0:
                raise LamRobotError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise LamRobotError("--lr and --grad-clip must be positive")
        if not 0 <= self.warmup_fraction < 1:
            raise LamRobotError(f"--warmup-fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.eval_every < 0:
            raise LamRobotError(f"--eval-every must be >= 0, got {self.eval_every}")


@dataclasses.dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run; saved with its checkpoints."""

    policy: str
    """BC checkpoint directory (from train-bc): the actor to fine-tune, and its normalisation."""
    out: str
    """Run directory: fine-tuned checkpoint (BC format), ppo.zip, last/, log.csv, curves.png."""
    steps: int = 100_000
    """Environment steps of PPO."""
    task: str = ""
    """Task to fine-tune in (default: the checkpoint's task)."""
    demos: str = ""
    """Demo file for the BC regulariser (needed when bc_weight > 0)."""
    n_envs: int = 8
    """Parallel envs."""
    vec_env: str = "dummy"
    """dummy (one process) or subproc (one process per env)."""
    seed: int = 0
    """Seeds PPO, the envs and evaluation."""
    from_scratch: bool = False
    """Random initialisation of the same network (a baseline for BC then RL)."""
    dense: bool = False
    """Dense reward instead of the task's sparse one: the env's own (Fetch: minus the distance to the
    goal); for mazes, potential-based shaping by the shortest-path distance to the goal."""
    goal_curriculum: bool = False
    """Maze tasks: train on goals a few cells from the start first and widen the radius as success
    rises (train/curriculum.py); evaluation keeps the task's own goals."""
    learning_rate: float = 3e-4
    """Critic learning rate (Adam)."""
    actor_lr_scale: float = 0.3
    """Actor learning rate as a fraction of the critic's."""
    critic_warmup: int = 2
    """Rollouts at the start in which only the critic learns."""
    init_log_std: float = float("nan")
    """Initial log-std of the actor (nan: keep the BC checkpoint's)."""
    bc_weight: float = 1.0
    """Initial weight of the BC regulariser; it needs --demos (without them there is none); 0 turns it off.
    On grasp from 10 noisy demos it made the difference between 26% -> 2% and 26% -> 64% in 60k steps."""
    bc_decay: float = 0.95
    """Factor applied to the BC weight after every rollout."""
    bc_steps: int = 16
    """BC gradient steps after every PPO update while the weight is on (PPO itself takes
    n_epochs x n_envs x n_steps / batch_size = 20 by default)."""
    n_steps: int = 128
    """Steps per env per rollout."""
    batch_size: int = 256
    """PPO minibatch size."""
    n_epochs: int = 5
    """PPO epochs per rollout."""
    gamma: float = 0.98
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    eval_every: int = 10_000
    """Evaluate success every N env steps (and at the start and end)."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    early_evals: int = 0
    """Extra evaluations spread evenly over the first 10% of the steps, to watch for early forgetting."""

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise LamRobotError(f"--steps must be positive, got {self.steps}")
        for name in ("n_envs", "n_steps", "batch_size", "n_epochs", "eval_every", "eval_episodes"):
            if getattr(self, name) <= 0:
                raise LamRobotError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.early_evals < 0:
            raise LamRobotError(f"--early-evals must be >= 0, got {self.early_evals}")
        if self.vec_env not in ("dummy", "subproc"):
            raise LamRobotError(f"--vec-env must be dummy or subproc, got {self.vec_env!r}")
        if self.bc_weight < 0:
            raise LamRobotError(f"--bc-weight must be >= 0, got {self.bc_weight}")
        if not 0 < self.actor_lr_scale <= 10:
            raise LamRobotError(f"--actor-lr-scale must be in (0, 10], got {self.actor_lr_scale}")

    def eval_points(self) -> list[int]:
        """Env steps after which success is evaluated (besides step 0 and the end)."""
        early = {round(self.steps * 0.1 * (i + 1) / self.early_evals) for i in range(self.early_evals)}
        regular = set(range(self.eval_every, self.steps, self.eval_every))
        return sorted(p for p in early | regular if 0 < p < self.steps)


@dataclasses.dataclass
class DaggerConfig:
    """One HG-DAgger run; saved as dagger.json in the run directory."""

    policy: str
    """Starting BC checkpoint (from train-bc); its training settings are reused each round."""
    out: str
    """Run directory: data.hdf5 (demos + interventions), round_<r>/ checkpoints, rounds.json, rounds.png."""
    rounds: int = 4
    """Rounds of policy rollouts with expert interventions, each followed by retraining."""
    episodes_per_round: int = 20
    """Episodes the policy drives per round."""
    threshold: float = 0.5
    """Action distance (L2, env units) above which the expert takes over."""
    demos: str = ""
    """Demo file to start from (default: the one the checkpoint was trained on)."""
    epochs: int = 0
    """BC epochs per round (0: the checkpoint's own)."""
    eval_episodes: int = 50
    """Evaluation episodes after each round (seeds from eval_seed)."""
    eval_seed: int = 1000
    """First evaluation seed; rollouts use seeds from 10_000 * round."""
    n_envs: int = 4
    """Envs stepped in lockstep for rollouts and evaluation."""

    def __post_init__(self) -> None:
        for name in ("rounds", "episodes_per_round", "eval_episodes", "n_envs"):
            if getattr(self, name) <= 0:
                raise LamRobotError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.threshold <= 0:
            raise LamRobotError(f"--threshold must be positive, got {self.threshold}")
