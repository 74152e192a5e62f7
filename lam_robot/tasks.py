"""Task specs (TOML files in sim/) and the gymnasium environments they describe."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import tomllib
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.variants import Variant, describe_variant, parse_variant

SPEC_SUFFIX = ".toml"
FINETUNE_DEFAULTS: dict[str, float] = {"si_decay": 1.0}
"""The `finetune` settings a task spec's ``[finetune]`` table may set for its task, with the value they take on a
task whose spec sets none (a command-line flag beats both)."""


def builtin_spec_dir() -> Path:
    """sim/ inside an installed wheel, or the repository's sim/ in a source checkout."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "sim", package_dir.parent / "sim"):
        if candidate.is_dir():
            return candidate
    raise LamRobotError(f"the built-in task specs are missing (looked in {package_dir / 'sim'}); reinstall lam-robot")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a task is: the gymnasium env, its horizon, how success is read and which expert solves it."""

    name: str
    """Short task name used on the command line, e.g. ``nav-umaze``."""
    env_id: str
    """Registered gymnasium id, e.g. ``PointMaze_UMaze-v3``."""
    horizon: int
    """Episode length limit in env steps (passed to gymnasium as max_episode_steps)."""
    policy_obs_keys: tuple[str, ...]
    """Keys of the dict observation that policies see, concatenated in this order."""
    success_key: str
    """``info`` key that holds success; read at the last step of an episode."""
    expert: str = ""
    """Name of the built-in scripted expert (see ``lam_robot.experts.EXPERTS``); empty for a task that has
    none, whose demos then come from ``--source py:module:attr``, teleop or a checkpoint."""
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make``."""
    description: str = ""
    """One line for ``lam-robot tasks``."""
    goal_keys: tuple[str, ...] = ()
    """Goal-conditioned tasks (gymnasium-robotics GoalEnvs): the achieved-goal and desired-goal observation
    keys, in that order; hindsight relabelling writes achieved goals into the desired-goal key."""
    variant: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``[variant]`` table: changes to the simulated world itself (object mass/size/friction, table
    and gripper positions for Fetch object tasks; a text maze for PointMaze). See ``lam_robot.variants``."""
    finetune: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``[finetune]`` table: defaults of `lam-robot finetune` measured for this task, not about its world
    (grasp: ``si_decay = 0.95``). Keys: those of ``FINETUNE_DEFAULTS``."""

    def __post_init__(self) -> None:
        if not self.name or not self.env_id:
            raise LamRobotError("a task spec needs non-empty 'name' and 'env_id'")
        if not isinstance(self.horizon, int) or self.horizon <= 0:
            raise LamRobotError(f"task {self.name!r}: 'horizon' must be a positive integer, got {self.horizon!r}")
        if not self.policy_obs_keys:
            raise LamRobotError(f"task {self.name!r}: 'policy_obs_keys' must list at least one observation key")
        if self.goal_keys and (len(self.goal_keys) != 2 or self.goal_keys[1] not in self.policy_obs_keys):
            raise LamRobotError(
                f"task {self.name!r}: 'goal_keys' must be [achieved, desired] with desired in policy_obs_keys, "
                f"got {list(self.goal_keys)}"
            )
        if not isinstance(self.expert, str):
            raise LamRobotError(f"task {self.name!r}: 'expert' must be a built-in expert's name, got {self.expert!r}")
        if not isinstance(self.variant, dict):
            raise LamRobotError(f"task {self.name!r}: 'variant' must be a table of world changes")
        parse_variant(self.variant, self.env_id, self.env_kwargs, self.name)
        self._check_finetune()

    def _check_finetune(self) -> None:
        if not isinstance(self.finetune, dict):
            raise LamRobotError(f"task {self.name!r}: 'finetune' must be a table of fine-tuning defaults")
        unknown = sorted(set(self.finetune) - set(FINETUNE_DEFAULTS))
        if unknown:
            raise LamRobotError(
                f"task {self.name!r}: [finetune] does not take {', '.join(unknown)}; "
                f"it takes {', '.join(FINETUNE_DEFAULTS)}"
            )
        decay = self.finetune.get("si_decay", 1.0)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
            raise LamRobotError(f"task {self.name!r}: [finetune] si_decay must be a number in (0, 1], got {decay!r}")

    def finetune_default(self, name: str) -> float:
        """A `finetune` setting's default on this task: the spec's ``[finetune]`` table, else, for a spec stored
        (in a demo file or checkpoint) before the built-in spec of its name, env and variant had the table, the
        built-in one's, else ``FINETUNE_DEFAULTS``."""
        table = self.finetune or self._shipped_finetune()
        return float(table.get(name, FINETUNE_DEFAULTS[name]))

    def _shipped_finetune(self) -> dict[str, Any]:
        path = builtin_spec_dir() / f"{self.name}{SPEC_SUFFIX}"
        if not path.is_file():
            return {}
        shipped = load_task(path)
        same_task = (shipped.env_id, shipped.variant) == (self.env_id, self.variant)  # env_kwargs: --dense changes them
        return shipped.finetune if same_task else {}

    @property
    def world(self) -> Variant:
        """The parsed ``variant`` table (all None for a task that changes nothing)."""
        return parse_variant(self.variant, self.env_id, self.env_kwargs, self.name)

    def require_goals(self, what: str) -> tuple[str, str]:
        """(achieved, desired) goal keys, or a one-line error saying ``what`` needs them."""
        if not self.goal_keys:
            raise LamRobotError(
                f"{what} needs a goal-conditioned task, and task {self.name!r} names no goal keys; add "
                'goal_keys = ["achieved_goal", "desired_goal"] to its spec if its env is a GoalEnv (for a file '
                "recorded before specs named them: pass --task with such a spec)"
            )
        return self.goal_keys[0], self.goal_keys[1]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "task spec") -> TaskSpec:
        """Build from a parsed spec, refusing unknown and missing fields; ``origin`` names it in errors."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - fields)
        if unknown:
            raise LamRobotError(
                f"{origin}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(fields))}"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw
        )
        if missing:
            raise LamRobotError(f"{origin}: missing field(s) {', '.join(missing)}")
        values = dict(raw)
        values["policy_obs_keys"] = tuple(values["policy_obs_keys"])
        values["goal_keys"] = tuple(values.get("goal_keys", ()))
        values["env_kwargs"] = dict(values.get("env_kwargs", {}))
        values["variant"] = dict(values.get("variant", {}))
        values["finetune"] = dict(values.get("finetune", {}))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON/TOML values (the inverse of from_dict)."""
        raw = dataclasses.asdict(self)
        raw["policy_obs_keys"] = list(self.policy_obs_keys)
        raw["goal_keys"] = list(self.goal_keys)
        for table in ("variant", "finetune"):
            if not raw[table]:
                del raw[table]  # specs without the table stay as demo files and checkpoints already store them
        return raw

    def to_json(self) -> str:
        """to_dict as JSON with sorted keys."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """Build the gymnasium env with this spec's kwargs, horizon and variant."""
        _register_robotics_envs()
        world = self.world
        kwargs: dict[str, Any] = dict(max_episode_steps=self.horizon, render_mode=render_mode, **self.env_kwargs)
        if world.maze is not None:
            kwargs["maze_map"] = world.maze_map()
        try:
            if world.is_fetch():
                from lam_robot.fetch_variant import make_fetch_variant

                return make_fetch_variant(self.env_id, world, **kwargs)
            return gym.make(self.env_id, **kwargs)
        except gym.error.Error as exc:
            raise LamRobotError(f"task {self.name!r}: cannot make env {self.env_id!r}: {exc}") from exc

    def flat_obs(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's view: ``policy_obs_keys`` concatenated along the last axis (batched or not)."""
        missing = [k for k in self.policy_obs_keys if k not in obs]
        if missing:
            raise LamRobotError(
                f"task {self.name!r}: observation has no key(s) {', '.join(missing)} (it has {', '.join(obs)})"
            )
        return np.concatenate([np.asarray(obs[k], dtype=np.float64) for k in self.policy_obs_keys], axis=-1)

    def is_success(self, info: dict[str, Any]) -> bool:
        """Whether a step's ``info`` reports success under this spec's ``success_key``."""
        return bool(info.get(self.success_key, False))


def _register_robotics_envs() -> None:
    # Heavy import, done only when an env is built; it prints a notice about Adroit envs
    # (which no lam-robot task uses) to stderr, which would bury our own output.
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


def builtin_task_names() -> list[str]:
    """Names of the task specs shipped in sim/, sorted."""
    return sorted(p.stem for p in builtin_spec_dir().glob(f"*{SPEC_SUFFIX}"))


def load_task(name_or_path: str | Path) -> TaskSpec:
    """A built-in task by name (``grasp``), or a user's spec file by path (``my_task.toml``)."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(SPEC_SUFFIX) or path.exists()):
        path = builtin_spec_dir() / f"{text}{SPEC_SUFFIX}"
        if not path.is_file():
            raise LamRobotError(
                f"unknown task {text!r}; choose one of {', '.join(builtin_task_names())} or give a path to a .toml spec"
            )
    if not path.is_file():
        raise LamRobotError(f"task spec {text!r} does not exist or is not a file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LamRobotError(f"task spec {path} is not valid TOML: {exc}") from exc
    return TaskSpec.from_dict(raw, origin=str(path))


def space_size(space: gym.Space) -> int:
    """Number of scalars in a space (0 for a space without a shape)."""
    return int(np.prod(space.shape)) if space.shape else 0


def describe_task(spec: TaskSpec) -> dict[str, Any]:
    """Sizes read off a real env: what ``lam-robot tasks`` prints."""
    env = spec.make_env()
    try:
        obs_space = cast(gym.spaces.Dict, env.observation_space)  # goal envs: a dict of spaces
        policy_obs = sum(space_size(obs_space[k]) for k in spec.policy_obs_keys)
        return {
            "name": spec.name,
            "env_id": spec.env_id,
            "policy_obs_size": policy_obs,
            "obs_keys": {k: list(obs_space[k].shape or ()) for k in obs_space.keys()},
            "action_size": space_size(env.action_space),
            "horizon": spec.horizon,
            "expert": spec.expert,
            "description": spec.description,
            "variant": describe_variant(spec.world),
            "finetune": {name: spec.finetune_default(name) for name in FINETUNE_DEFAULTS},
        }
    finally:
        env.close()


def require_same_task(found: TaskSpec, expected: TaskSpec, what: str, fix: str) -> None:
    """The one task-mismatch check: ``what`` (e.g. "demos.hdf5 holds demos of task") names the thing."""
    if found.name != expected.name:
        raise LamRobotError(f"{what} {found.name!r}, not {expected.name!r}; {fix}")


def list_tasks() -> list[dict[str, Any]]:
    """``describe_task`` of every built-in task, by name."""
    return [describe_task(load_task(name)) for name in builtin_task_names()]


def require_fit(
    trained: str, obs_keys: tuple[str, ...], obs_dim: int, act_dim: int, task: TaskSpec, env: gym.Env
) -> None:
    """The one check that a policy fits a task's env; ``trained`` starts each message
    ("the policy was trained on 'nav-umaze'"), which then names both sizes."""
    space = cast(gym.spaces.Dict, env.observation_space)
    missing = [k for k in obs_keys if k not in space.keys()]
    if missing:
        raise LamRobotError(f"{trained} with observation key(s) {', '.join(missing)}, which task {task.name!r} lacks")
    obs_size = sum(space_size(space[k]) for k in obs_keys)
    if obs_size != obs_dim:
        raise LamRobotError(f"{trained} with observation size {obs_dim}, but task {task.name!r} gives {obs_size}")
    act_size = space_size(env.action_space)
    if act_size != act_dim:
        raise LamRobotError(f"{trained} with action size {act_dim}, but task {task.name!r} takes {act_size}")


@dataclasses.dataclass(frozen=True)
class TaskLayout:
    """A task's policy observation and action as a policy sees them: sizes, action bounds, adapter family."""

    obs_dim: int
    act_dim: int
    act_low: np.ndarray
    act_high: np.ndarray
    family: str
    """The multi-task adapter the task uses (see ``task_family``)."""
    fits: bool = True
    """False for an env no Transformer policy fits (observations not a dict, actions not a Box): sizes 0."""


def task_family(env_id: str, obs_dim: int, act_dim: int) -> str:
    """The adapter a task uses in a multi-task network: tasks whose env ids share the family prefix (``Fetch``
    for FetchPickAndPlace, FetchPush and FetchSlide; ``PointMaze`` for every PointMaze layout) and whose
    policy observation and action sizes agree share one, named e.g. ``Fetch_28_4`` or ``PointMaze_6_2``."""
    base = env_id.split(":")[-1].split("/")[-1].split("-v")[0]
    head = base.split("_")[0] if "_" in base else re.match(r"[A-Z]?[^A-Z]*", base).group(0)  # type: ignore[union-attr]
    return f"{re.sub(r'[^A-Za-z0-9]', '', head) or 'Env'}_{obs_dim}_{act_dim}"


def task_layout(task: TaskSpec) -> TaskLayout:
    """The task's sizes, action bounds and adapter family, read off a real env."""
    env = task.make_env()
    try:
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or not isinstance(env.action_space, gym.spaces.Box):
            return TaskLayout(0, 0, np.zeros(0), np.zeros(0), task_family(task.env_id, 0, 0), fits=False)
        missing = [k for k in task.policy_obs_keys if k not in space.keys()]
        if missing:
            raise LamRobotError(f"task {task.name!r}: its env has no observation key(s) {', '.join(missing)}")
        obs_dim = sum(space_size(space[k]) for k in task.policy_obs_keys)
        action = cast(gym.spaces.Box, env.action_space)
        act_dim = space_size(action)
        return TaskLayout(
            obs_dim,
            act_dim,
            np.asarray(action.low, np.float64),
            np.asarray(action.high, np.float64),
            task_family(task.env_id, obs_dim, act_dim),
        )
    finally:
        env.close()
