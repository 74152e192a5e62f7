"""PPO (or SAC) fine-tuning of a BC Transformer (BC then RL), extending Stable-Baselines3 without copying it.

Against the early collapse of a BC policy under PPO, each switchable:
- critic warm-up: for the first N rollouts only the critic learns;
- a lower actor learning rate than the critic's, and (optionally) a smaller initial log-std;
- a BC regulariser: after each PPO update, gradient steps on the demos' NLL with a weight
  that decays every rollout (as DAPG's decaying BC term);
- on goal tasks, self-imitation (``--self-imitation hindsight``, train/self_imitation.py): the
  policy's own rollouts relabelled with goals they reached, kept where the relabelled return beats
  the critic (ESIL), join the regulariser with their own decaying weight.
Writes a BC-format checkpoint (so evaluate and record accept it), a plain SB3 ``ppo.zip``,
``log.csv`` and ``curves.png``; a killed run resumes from ``OUT/last/``. ``--algo sac`` swaps the
algorithm for ``FinetuneSAC`` (train/sac.py) and keeps the evaluation, logging and saving here.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from lam_robot.config import EvaluateConfig, FinetuneConfig
from lam_robot.data.dataset import DemoFile, build_windows
from lam_robot.errors import LamRobotError
from lam_robot.evaluation import evaluate_policy
from lam_robot.plots import plot_finetune_curve
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.policy.checkpoint import (
    LAST,
    LOG,
    Normalizer,
    load_training_state,
    prepare_run_dir,
    save_checkpoint,
    save_training_state,
)
from lam_robot.policy.network import TransformerPolicyNet
from lam_robot.policy.routing import PATHS_FILE, ReachedPaths
from lam_robot.policy.sb3_bridge import HistoryObservation, TransformerActorCriticPolicy
from lam_robot.policy.transfer import checkpoint_for_task
from lam_robot.rollout import one_torch_thread
from lam_robot.tasks import TaskSpec, load_task, require_same_task
from lam_robot.train.bc import goal_columns
from lam_robot.train.route_training import REBUILD_EVERY, TrainingRouter, WaypointGoals
from lam_robot.train.self_imitation import ACHIEVED, ReachedGoals, SelfImitation

TENSORBOARD = "tensorboard"
OUR_FILES = ("model.safetensors", "config.json", "ppo.zip", "sac.zip", LOG, "curves.png", LAST, TENSORBOARD, PATHS_FILE)
# SB3 names the shared features extractor three times; snapshots keep one name.
ALIASES = ("pi_features_extractor.", "vf_features_extractor.")


# Demo windows for the BC regulariser: obs, actions, valid, labels (padded rows) and window starts.
BCWindows = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class FinetunePPO(PPO):
    """SB3 PPO plus critic warm-up, per-group learning-rate scales and a decaying BC regulariser on demos
    and (with ``self_imitation``) on the policy's own relabelled rollouts."""

    policy: TransformerActorCriticPolicy

    def __init__(
        self,
        *args: Any,
        critic_warmup: int = 0,
        bc_weight: float = 0.0,
        bc_decay: float = 1.0,
        bc_steps: int = 0,
        si_weight: float = 0.0,
        si_decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.critic_warmup = critic_warmup
        self.bc_weight = bc_weight
        self.bc_decay = bc_decay
        self.bc_steps = bc_steps
        self.si_weight = si_weight
        self.si_decay = si_decay
        self.rollouts_done = 0
        self.bc_windows: BCWindows | None = None
        self.self_imitation: SelfImitation | None = None
        self.reached_paths: ReachedPaths | None = None
        """On goal tasks: the paths the training episodes reached, for ``evaluate --route``."""
        self.failure_replay = False
        """Whether the envs are wrapped in FailedStartReplay (its counts go to TensorBoard)."""
        self.router: TrainingRouter | None = None
        """With --route-training: the graph the routed envs share, rebuilt from ``reached_paths``."""

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "self_imitation", "router"]  # hold envs; rebuilt by FinetuneRun

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        last_obs = self._last_obs
        result = super()._setup_learn(*args, **kwargs)
        if self.self_imitation is not None and self._last_obs is not last_obs:
            self.self_imitation.forget_running()  # SB3 reset the envs
        return result

    def _init_callback(self, callback: Any, progress_bar: bool = False) -> BaseCallback:
        # record every rollout step next to the caller's callbacks
        callbacks = [] if callback is None else callback if isinstance(callback, list) else [callback]
        if self.self_imitation is not None:
            callbacks.append(self.self_imitation.recorder())
        if self.reached_paths is not None:
            callbacks.append(_PathRecorder(self.reached_paths))
        return super()._init_callback(callbacks or None, progress_bar)

    def collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps) -> bool:
        """SB3's rollout; with self-imitation, the episodes it finished are then relabelled."""
        if self.router is not None and self.reached_paths is not None:
            if self.router.routed is None or self.rollouts_done % REBUILD_EVERY == 0:
                self.router.rebuild(self.reached_paths)
        done = super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        if self.self_imitation is not None:
            self.self_imitation.relabel_finished(self.policy.predict_values)
        return done

    def _update_learning_rate(self, optimizers) -> None:
        super()._update_learning_rate(optimizers)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] *= group.get("lr_scale", 1.0)

    def train(self) -> None:
        """One PPO update (actor frozen during warm-up), then the BC regulariser's steps."""
        actor = self.policy.actor_parameters()
        warming = self.rollouts_done < self.critic_warmup
        if warming:
            for p in actor:
                p.requires_grad_(False)
        try:
            super().train()
        finally:
            for p in actor:
                p.requires_grad_(True)
        weight = self.bc_weight * self.bc_decay**self.rollouts_done if self.bc_windows is not None else 0.0
        si = self.self_imitation
        si_weight = self.si_weight * self.si_decay**self.rollouts_done if si is not None and si.size else 0.0
        if (weight > 1e-4 or si_weight > 1e-4) and not warming:
            self._bc_regularise(*(w if w > 1e-4 else 0.0 for w in (weight, si_weight)))
        self.logger.record("train/bc_weight", weight)
        if si is not None:
            self.logger.record("train/si_weight", si_weight)
            self.logger.record("train/si_buffer", si.size)
            self.logger.record("train/si_kept_fraction", si.kept / max(si.relabelled, 1))
            if si.drop_detours:
                self.logger.record("train/si_detour_fraction", si.detours / max(si.relabelled, 1))
        if self.failure_replay and self.env is not None:
            self.logger.record("train/failure_replays", sum(self.env.get_attr("replays")))
            queued = [len(pairs) for pairs in self.env.get_attr("failed")]
            self.logger.record("train/failed_pairs_queued", sum(queued))
        self.logger.record("train/critic_warmup", float(warming))
        self.rollouts_done += 1

    def _bc_regularise(self, weight: float, si_weight: float = 0.0) -> None:
        """``bc_steps`` gradient steps on ``weight`` x the demos' NLL + ``si_weight`` x the self-imitation NLL."""
        offsets = torch.arange(self.policy.network["context"])
        bc_loss = si_loss = torch.zeros(())
        for _ in range(self.bc_steps):
            loss = torch.zeros(())
            if weight:
                assert self.bc_windows is not None
                obs, actions, valid, labels, starts = self.bc_windows
                idx = torch.randint(len(starts), (self.batch_size,))
                rows = starts[idx, None] + offsets
                bc_loss = self.policy.bc_nll(obs[rows], valid[rows], actions[rows], labels[rows])
                loss = loss + weight * bc_loss
            if si_weight:
                assert self.self_imitation is not None
                si_loss = self._si_nll(*self.self_imitation.sample(self.batch_size))
                loss = loss + si_weight * si_loss
            self.policy.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        if weight:
            self.logger.record("train/bc_loss", float(bc_loss.detach()))
        if si_weight:
            self.logger.record("train/si_loss", float(si_loss.detach()))

    def _si_nll(self, history: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """NLL of the labelled actions of relabelled history windows."""
        obs, valid = self.policy.features_extractor.normalise(history)
        return self.policy.bc_nll(obs, valid, actions, labels & valid)


class _PathRecorder(BaseCallback):
    """Hands each finished training episode's achieved goals (``ReachedGoals`` puts them in ``info``) to
    ``ReachedPaths``."""

    def __init__(self, paths: ReachedPaths) -> None:
        super().__init__()
        self.paths = paths
        self.running: dict[int, list[np.ndarray]] = {}

    def _on_step(self) -> bool:
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"])):
            self.running.setdefault(i, []).append(info[ACHIEVED])
            if done:
                self.paths.add(np.stack(self.running.pop(i)))
        return True


def learning_rate(config: FinetuneConfig) -> Any:
    """SB3's ``learning_rate``: the constant, or a schedule of progress (1 at the start, 0 at --steps)."""
    if config.lr_schedule == "linear":
        return LinearSchedule(config.learning_rate, 0.0, 1.0)
    return config.learning_rate


def make_env_fn(
    task: TaskSpec,
    context: int,
    seed: int,
    rank: int,
    shaping_gamma: float | None = None,
    curriculum: bool = False,
    achieved_key: str | None = None,
    failure_replay: float = 0.0,
    router: TrainingRouter | None = None,
    route_share: float = 0.0,
):
    """A builder of env ``rank`` for SB3's VecEnvs (shaping, curriculum, reached goals in ``info`` for
    self-imitation, routed training episodes, history wrapper)."""

    def build():
        env = task.make_env()
        if shaping_gamma is not None:
            from lam_robot.train.shaping import MazePathShaping

            env = MazePathShaping(env, shaping_gamma)
        if curriculum:
            from lam_robot.train.curriculum import MazeGoalCurriculum

            env = MazeGoalCurriculum(env, task.is_success)
        if failure_replay > 0:
            from lam_robot.train.curriculum import FailedStartReplay

            env = FailedStartReplay(env, task.is_success, failure_replay, task.require_goals("--failure-replay"))
        if achieved_key is not None:
            env = ReachedGoals(env, achieved_key)
        if router is not None:
            env = WaypointGoals(env, router, route_share, seed=10_000 * seed + rank)
        env = HistoryObservation(Monitor(env), task, context)
        env.reset(seed=seed + rank)
        env.action_space.seed(seed + rank)
        return env

    return build


def finetune_task(config: FinetuneConfig, ckpt_task: TaskSpec) -> TaskSpec:
    """The task to fine-tune in: ``config.task`` or the checkpoint's, with the dense reward if asked."""
    task = load_task(config.task) if config.task is not None else ckpt_task
    if config.dense and not is_maze(task):
        task = dataclasses.replace(task, env_kwargs={**task.env_kwargs, "reward_type": "dense"})
    return task


def check_maze_only(config: FinetuneConfig, task: TaskSpec) -> None:
    """The one-line error for a maze-only option on ``task`` (not a maze)."""
    for flag, on in (("--goal-curriculum", config.goal_curriculum), ("--failure-replay", config.failure_replay)):
        if on:
            raise LamRobotError(f"{flag} works on maze tasks only, not {task.name!r}")


def is_maze(task: TaskSpec) -> bool:
    """Maze tasks get shortest-path shaping as their dense reward (see train/shaping.py)."""
    return task.expert == "maze-waypoints"


class _EvalAndSave(BaseCallback):
    """At each evaluation point: success rate in the sim, a log row, the resume snapshot."""

    def __init__(self, run: FinetuneRun) -> None:
        super().__init__()
        self.run = run
        self.points = [p for p in run.config.eval_points() if p > run.resumed_from]

    def _on_step(self) -> bool:
        if self.run.bar is not None:
            self.run.bar.update(self.training_env.num_envs)
        if self.points and self.num_timesteps >= self.points[0]:
            while self.points and self.num_timesteps >= self.points[0]:
                self.points.pop(0)
            self.run.evaluate_and_log(self.num_timesteps)
            self.run.save_last()
        return True


def vec_env(fns: list, config: FinetuneConfig) -> VecEnv:
    """The envs as --workers (Ray actors) or --vec-env (one process, or one per env) say."""
    if config.workers is not None:
        from lam_robot.scale.ray_vec_env import RayVecEnv

        return RayVecEnv(fns, config.workers, config.ray_address)
    return SubprocVecEnv(fns, start_method="forkserver") if config.vec_env == "subproc" else DummyVecEnv(fns)


@dataclasses.dataclass
class FinetuneResult:
    """What a fine-tuning run did: success before and after, env steps, speed."""

    out: Path
    start_success: float
    final_success: float
    env_steps: int
    steps_per_second: float
    resumed_from: int
    restored_transitions: int = 0
    """SAC: online transitions a resumed run got back from its replay buffer file."""


def finetune(config: FinetuneConfig | None = None, /, *, progress: bool = True, **fields: Any) -> FinetuneResult:
    """Fine-tune a BC checkpoint with PPO or SAC (or resume the run in ``config.out``); keyword fields build the
    config."""
    config = FinetuneConfig.build(config, fields)
    with one_torch_thread():
        return FinetuneRun(config, progress=progress).train()


class FinetuneRun:
    """One fine-tuning run: builds PPO or SAC from the BC checkpoint, trains, logs, saves, resumes."""

    model: Any
    """FinetunePPO, or FinetuneSAC with --algo sac."""

    def __init__(self, config: FinetuneConfig, progress: bool = True) -> None:
        self.config = config
        self.out = Path(config.out)
        self.progress = progress
        target = load_task(config.task) if config.task is not None else None
        if target is not None and not is_maze(target):  # said before any mapping
            check_maze_only(config, target)
        # Another task's checkpoint (or a multi-task one) is mapped onto the task here (said in one line).
        ckpt = checkpoint_for_task(config.policy, target, "--policy")
        self.bc_task = ckpt.task
        self.task = finetune_task(config, ckpt.task)
        self.normalizer: Normalizer = ckpt.normalizer
        if not is_maze(self.task):
            check_maze_only(config, self.task)
        self.sac = config.algo == "sac"
        if self.sac and (config.dense or config.goal_curriculum or config.failure_replay):
            raise LamRobotError(
                "--algo sac does not take --dense, --goal-curriculum or --failure-replay yet; drop them"
            )
        if config.failure_replay:
            self.task.require_goals("--failure-replay")
        # PPO on a goal task: reached goals in ``info`` for self-imitation and for the routing paths
        self.achieved_key = self.task.goal_keys[0] if self.task.goal_keys and not self.sac else None
        if config.self_imitation == "hindsight":
            self.task.require_goals("--self-imitation hindsight")
            if config.dense and is_maze(self.task) and config.si_filter == "value":
                raise LamRobotError(
                    "--self-imitation with --si-filter value compares returns of the env's own reward with the "
                    "critic, which --dense trains on maze shaping; drop --dense or pass --si-filter none"
                )
        env = self.task.make_env()
        try:
            if self.sac:
                from lam_robot.train.sac import check_sac_task

                self.her = check_sac_task(self.task, env, config.her)
                if config.demo_her and not self.her:
                    raise LamRobotError("--demo-her relabels demos as HER does; it needs HER on: drop --her False")
            TransformerPolicy(ckpt.net, ckpt.normalizer, ckpt.task).check_env(self.task, env)
        finally:
            env.close()
        self.network = dataclasses.asdict(ckpt.net.config) | {"dropout": 0.0}  # no dropout in RL rollouts
        task_si_decay = self.task.finetune_default("si_decay")
        self.si_decay = config.si_decay if config.si_decay is not None else task_si_decay
        if config.self_imitation == "hindsight" and config.si_decay is None and self.si_decay != 1.0:
            print(f"note: --si-decay {self.si_decay:g} (task {self.task.name}'s default, from [finetune] in its spec)")
        resume = prepare_run_dir(
            self.out,
            config.overwrite,
            OUR_FILES,
            config.to_dict(),
            {"steps", "out", "eval_every", "eval_episodes", "early_evals", "overwrite", "workers", "ray_address"},
            {"n_envs": config.envs(), "critic_warmup": config.warmup(), "si_decay": task_si_decay},
        )
        self.router: TrainingRouter | None = None  # --route-training's graph (_build_model makes it)
        self.model = self._build_sac() if self.sac else self._build_model()
        if not self.sac:
            self.model.failure_replay = config.failure_replay > 0
        self.restored_transitions = 0
        if self.sac and not config.from_scratch:  # a resumed run's actor is then overwritten; the proposal stays BC
            self.model.start_from_bc(ckpt.net, config.init_log_std, config.bc_proposal)
        if resume is not None:
            self._load_last()
            self.model.num_timesteps = resume["num_timesteps"]
            if self.sac:
                from lam_robot.train.sac_files import restore_replay

                self.model.gradient_steps_done = resume["gradient_steps_done"]
                self.restored_transitions = restore_replay(self.model.replay_buffer, self.out / LAST,
                                                           resume["num_timesteps"])  # fmt: skip
                if not self.restored_transitions:  # no usable buffer file: refill before training on
                    self.model.learning_starts += resume["num_timesteps"]
            else:
                self.model.rollouts_done = resume["rollouts_done"]
            for i, radius in enumerate(resume.get("curriculum_radius", [])):
                self.venv.env_method("set_radius", radius, indices=i)
            for i, pairs in enumerate(resume.get("failed_pairs", [])):
                self.venv.env_method("set_failed", pairs, indices=i)
        elif not config.from_scratch and not self.sac:
            self.model.policy.load_bc(ckpt.net, config.init_log_std)
        elif config.init_log_std is not None:
            with torch.no_grad():
                if self.sac:
                    self.model.policy.actor.log_std.bias.fill_(config.init_log_std)
                else:
                    self.model.policy.log_std.fill_(config.init_log_std)
        self.resumed_from = resume["num_timesteps"] if resume else 0
        self.seconds_before = float(resume.get("wall_seconds", 0.0)) if resume else 0.0  # of the run's earlier legs
        self.t0 = time.perf_counter()  # train() restarts it; a snapshot may be saved before (tests do)
        if config.demos is not None and self.sac:
            self.model.demo_buffer = self._demo_buffer(config.demos)
        elif config.demos is not None:  # checked even when the regulariser is off, so a wrong file is caught early
            windows = self._demo_windows(config.demos)
            if config.bc_weight > 0:
                self.model.bc_windows = windows
        if self.achieved_key is not None:
            self.model.reached_paths = self._reached_paths(resume is not None)
            self.model.router = self.router
        self.si_env: Any = None
        if config.self_imitation == "hindsight":
            self.si_env = self.task.make_env()  # for its compute_reward
            self.model.self_imitation = SelfImitation(
                self.si_env,
                config.envs(),
                goal_columns(self.task, self.si_env),
                self.normalizer.action_to_unit,
                capacity=config.si_buffer,
                horizon=config.si_horizon,
                gamma=config.gamma,
                keep=config.si_filter,
                seed=config.seed + self.resumed_from,
                drop_detours=config.si_drop_detours,
                actions=config.si_actions,
                labels=config.si_labels,
                priority=config.si_priority,
                final=config.si_final,
            )

    def _reached_paths(self, resumed: bool) -> ReachedPaths:
        """The routing paths: a resumed run's so far, or a new run's demos (the rollouts' follow)."""
        saved = self.out / PATHS_FILE
        if resumed and saved.is_file():
            return ReachedPaths.load(saved)
        paths = ReachedPaths()
        if self.config.demos is not None:
            with DemoFile(self.config.demos, task=self.bc_task) as f:
                for name in f.demo_names:
                    achieved = f.episode(name)["obs"].get(self.achieved_key)
                    if achieved is not None:  # another task's demos may lack it
                        paths.add(achieved, fixed=True)
        return paths

    def _build_model(self) -> FinetunePPO:
        c = self.config
        self.router = TrainingRouter(self.task, EvaluateConfig.route_ahead) if c.route_training > 0 else None
        shaping = c.gamma if c.dense and is_maze(self.task) else None
        fns = [
            make_env_fn(
                self.task,
                self.network["context"],
                c.seed,
                i,
                shaping,
                c.goal_curriculum,
                self.achieved_key,
                c.failure_replay,
                self.router,
                c.route_training,
            )
            for i in range(c.envs())
        ]
        venv = vec_env(fns, c)
        self.venv: VecEnv = venv
        torch.manual_seed(c.seed)
        return FinetunePPO(
            TransformerActorCriticPolicy,
            venv,
            learning_rate=learning_rate(c),
            n_steps=c.n_steps,
            batch_size=c.batch_size,
            n_epochs=c.n_epochs,
            gamma=c.gamma,
            gae_lambda=c.gae_lambda,
            clip_range=c.clip_range,
            ent_coef=c.ent_coef,
            seed=c.seed,
            verbose=0,
            device="cpu",
            policy_kwargs={
                "network": self.network,
                "normalizer": self.normalizer.to_dict(),
                "actor_lr_scale": c.actor_lr_scale,
            },
            critic_warmup=c.warmup(),
            bc_weight=c.bc_weight,
            bc_decay=c.bc_decay,
            bc_steps=c.bc_steps,
            si_weight=c.si_weight,
            si_decay=self.si_decay,
        )

    def _build_sac(self) -> Any:
        from lam_robot.train.sac import FinetuneSAC, TransformerSACPolicy, goal_layout, make_sac_env_fn, sac_schedule

        c = self.config
        fns = [make_sac_env_fn(self.task, self.network["context"], c.seed, i) for i in range(c.envs())]
        venv = vec_env(fns, c)
        self.venv = venv
        probe = self.task.make_env()
        try:
            _, goal_at = goal_layout(self.task, probe)
        finally:
            probe.close()
        learning_starts = c.learning_starts
        kwargs: dict[str, Any] = {}
        if self.her:
            from stable_baselines3 import HerReplayBuffer

            kwargs = {
                "replay_buffer_class": HerReplayBuffer,
                "replay_buffer_kwargs": {"n_sampled_goal": c.her_goals, "goal_selection_strategy": "future"},
            }
            # HER samples only from finished episodes: wait for one in every env.
            learning_starts = max(learning_starts, (self.task.horizon + 1) * c.envs())
        torch.manual_seed(c.seed)
        return FinetuneSAC(
            TransformerSACPolicy,
            venv,
            learning_rate=learning_rate(c),
            buffer_size=c.buffer_size,
            learning_starts=learning_starts,
            batch_size=c.batch_size,
            tau=c.tau,
            gamma=c.gamma,
            **sac_schedule(c.utd, c.envs()),
            ent_coef=f"auto_{c.init_ent_coef}",
            target_entropy="auto" if c.target_entropy is None else c.target_entropy,
            seed=c.seed,
            verbose=0,
            device="cpu",
            policy_kwargs={"network": self.network, "normalizer": self.normalizer.to_dict(), "goal_at": goal_at},
            critic_warmup=c.warmup(),
            actor_lr_scale=c.actor_lr_scale,
            demo_ratio=c.demo_ratio,
            bc_weight=c.bc_weight,
            bc_decay=c.bc_decay,
            q_filter=c.q_filter,
            actor_update=c.actor_update,
            awac_lambda=c.awac_lambda,
            bc_own_goals=c.demo_her_critics_only,
            **kwargs,
        )

    def _demo_buffer(self, demos_path: Path) -> Any:
        from lam_robot.train.sac import DemoBuffer

        with DemoFile(demos_path, task=self.bc_task) as demos:
            require_same_task(
                demos.task,
                self.bc_task,
                f"{demos_path} holds demos of task",
                "give demos of the task the policy was trained on",
            )
        env = self.task.make_env()
        try:
            buffer = DemoBuffer.from_file(
                demos_path, self.bc_task, self.task, env, self.network["context"], self.normalizer
            )
        finally:
            env.close()
        if self.config.demo_her:
            venv = self.venv

            def compute_reward(achieved: np.ndarray, goal: np.ndarray) -> np.ndarray:
                # As SB3's HerReplayBuffer asks it: the first env's own compute_reward.
                return venv.env_method("compute_reward", achieved, goal, [{}] * len(achieved), indices=[0])[0]

            buffer.relabel_goals(self.config.her_goals, compute_reward)
        return buffer

    def _demo_windows(self, demos_path: Path) -> BCWindows:
        with DemoFile(demos_path, check_values=True, task=self.bc_task) as demos:
            require_same_task(
                demos.task,
                self.bc_task,
                f"{demos_path} holds demos of task",
                "give demos of the task the policy was trained on",
            )
            episodes = demos.policy_episodes("train") + demos.policy_episodes("valid")
        windows = build_windows(
            [
                e._replace(obs=self.normalizer.obs(e.obs), actions=self.normalizer.action_to_unit(e.actions))
                for e in episodes
            ],
            self.network["context"],
        )
        t = torch.from_numpy
        return t(windows.obs), t(windows.actions), t(windows.valid), t(windows.labels), t(windows.starts)

    # --- evaluation, logging, snapshots ---------------------------------------------------------

    def current_policy(self) -> TransformerPolicy:
        """The actor as it is now, as a BC-format policy."""
        return TransformerPolicy(self.model.policy.to_bc_net(), self.normalizer, self.bc_task, seed=self.config.seed)

    def evaluate_and_log(self, env_steps: int) -> float:
        """Success in the sim now: a log.csv row, a TensorBoard scalar, the progress bar."""
        result = evaluate_policy(
            self.task,
            self.current_policy(),
            "finetune",
            self.config.eval_episodes,
            seed=10_000 + self.config.seed * 1000,
            n_envs=4,
        )
        log_path = self.out / LOG
        new = not log_path.exists()
        with open(log_path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(
                    ["env_steps", "success_rate", "ci_low", "ci_high", "mean_return", "log_std", "wall_seconds"]
                )
            writer.writerow(
                [
                    env_steps,
                    f"{result.success_rate:.4f}",
                    f"{result.ci_low:.4f}",
                    f"{result.ci_high:.4f}",
                    f"{result.mean_return:.3f}",
                    f"{self._log_std():.4f}",
                    f"{self._wall_seconds():.1f}",
                ]
            )
        self.model.logger.record("eval/success_rate", result.success_rate)
        self.model.logger.dump(env_steps)
        if self.bar is not None:
            self.bar.set_postfix(success=f"{result.success_rate:.2f}", refresh=False)
        self.last_logged, self.last_success = env_steps, result.success_rate
        return result.success_rate

    def _last_log_row(self) -> tuple[int, float]:
        """(env steps, success) of log.csv's last evaluation, so a resumed run with nothing left to train
        does not evaluate and log the same step again; (-1, nan) for a fresh run."""
        if self.resumed_from == 0 or not (self.out / LOG).is_file():
            return -1, float("nan")
        with open(self.out / LOG) as f:
            rows = list(csv.DictReader(f))
        return (int(rows[-1]["env_steps"]), float(rows[-1]["success_rate"])) if rows else (-1, float("nan"))

    def _wall_seconds(self) -> float:
        """Seconds this run has trained, over its resumed legs (the time after a killed leg's last snapshot is
        not counted: that work is done again)."""
        return self.seconds_before + time.perf_counter() - self.t0

    def _log_std(self) -> float:
        if self.sac:
            return float(self.model.policy.mean_log_std())
        return float(self.model.policy.log_std.detach().mean())

    def _log_to_tensorboard(self) -> None:
        """SB3's training scalars (losses, explained variance, BC weight) and our evaluations, as
        TensorBoard events; a resumed run adds an event file to the same directory."""
        import importlib.util

        from stable_baselines3.common.logger import configure

        formats = ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
        self.model.set_logger(configure(str(self.out / TENSORBOARD), formats))

    def save_last(self) -> None:
        """The resume snapshot in OUT/last/: weights, optimizer, counters, curriculum (SAC: and the online replay
        buffer, not the demo one, which is re-read from --demos; PPO: not the self-imitation buffer, which a
        resumed run refills from its new rollouts)."""
        policy = {k: v for k, v in self.model.policy.state_dict().items() if not k.startswith(ALIASES)}
        state: dict[str, Any] = {
            "num_timesteps": int(self.model.num_timesteps),
            "config": self.config.to_dict(),
            "wall_seconds": round(self._wall_seconds(), 1),
        }
        if self.sac:
            from lam_robot.train.sac import sac_extras
            from lam_robot.train.sac_files import save_replay

            state["gradient_steps_done"] = int(self.model.gradient_steps_done)
            # The buffer first: a kill between the two writes leaves a buffer whose stamp does not match.
            save_replay(self.model.replay_buffer, self.out / LAST, state["num_timesteps"])
            save_training_state(self.out / LAST, policy, self.model.actor.optimizer, state, sac_extras(self.model))
            return
        state["rollouts_done"] = int(self.model.rollouts_done)
        if self.model.reached_paths is not None:
            self.model.reached_paths.save(self.out / PATHS_FILE)
        if self.config.goal_curriculum:
            state["curriculum_radius"] = [float(r) for r in self.venv.get_attr("radius")]
        if self.config.failure_replay:
            state["failed_pairs"] = [[list(p) for p in pairs] for pairs in self.venv.get_attr("failed")]
        save_training_state(self.out / LAST, policy, self.model.policy.optimizer, state)

    def _load_last(self) -> None:
        if self.sac:
            from lam_robot.train.sac import restore_sac_extras

            weights, extras = load_training_state(self.out / LAST, self.model.actor.optimizer)
            restore_sac_extras(self.model, extras)
        else:
            weights, _ = load_training_state(self.out / LAST, self.model.policy.optimizer)
        missing, unexpected = self.model.policy.load_state_dict(weights, strict=False)
        if unexpected or any(not k.startswith(ALIASES) for k in missing):
            raise LamRobotError(f"{self.out / LAST} does not match this network; pass --overwrite to start again")

    def train(self) -> FinetuneResult:
        """Train to ``config.steps`` (resuming if a snapshot exists), then write every artefact."""
        from tqdm import tqdm

        c = self.config
        self.t0 = time.perf_counter()
        self.bar = None
        self.last_logged, self.last_success = self._last_log_row()
        remaining = c.steps - self.resumed_from
        self._log_to_tensorboard()
        start_success = float("nan")
        if self.resumed_from == 0:
            start_success = self.evaluate_and_log(0)
        with tqdm(
            total=c.steps,
            initial=min(self.resumed_from, c.steps),
            unit="step",
            dynamic_ncols=True,
            desc=f"finetune {self.task.name}",
            disable=not self.progress,
        ) as bar:
            self.bar = bar
            learn_start = time.perf_counter()
            if remaining > 0:
                self.model.learn(remaining, callback=_EvalAndSave(self), reset_num_timesteps=False)
            learn_seconds = time.perf_counter() - learn_start
        self.bar = None
        final = (
            self.last_success
            if self.last_logged == self.model.num_timesteps
            else self.evaluate_and_log(int(self.model.num_timesteps))
        )
        self.save_last()
        net: TransformerPolicyNet = self.model.policy.to_bc_net()
        used = {"si_decay": self.si_decay} if c.self_imitation != "none" else {}  # its task's default or the flag
        save_checkpoint(
            self.out,
            net,
            self.normalizer,
            self.bc_task,
            {
                "finetune": c.to_dict() | used,
                "env_steps": int(self.model.num_timesteps),
                "finetune_task": self.task.to_dict(),
            },
        )
        self.model.save(self.out / ("sac.zip" if self.sac else "ppo.zip"))
        plot_finetune_curve(self.out / LOG, self.out / "curves.png", title=f"{self.task.name}: {self.out.name}")
        self.venv.close()
        if self.si_env is not None:
            self.si_env.close()
        if self.router is not None:
            self.router.close()
        done = max(0, int(self.model.num_timesteps) - self.resumed_from)
        return FinetuneResult(
            self.out,
            start_success,
            final,
            int(self.model.num_timesteps),
            done / learn_seconds if learn_seconds > 0 and done else 0.0,
            self.resumed_from,
            self.restored_transitions,
        )
