"""Run configurations: one dataclass per command, a docstring under each field (the CLI turns them into
options and help through tyro), every field validated in ``__post_init__`` with a one-line error.
``None`` means "not set" (never "" or NaN). No torch here, so building the command line stays fast."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from lam_robot.errors import LamRobotError

C = TypeVar("C", bound="Config")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type (str -> Path, int -> float), or a one-line error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(name, value, inner)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, str | Path) or not isinstance(value, list | tuple):
            raise LamRobotError(f"{_flag(name)} must be a list, got {value!r}")
        return tuple(_check_type(name, v, args[0]) for v in value)
    if origin is Literal:
        if value not in args:
            raise LamRobotError(f"{_flag(name)} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if hint is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise LamRobotError(f"{_flag(name)} must be a path, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise LamRobotError(f"{_flag(name)} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise LamRobotError(f"{_flag(name)} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise LamRobotError(f"{_flag(name)} must be a finite number, got {value!r}")
    if hint is str:
        if isinstance(value, str) and value:
            return value
        raise LamRobotError(f"{_flag(name)} must be a non-empty string, got {value!r}")
    return value


@dataclasses.dataclass
class Config:
    """Base of every run configuration: type checks, validation, and JSON that keeps paths."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            hint = _field_types(type(self))[field.name]
            setattr(self, field.name, _check_type(field.name, getattr(self, field.name), hint))
        self.validate()

    def validate(self) -> None:
        """Range checks beyond the field types; raise LamRobotError with the flag and the fix."""

    def _require(self, rule: str, *names: str) -> None:
        tests = {
            "positive": lambda v: v > 0,
            "non-negative": lambda v: v >= 0,
            "in [0, 1)": lambda v: 0 <= v < 1,
            "in [0, 1]": lambda v: 0 <= v <= 1,
            "in (0, 1]": lambda v: 0 < v <= 1,
        }
        for name in names:
            value = getattr(self, name)
            if value is not None and not tests[rule](value):
                raise LamRobotError(f"{_flag(name)} must be {rule}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; paths as strings, tuples as lists."""

        def plain(v: Any) -> Any:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return str(v) if isinstance(v, Path) else v

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls: type[C], raw: dict[str, Any]) -> C:
        """The config saved by ``to_dict`` (entries this version does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    @classmethod
    def build(cls: type[C], config: C | None, overrides: dict[str, Any]) -> C:
        """What the API functions take: a config, keyword arguments, or a config with some fields replaced."""
        if config is None:
            return cls(**overrides)
        if not isinstance(config, cls):
            raise LamRobotError(f"expected a {cls.__name__}, got {type(config).__name__}")
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise LamRobotError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
        return dataclasses.replace(config, **overrides) if overrides else config


def _check_ray_address(config: Any) -> None:
    if config.ray_address is not None and config.workers is None:
        raise LamRobotError("--ray-address needs --workers N (how many Ray workers to run)")


@dataclasses.dataclass(kw_only=True)
class RouteOptions(Config):
    """Routing a goal-conditioned policy by waypoints (evaluate and record; README, "Routed over the goals a run
    reached")."""

    route: bool = False
    """Goal tasks: while the goal is far, give the policy a waypoint on the way instead, found over the goals its
    fine-tuning run's training episodes and demos reached (RUN/reached_paths.npz; no map). The env still judges
    (and a recording stores) the real goal."""
    route_over: tuple[Path, ...] = ()
    """Route (implies --route) over the achieved goals of every episode in these demo or play files of the task
    instead of a fine-tuning run's reached paths: any goal-conditioned policy (BC, pretrained, fine-tuned) can then
    be routed, e.g. over the play data it was pretrained on."""
    route_ahead: int = 40
    """With --route: how many env steps ahead along the route (as the recorded paths took them) the waypoint
    lies (at most, with --route-sight)."""
    route_sight: float = 0.0
    """With --route: when above 0, where the route strays more than this many success radii from a straight
    line within --route-ahead steps, the policy aims through the last point before that bend, so that it is not
    asked to aim across a corner the route goes round. Off by default: 0.45 lifted nav-medium (89.3% to 96.0%) and cost
    nav-large (83.3% to 68.7%; README)."""

    def _check_route(self, workers: int | None) -> None:
        self._require("positive", "route_ahead")
        self._require("non-negative", "route_sight")
        if self.routed and workers is not None:
            raise LamRobotError("--route runs the episodes in this process; drop --workers")

    @property
    def routed(self) -> bool:
        """Whether the policy is routed (--route or --route-over)."""
        return self.route or bool(self.route_over)


@dataclasses.dataclass
class RecordConfig(RouteOptions):
    """Record episodes of a policy, the task's expert or a human (teleoperation) into an HDF5 demo file."""

    task: str
    """Task name (see `lam-robot tasks`) or path to a .toml task spec."""
    out: Path
    """Demo file; appended to if it exists."""
    source: str = "expert"
    """Who acts: expert, random, a checkpoint directory (DIR or policy:DIR), RUN/ppo.zip, RUN/sac.zip,
    py:module:attr; or a teleoperation device: keyboard, gamepad, spacemouse, or replay:FILE (.jsonl events or a
    demo file)."""
    episodes: int = 10
    """Episodes to keep."""
    seed: int | None = None
    """Episode i is reset with seed SEED+i (default: 0, or one past the file's last seed when appending)."""
    noise: float = 0.0
    """Gaussian action noise (sigma), clipped to the action bounds (imitates imperfect teleoperation)."""
    only_success: bool = False
    """Keep only successful episodes."""
    max_attempts: int | None = None
    """With --only-success, give up after this many episodes (default: 10 x --episodes)."""
    n_envs: int = 1
    """Envs stepped in lockstep, batching the policy."""
    valid_fraction: float = 0.1
    """Share of demos in mask/valid."""
    intervene: str | None = None
    """Let a human take over the --source policy at any step and hand back (HG-DAgger); the device:
    keyboard, gamepad, spacemouse or replay:FILE."""
    gain: float | None = None
    """Teleoperation: device input to action scale (default 1.0)."""
    dead_zone: float | None = None
    """Teleoperation: analog stick / SpaceMouse travel ignored (default 0.1)."""
    viewer: bool | None = None
    """Teleoperation: show a live MuJoCo viewer (default: when a display exists and a device is live)."""
    realtime: bool | None = None
    """Teleoperation: pace at the task's control frequency (default: live devices yes, replay no)."""
    workers: int | None = None
    """Run episodes in this many Ray worker processes (default: none, everything in this process); episode i
    still gets seed SEED+i, so the result does not depend on the worker count."""
    ray_address: str | None = None
    """With --workers: the Ray cluster to join (auto: the one `ray start --head` started on this machine, or
    HOST:PORT); default: a local Ray started for this run."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require("positive", "episodes", "n_envs", "max_attempts", "gain", "workers")
        _check_ray_address(self)
        self._require("non-negative", "noise")
        self._require("in [0, 1)", "valid_fraction", "dead_zone")
        self._check_route(self.workers)


@dataclasses.dataclass
class BCConfig(Config):
    """Behaviour-clone a Transformer policy on a demo file by Gaussian NLL or MSE (resumable); these settings
    are saved in every checkpoint."""

    data: Path
    """HDF5 demo file; trains on mask/train, validates on mask/valid."""
    out: Path
    """Run directory: best checkpoint, last/ (for resuming), log.csv, curves.png."""
    more_data: tuple[Path, ...] = ()
    """More demo files, of other tasks or variants, trained together with --data (multi-task BC): one shared
    Transformer trunk, with an input and output adapter per task family (tasks whose env family and
    observation/action sizes agree, e.g. all PointMaze layouts, share one). The checkpoint records its tasks;
    --data's task is its default."""
    task: str | None = None
    """Refuse --data unless it was recorded in this task; a file written by another program (robomimic's
    layout without a task spec) is read as this task."""
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
    """Attention heads; must divide --d-model."""
    dropout: float = 0.1
    """Dropout rate during training."""
    init_log_std: float = -1.0
    """Initial log-std of the action Gaussian (normalised units); MSE leaves it there."""
    eval_every: int | None = None
    """Evaluate success in the sim every N epochs (default: never)."""
    eval_episodes: int = 20
    """Episodes per sim evaluation."""
    eval_seed: int = 1000
    """First seed of the sim evaluations (--eval-every)."""
    overwrite: bool = False
    """Discard a previous run in --out instead of resuming it."""
    relabel: Literal["none", "hindsight"] = "none"
    """hindsight: train on windows whose goal is one the same episode reached later (goal-conditioned
    tasks; the goal is the same across each window's context)."""
    relabel_ratio: float = 0.5
    """With --relabel hindsight: share of training windows that get a hindsight goal (the rest keep theirs)."""
    relabel_horizon: float = 50.0
    """With --relabel hindsight: mean steps between a window's last step and the step whose reached goal it
    gets (geometric, cut at the episode's end)."""
    init_from: Path | None = None
    """Start from this checkpoint's weights, normalisation and architecture (e.g. a `lam-robot pretrain` run),
    of this task or another (or several): the layers whose name and shape match are mapped, the others (an
    input layer or action head of other sizes) re-initialised, and one line lists both."""
    play: Path | None = None
    """Unlabelled play data of the same task (`record --source play`) trained alongside the demos, each of its
    windows with a hindsight goal (needs --relabel hindsight); keeps a pretrained policy's reach while the
    few demos are learnt."""
    play_fraction: float = 0.5
    """With --play: share of every batch drawn from the play windows (an epoch is still one pass over the demos)."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require("in [0, 1]", "relabel_ratio")
        self._require("in [0, 1)", "play_fraction")
        if self.play is not None and self.relabel != "hindsight":
            raise LamRobotError("--play needs --relabel hindsight (play data has no goals of its own)")
        if self.data in self.more_data or len(set(self.more_data)) != len(self.more_data):
            raise LamRobotError("--more-data lists a file twice (or --data again); give each demo file once")
        self._require("non-negative", "relabel_horizon")
        self._require(
            "positive",
            "context",
            "epochs",
            "batch_size",
            "lr",
            "grad_clip",
            "d_model",
            "n_layers",
            "n_heads",
            "eval_every",
            "eval_episodes",
        )
        self._require("non-negative", "weight_decay")
        self._require("in [0, 1)", "warmup_fraction", "dropout")
        if self.d_model % self.n_heads:
            raise LamRobotError(f"--n-heads ({self.n_heads}) must divide --d-model ({self.d_model})")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BCConfig:
        """Also reads checkpoints written before "unset" was None (eval_every 0 meant never)."""
        return super().from_dict({**raw, "eval_every": raw.get("eval_every") or None})


@dataclasses.dataclass
class PretrainConfig(BCConfig):
    """Pretrain the Transformer on unlabelled play data (no goals, rewards or successes): goal-conditioned
    BC on hindsight goals (GCSL); trajectories without actions are first labelled by an inverse-dynamics
    model trained on --demos. Then `train-bc --init-from OUT` or `finetune --policy OUT`."""

    more_data: tuple[Path, ...] = ()
    """More play (or demo) files of --data's task, pretrained on together with it; each may lack actions (then
    labelled by the inverse-dynamics model, fit once on --demos)."""
    demos: Path | None = None
    """Labelled demos of the same task: train the inverse-dynamics model that labels play data without
    actions (needed only then)."""
    relabel: Literal["none", "hindsight"] = "hindsight"
    """Play data has no goals: every window gets a hindsight goal."""
    relabel_ratio: float = 1.0
    """Share of windows with a hindsight goal (play data has no other goal)."""
    idm_epochs: int = 200
    """Epochs of the inverse-dynamics model (only for play data without actions)."""

    def validate(self) -> None:
        """Pretraining always relabels every window."""
        super().validate()
        if self.play is not None:
            raise LamRobotError("pretrain trains on --data itself; --play belongs to train-bc")
        self._require("positive", "idm_epochs")
        if self.relabel != "hindsight" or self.relabel_ratio != 1.0:
            raise LamRobotError("pretrain relabels every window: keep --relabel hindsight --relabel-ratio 1")


@dataclasses.dataclass
class FinetuneConfig(Config):
    """Fine-tune a BC checkpoint with SB3 PPO (or SAC) in the sim (BC then RL), with critic warm-up, a slower actor
    and a decaying BC regulariser (resumable); these settings are saved with its checkpoints."""

    policy: Path
    """BC checkpoint directory (from train-bc): the actor to fine-tune, and its normalisation."""
    out: Path
    """Run directory: fine-tuned checkpoint (BC format), ppo.zip (or sac.zip), last/ (SAC: with its replay
    buffer), log.csv, curves.png."""
    steps: int = 100_000
    """Environment steps of PPO (or SAC)."""
    algo: Literal["ppo", "sac"] = "ppo"
    """ppo (on-policy, the default) or sac (off-policy: demos kept in a second replay buffer, HER on goal tasks)."""
    task: str | None = None
    """Task to fine-tune in (default: the checkpoint's task)."""
    demos: Path | None = None
    """Demo file for the BC regulariser (without it there is none)."""
    n_envs: int | None = None
    """Parallel envs (default: 8 for PPO; 1 for SAC, whose HER waits for a finished episode in every env)."""
    vec_env: Literal["dummy", "subproc"] = "dummy"
    """dummy (one process) or subproc (one process per env)."""
    workers: int | None = None
    """Step the envs in this many Ray worker processes (each holds n_envs / workers envs); a worker that dies
    is replaced and its envs' episodes in progress end early (default: --vec-env decides)."""
    ray_address: str | None = None
    """With --workers: the Ray cluster to join (auto, or HOST:PORT); default: a local Ray started for this run."""
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
    failure_replay: float = 0.0
    """Maze tasks, PPO: the probability that a training episode restarts from the start and goal cells of an
    earlier failed one (each failed pair is retried once; failing again queues it again); 0: off. Evaluation
    keeps the task's own draws."""
    route_training: float = 0.0
    """PPO on goal tasks: the share of training episodes given waypoints, as `evaluate --route` gives them, over
    the goals the run has reached so far (graph rebuilt every 20 rollouts); the env still rewards the real goal,
    and self-imitation relabels those episodes with the far goals they reach. 0: off. Envs in this process only
    (not --vec-env subproc or --workers)."""
    learning_rate: float = 3e-4
    """Critic learning rate (Adam)."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """constant, or linear: every learning rate (actor, critic, BC and self-imitation steps) falls linearly to 0
    at --steps (PPO's usual annealing, so that the last updates are small)."""
    actor_lr_scale: float = 0.3
    """Actor learning rate as a fraction of the critic's, in (0, 10]."""
    critic_warmup: int | None = None
    """Only the critic learns at the start: PPO, for this many rollouts (default 2); SAC, for this many
    gradient steps (default 1000)."""
    init_log_std: float | None = None
    """Initial log-std of the actor (default: keep the BC checkpoint's)."""
    bc_weight: float = 1.0
    """Initial weight of the BC regulariser; it needs --demos (without them there is none); 0 turns it off.
    On grasp from 10 noisy demos it made the difference between 26% -> 2% and 26% -> 64% in 60k steps."""
    bc_decay: float = 0.95
    """Factor in (0, 1] applied to the BC weight after every rollout (SAC: every 1000 gradient steps)."""
    bc_steps: int = 16
    """BC gradient steps after every PPO update while the weight is on (PPO itself takes
    n_epochs x n_envs x n_steps / batch_size = 20 by default)."""
    self_imitation: Literal["none", "hindsight"] = "none"
    """PPO on goal tasks: hindsight relabels the policy's own finished rollout episodes with goals they
    reached later, keeps the windows worth imitating (--si-filter) and adds their NLL to the BC regulariser
    (with or without --demos). The buffer is not saved in OUT/last/: a resumed run starts it empty."""
    si_weight: float = 1.0
    """Initial weight of the self-imitation NLL (added to the demos' in each of the --bc-steps steps)."""
    si_decay: float | None = None
    """Factor in (0, 1] applied to the self-imitation weight after every rollout (default: the task spec's
    [finetune] si_decay, else 1, constant, best measured on the mazes; grasp's spec says 0.95, where a constant
    weight holds PPO back: README)."""
    si_buffer: int = 50_000
    """Self-imitation buffer size in relabelled windows (oldest dropped first)."""
    si_horizon: float = 50.0
    """Mean steps from a relabelled window's step to the step whose reached goal it gets (geometric)."""
    si_filter: Literal["value", "none", "progress"] = "value"
    """value: keep a relabelled window only if its discounted return (env's compute_reward, to the first step
    that reaches the goal) beats the critic's value of it (ESIL); progress: keep the windows that neared their goal
    faster (goal-space distance per step) than the median window of the latest 64 episodes; none: keep every
    relabelled window (each reaches its goal by construction)."""
    si_drop_detours: bool = False
    """Self-imitation: drop a relabelled window whose path leaves the place it started from and comes back
    to it before reaching its goal (a loop; the env's compute_reward says what "at a place" is)."""
    si_actions: Literal["sent", "sampled"] = "sent"
    """Self-imitation: imitate the action the env received (sent: clipped to its bounds) or the policy's own
    unclipped draw (sampled), whose mean is the policy's: clipped draws pull a mean near a bound inwards."""
    si_labels: Literal["newest", "window"] = "newest"
    """Self-imitation: label only the newest step of each kept window (the step the filter judged), or every step
    of its history window: each of them reached the relabelled goal later too, so one gradient step sees up to
    --context times the labels at the same cost."""
    si_final: float = 0.0
    """Self-imitation: the share of relabelled steps whose goal is their episode's last reached one (HER's final
    strategy) instead of one --si-horizon ahead. A successful maze episode ends at its own goal, so its early
    steps are imitated with the far goal their detour served, which short hindsight goals never show."""
    si_priority: Literal["uniform", "advantage"] = "uniform"
    """Self-imitation: draw the kept windows uniformly, or in proportion to their advantage (relabelled return minus
    the critic's value; SIL's prioritised replay), so that those that beat the policy's usual result most are
    imitated most."""
    n_steps: int = 128
    """Steps per env per rollout."""
    batch_size: int = 256
    """PPO minibatch size; SAC batch size (demos and online transitions together)."""
    n_epochs: int = 5
    """PPO epochs per rollout."""
    gamma: float = 0.98
    """Discount, in (0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.0
    """PPO entropy bonus."""
    demo_ratio: float = 0.5
    """SAC: share of each batch drawn from the --demos buffer, in [0, 1) (RLPD's symmetric sampling: 0.5)."""
    q_filter: bool = False
    """SAC: imitate a demo action only where the critic prefers it to the actor's (Nair et al. 2018)."""
    actor_update: Literal["sac", "awac"] = "awac"
    """SAC: how the actor learns. awac: imitate the batch's own actions (online and demo) weighted by
    exp(advantage / --awac-lambda), Nair et al. 2020, the entropy coefficient staying at --init-ent-coef (on grasp
    the one setting measured that keeps the BC actor); sac: SB3's (follow the critics' action gradient)."""
    awac_lambda: float = 1.0
    """SAC with --actor-update awac: temperature of the advantage weights (smaller: greedier)."""
    bc_proposal: bool = False
    """SAC: a frozen copy of the BC policy proposes an action at every env step, taken instead of the actor's
    wherever the critics value it higher (IBRL's acting rule, Hu et al. 2023)."""
    her: bool | None = None
    """SAC: hindsight relabelling (SB3's HerReplayBuffer, future strategy); default on for goal tasks."""
    her_goals: int = 4
    """SAC with HER: relabelled goals per real one (SB3's n_sampled_goal)."""
    demo_her: bool = False
    """SAC with HER: relabel the --demos buffer's goals too, as HER does the online buffer (future strategy,
    --her-goals per real one, rewards from the env's compute_reward), so the demo half of each batch teaches
    the critics and the BC term every goal the demos passed, not only their own 5 or 10."""
    demo_her_critics_only: bool = False
    """SAC with --demo-her: the BC term keeps imitating the demos towards the goals they were recorded with (its
    own draw of demos); only the critics and the actor's RL update see the relabelled goals."""
    buffer_size: int = 300_000
    """SAC: online replay buffer size in transitions (all envs together)."""
    learning_starts: int = 1000
    """SAC: env steps before gradient steps begin (with HER, at least one episode per env)."""
    utd: float = 1.0
    """SAC: gradient steps per env step (update-to-data ratio); below 1 trades samples for wall-clock time."""
    tau: float = 0.005
    """SAC: target critic update rate, in (0, 1]."""
    init_ent_coef: float = 0.05
    """SAC: initial entropy coefficient, then learned towards --target-entropy."""
    target_entropy: float | None = None
    """SAC: entropy target (default: minus the action size, SB3's)."""
    eval_every: int = 10_000
    """Evaluate success every N env steps (and at the start and end)."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    early_evals: int = 0
    """Extra evaluations spread evenly over the first 10% of the steps, to watch for early forgetting."""
    overwrite: bool = False
    """Discard a previous run in --out instead of resuming it."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require(
            "positive",
            "steps",
            "n_envs",
            "n_steps",
            "batch_size",
            "n_epochs",
            "eval_every",
            "eval_episodes",
            "learning_rate",
            "clip_range",
            "bc_steps",
            "her_goals",
            "buffer_size",
            "init_ent_coef",
            "utd",
            "awac_lambda",
            "workers",
            "si_buffer",
        )
        _check_ray_address(self)
        if self.workers is not None:
            if self.workers > self.envs():
                raise LamRobotError(f"--workers ({self.workers}) must not exceed --n-envs ({self.envs()})")
            if self.vec_env != "dummy":
                raise LamRobotError("--workers puts the envs in Ray workers; drop --vec-env subproc")
        self._require(
            "non-negative", "critic_warmup", "bc_weight", "ent_coef", "early_evals", "learning_starts", "si_weight"
        )
        self._require("non-negative", "si_horizon")
        self._require("in (0, 1]", "gamma", "bc_decay", "tau", "si_decay")
        self._require("in [0, 1]", "gae_lambda", "failure_replay", "si_final", "route_training")
        if self.route_training > 0 and (self.algo != "ppo" or self.vec_env != "dummy" or self.workers is not None):
            raise LamRobotError(
                "--route-training shares one graph among PPO's envs in this process; use --algo ppo without "
                "--vec-env subproc or --workers"
            )
        self._require("in [0, 1)", "demo_ratio")
        sac_only = {"q_filter": False, "her": None, "utd": 1.0, "bc_proposal": False, "actor_update": "awac",
                    "awac_lambda": 1.0, "demo_her": False, "demo_her_critics_only": False}  # fmt: skip
        if self.algo != "sac":
            for name, default in sac_only.items():
                if getattr(self, name) != default:
                    raise LamRobotError(f"{_flag(name)} needs --algo sac")
        if self.demo_her and self.demos is None:
            raise LamRobotError("--demo-her relabels the demo buffer; give --demos FILE or drop --demo-her")
        if self.demo_her_critics_only and not self.demo_her:
            raise LamRobotError("--demo-her-critics-only changes what --demo-her relabels; add --demo-her or drop it")
        if self.bc_proposal and self.from_scratch:
            raise LamRobotError("--bc-proposal needs the BC policy; drop --from-scratch")
        if self.self_imitation != "none" and self.algo != "ppo":
            raise LamRobotError("--self-imitation works with --algo ppo only (SAC has --her)")
        si_only = {"si_weight": 1.0, "si_decay": None, "si_buffer": 50_000, "si_horizon": 50.0, "si_filter": "value",
                   "si_drop_detours": False, "si_actions": "sent", "si_labels": "newest",
                   "si_priority": "uniform", "si_final": 0.0}  # fmt: skip
        if self.self_imitation == "none":
            for si_name, si_default in si_only.items():
                if getattr(self, si_name) != si_default:
                    raise LamRobotError(f"{_flag(si_name)} needs --self-imitation hindsight")
        if not 0 < self.actor_lr_scale <= 10:
            raise LamRobotError(f"--actor-lr-scale must be in (0, 10], got {self.actor_lr_scale}")

    def eval_points(self) -> list[int]:
        """Env steps after which success is evaluated (besides step 0 and the end)."""
        early = {round(self.steps * 0.1 * (i + 1) / self.early_evals) for i in range(self.early_evals)}
        regular = set(range(self.eval_every, self.steps, self.eval_every))
        return sorted(p for p in early | regular if 0 < p < self.steps)

    def envs(self) -> int:
        """--n-envs or its default for the algorithm (PPO: 8; SAC: 1)."""
        if self.n_envs is not None:
            return self.n_envs
        return 1 if self.algo == "sac" else 8

    def warmup(self) -> int:
        """--critic-warmup or its default for the algorithm (PPO: 2 rollouts; SAC: 1000 gradient steps)."""
        if self.critic_warmup is not None:
            return self.critic_warmup
        return 1000 if self.algo == "sac" else 2


@dataclasses.dataclass
class DaggerConfig(Config):
    """HG-DAgger: the scripted expert corrects the policy where their actions differ, BC retrains, per round
    (resumable); these settings are saved as dagger.json in the run directory."""

    policy: Path
    """Starting BC checkpoint (from train-bc); its training settings are reused each round."""
    out: Path
    """Run directory: data.hdf5 (demos + interventions), round_<r>/ checkpoints, rounds.json, rounds.png."""
    task: str | None = None
    """Refuse --policy unless it was trained on this task."""
    expert: str = "expert"
    """Who intervenes: expert (the task's scripted expert), or py:module:attr."""
    rounds: int = 4
    """Rounds of policy rollouts with expert interventions, each followed by retraining."""
    episodes_per_round: int = 20
    """Episodes the policy drives per round."""
    threshold: float = 0.5
    """Action distance (L2, env units) above which the expert takes over."""
    demos: Path | None = None
    """Demo file to start from (default: the one the checkpoint was trained on)."""
    epochs: int | None = None
    """BC epochs per round (default: the checkpoint's own)."""
    eval_episodes: int = 50
    """Evaluation episodes after each round (seeds from eval_seed)."""
    eval_seed: int = 1000
    """First evaluation seed; rollouts use seeds from 10_000 * round."""
    n_envs: int = 4
    """Envs stepped in lockstep for rollouts and evaluation."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require("positive", "rounds", "episodes_per_round", "eval_episodes", "n_envs", "threshold", "epochs")


@dataclasses.dataclass
class EvaluateConfig(RouteOptions):
    """Roll a policy out in simulation: success rate with a 95% Wilson interval, return, length, video."""

    task: str
    """Task name (see `lam-robot tasks`) or path to a .toml task spec."""
    policy: str = "expert"
    """expert, random, a checkpoint directory (DIR or policy:DIR, Transformer or MLP baseline), RUN/ppo.zip,
    RUN/sac.zip, or py:module:attr."""
    episodes: int = 50
    """Episodes to roll out."""
    seed: int = 1000
    """Episode i is reset with seed SEED+i (the default differs from record's, to test unseen starts)."""
    n_envs: int = 4
    """Envs stepped in lockstep, batching the policy."""
    video: Path | None = None
    """Write the first episodes as an mp4 here."""
    video_episodes: int = 3
    """Episodes in the video."""
    json: Path | None = None
    """Also write the results as JSON here."""
    workers: int | None = None
    """Run the episodes in this many Ray worker processes (default: none, everything in this process); episode i
    still gets seed SEED+i, so the results do not depend on the worker count."""
    ray_address: str | None = None
    """With --workers: the Ray cluster to join (auto: the one `ray start --head` started on this machine, or
    HOST:PORT); default: a local Ray started for this run."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require("positive", "episodes", "n_envs", "video_episodes", "workers")
        _check_ray_address(self)
        self._check_route(self.workers)


@dataclasses.dataclass
class PipelineConfig(Config):
    """The whole product on one task: record -> train-bc -> finetune -> evaluate, with a final table."""

    task: str = "nav-umaze"
    """Task name or path to a .toml task spec."""
    out: Path = Path("runs/pipeline")
    """Directory for every artefact; re-running continues a killed pipeline."""
    demos: int = 20
    """Expert demos to record."""
    noise: float = 0.3
    """Action noise of the recorded demos."""
    bc_epochs: int = 30
    """Behaviour-cloning epochs."""
    finetune_steps: int = 20_000
    """PPO env steps."""
    episodes: int = 50
    """Evaluation episodes per policy."""
    seed: int = 0
    """Seeds recording, training and fine-tuning."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require("positive", "demos", "bc_epochs", "finetune_steps", "episodes")
        self._require("non-negative", "noise")


@dataclasses.dataclass
class BaselineConfig(Config):
    """An `imitation` baseline (BC-MLP, DAgger, GAIL, AIRL) trained on a demo file."""

    algo: Literal["bc-mlp", "dagger", "gail", "airl"]
    """Which baseline."""
    data: Path
    """HDF5 demo file."""
    task: str
    """Task name or path to a .toml task spec (the task the demos were recorded in)."""
    out: Path
    """New run directory (an MLP checkpoint `evaluate` takes)."""
    steps: int = 20_000
    """Gradient steps for bc-mlp; environment steps for dagger, gail and airl."""
    n_envs: int = 4
    """Envs for the algorithms that roll out."""
    seed: int = 0
    """Seeds the learner and the envs."""

    def validate(self) -> None:
        """Ranges and relations the field types cannot say."""
        self._require("positive", "steps", "n_envs")
