"""Policy checkpoints: a directory with weights (safetensors) and config.json; never unpickled.

DIR/model.safetensors   network weights
DIR/config.json         format_version, network config, normalisation, task spec, training
                        config, package versions

A multi-task checkpoint (format 2, from train-bc with --more-data) keeps the same files: its weights are a
``MultiTaskPolicyNet``'s (``body.*`` shared, ``adapters.<family>.*`` per task family), and config.json adds
``tasks`` (the task names it was trained on) and ``multitask`` (each task's spec and adapter, each adapter's
sizes and normalisation, and the rule that picks the adapter of a task it was not trained on). Its
``network``, ``normalizer`` and ``task`` entries are those of its first task.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lam_robot.errors import LamRobotError
from lam_robot.policy.network import MultiTaskPolicyNet, TransformerConfig, TransformerPolicyNet
from lam_robot.tasks import TaskSpec, task_layout

CHECKPOINT_FORMAT = 1
MULTITASK_FORMAT = 2
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRANSFORMER_KIND = "transformer-gaussian"


@dataclasses.dataclass
class Normalizer:
    """Observation mean/std from the training split; actions scaled from the env bounds to [-1, 1]."""

    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
    obs_keys: tuple[str, ...] = ()
    """The observation keys whose concatenation (in this order) the statistics describe; empty if unknown."""

    @classmethod
    def fit(cls, obs: np.ndarray, act_low: np.ndarray, act_high: np.ndarray) -> Normalizer:
        """Statistics of the training split's observations, with the env's action bounds."""
        std = obs.std(axis=0)
        return cls(
            obs.mean(axis=0),
            np.where(std < 1e-6, 1.0, std),
            np.asarray(act_low, np.float64),
            np.asarray(act_high, np.float64),
        )

    def obs(self, x: np.ndarray) -> np.ndarray:
        """Raw policy observations -> normalised float32."""
        return ((x - self.obs_mean) / self.obs_std).astype(np.float32)

    def action_to_unit(self, a: np.ndarray) -> np.ndarray:
        """Env actions -> [-1, 1] per dimension."""
        return (2.0 * (a - self.act_low) / (self.act_high - self.act_low) - 1.0).astype(np.float32)

    def action_from_unit(self, u: np.ndarray) -> np.ndarray:
        """[-1, 1] actions -> the env's units."""
        return (self.act_low + (np.asarray(u, np.float64) + 1.0) * 0.5 * (self.act_high - self.act_low)).astype(
            np.float32
        )

    def to_dict(self) -> dict[str, list]:
        """Plain lists for config.json."""
        out: dict[str, list] = {
            k: np.asarray(getattr(self, k), dtype=np.float64).tolist()
            for k in ("obs_mean", "obs_std", "act_low", "act_high")
        }
        if self.obs_keys:  # lets a saved PPO policy flatten raw env observations itself
            out["obs_keys"] = list(self.obs_keys)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, list]) -> Normalizer:
        """The normaliser saved by ``to_dict``."""
        arrays = {k: np.asarray(raw[k], dtype=np.float64) for k in ("obs_mean", "obs_std", "act_low", "act_high")}
        return cls(**arrays, obs_keys=tuple(raw.get("obs_keys", ())))


ADAPTER_RULE = (
    "a task it was trained on uses the adapter listed for it; another task uses the adapter named by "
    "lam_robot.tasks.task_family: its env id's family prefix, policy observation size and action size"
)


@dataclasses.dataclass
class MultiTask:
    """What a multi-task checkpoint adds to a single-task one: the whole network, the tasks it was trained
    on (in training order) with their adapters, and each adapter's normaliser."""

    net: MultiTaskPolicyNet
    tasks: dict[str, TaskSpec]
    adapter_of: dict[str, str]
    """Task name -> adapter name."""
    normalizers: dict[str, Normalizer]
    """Adapter name -> statistics of that adapter's training observations and its action bounds."""

    @property
    def first(self) -> str:
        """The first task's name (the one of --data)."""
        return next(iter(self.tasks))

    def pick(self, task: TaskSpec | None, where: str | Path) -> tuple[str, TaskSpec]:
        """The adapter (and the task spec) to act in ``task`` with; None means the first task."""
        if task is None:
            return self.adapter_of[self.first], self.tasks[self.first]
        if task.name in self.adapter_of:
            return self.adapter_of[task.name], task
        family = task_layout(task).family
        if family in self.normalizers:
            return family, task
        raise LamRobotError(
            f"{where} was trained on task(s) {', '.join(self.tasks)} (adapters {', '.join(self.normalizers)}); "
            f"task {task.name!r} needs adapter {family}, which it lacks; train-bc --init-from {where} on demos "
            "of that task"
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``multitask`` entry of config.json."""
        sizes = self.net.sizes
        return {
            "adapter_rule": ADAPTER_RULE,
            "tasks": {name: {"adapter": self.adapter_of[name], "spec": t.to_dict()} for name, t in self.tasks.items()},
            "adapters": {
                name: {"obs_dim": o, "act_dim": a, "normalizer": self.normalizers[name].to_dict()}
                for name, (o, a) in sizes.items()
            },
        }


@dataclasses.dataclass
class Checkpoint:
    """A loaded Transformer checkpoint: network, normaliser, task and the rest of config.json. For a
    multi-task checkpoint, ``net`` and ``normalizer`` are those of the adapter picked for ``task``."""

    net: TransformerPolicyNet
    normalizer: Normalizer
    task: TaskSpec
    meta: dict[str, Any]
    multitask: MultiTask | None = None


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages a checkpoint depends on, recorded in it."""
    names = ("lam-robot", "torch", "numpy", "gymnasium", "gymnasium-robotics", "mujoco", "stable-baselines3")
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def save_checkpoint(
    directory: Path, net: TransformerPolicyNet, normalizer: Normalizer, task: TaskSpec, extra: dict[str, Any]
) -> None:
    """Write weights then config, each via a temporary name and rename, so a kill never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    os.replace(tmp, directory / WEIGHTS)
    config = {
        "format_version": CHECKPOINT_FORMAT,
        "kind": TRANSFORMER_KIND,
        "network": dataclasses.asdict(net.config),
        "normalizer": normalizer.to_dict(),
        "task": task.to_dict(),
        "versions": dict(package_versions()),
        **extra,
    }
    write_json(directory / CONFIG, config)


def save_multitask_checkpoint(directory: Path, multi: MultiTask, extra: dict[str, Any]) -> None:
    """A multi-task checkpoint: the whole network's weights, and config.json with ``tasks`` and ``multitask``
    (written like ``save_checkpoint``: weights, then config, each replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in multi.net.state_dict().items()}, str(tmp))
    os.replace(tmp, directory / WEIGHTS)
    first = multi.first
    config = {
        "format_version": MULTITASK_FORMAT,
        "kind": TRANSFORMER_KIND,
        "network": dataclasses.asdict(multi.net.config),
        "normalizer": multi.normalizers[multi.adapter_of[first]].to_dict(),
        "task": multi.tasks[first].to_dict(),
        "tasks": list(multi.tasks),
        "multitask": multi.to_dict(),
        "versions": dict(package_versions()),
        **extra,
    }
    write_json(directory / CONFIG, config)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON through a temporary name and a rename, so a kill never leaves half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A checkpoint's JSON file, or a one-line error saying what is missing or corrupt."""
    if not path.is_file():
        raise LamRobotError(f"{path.parent} is not a lam-robot checkpoint: {path.name} is missing")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LamRobotError(f"{path} ({what}) is corrupt: {exc}; retrain or restore the checkpoint") from exc


def checkpoint_kind(directory: str | Path) -> str:
    """The ``kind`` recorded in a checkpoint's config.json (files older than the field are Transformers)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LamRobotError(f"{directory}: no such checkpoint directory")
    return str(read_json(directory / CONFIG, "checkpoint config").get("kind", TRANSFORMER_KIND))


def load_checkpoint(directory: str | Path, task: TaskSpec | None = None) -> Checkpoint:
    """Open a Transformer checkpoint directory (weights never unpickled). Of a multi-task checkpoint, the
    adapter for ``task`` (default: its first task) is picked; a single-task one ignores ``task``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LamRobotError(f"{directory}: no such checkpoint directory")
    config = read_json(directory / CONFIG, "checkpoint config")
    if config.get("format_version", 0) > MULTITASK_FORMAT:
        raise LamRobotError(
            f"{directory} was written by a newer lam-robot (format {config['format_version']}); upgrade lam-robot"
        )
    multi: MultiTask | None = None
    try:
        if "multitask" in config:
            multi = _multitask(directory, config)
            net: nn.Module = multi.net
        else:
            net = TransformerPolicyNet(TransformerConfig(**config["network"]))
        task_spec = TaskSpec.from_dict(config["task"], origin=f"{directory / CONFIG} task")
        normalizer = Normalizer.from_dict(config["normalizer"])
        normalizer.obs_keys = normalizer.obs_keys or task_spec.policy_obs_keys
    except (KeyError, TypeError, ValueError) as exc:
        raise LamRobotError(
            f"{directory / CONFIG} lacks or garbles an entry ({exc}); retrain or restore the checkpoint"
        ) from exc
    weights_path = directory / WEIGHTS
    if not weights_path.is_file():
        raise LamRobotError(f"{directory} is not a complete checkpoint: {WEIGHTS} is missing")
    try:
        weights = load_file(str(weights_path))
        net.load_state_dict(weights)
    except (SafetensorError, RuntimeError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise LamRobotError(
            f"{weights_path} is corrupt or does not match config.json ({reason}); retrain or restore the checkpoint"
        ) from exc
    net.eval()
    if multi is None:
        return Checkpoint(cast(TransformerPolicyNet, net), normalizer, task_spec, config)
    adapter, picked = multi.pick(task, directory)
    view = multi.net.task_net(adapter).eval()
    return Checkpoint(view, multi.normalizers[adapter], picked, config, multi)


def _multitask(directory: Path, config: dict[str, Any]) -> MultiTask:
    """The network, tasks and normalisers of a multi-task config.json (weights not loaded yet)."""
    raw = config["multitask"]
    adapters = raw["adapters"]
    sizes = {name: (int(a["obs_dim"]), int(a["act_dim"])) for name, a in adapters.items()}
    net = MultiTaskPolicyNet(TransformerConfig(**config["network"]), sizes)
    tasks = {
        name: TaskSpec.from_dict(t["spec"], origin=f"{directory / CONFIG} task {name}")
        for name, t in raw["tasks"].items()
    }
    normalizers = {}
    for name, a in adapters.items():
        normalizer = Normalizer.from_dict(a["normalizer"])
        keys = next(t.policy_obs_keys for n, t in tasks.items() if raw["tasks"][n]["adapter"] == name)
        normalizer.obs_keys = normalizer.obs_keys or keys
        normalizers[name] = normalizer
    return MultiTask(net, tasks, {name: t["adapter"] for name, t in raw["tasks"].items()}, normalizers)


# A training run's directory: the resume snapshot lives in LAST (TRAINING_STATE, which carries the
# run state in its metadata, and RUN_STATE, a readable copy), one row per evaluation/epoch in LOG.
LAST = "last"
LOG = "log.csv"
RUN_LOGS = (LOG, "curves.png", "tensorboard")
"""What a run writes before its first snapshot in last/: a directory holding only these has nothing to resume
and no weights to lose, so running the command again starts the run afresh."""
TRAINING_STATE = "training.safetensors"
RUN_STATE = "state.json"


def save_training_state(
    directory: Path,
    model: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """The resume snapshot of a run: weights, optimizer moments and extras in one safetensors file that
    also carries the JSON state (counters, config) in its metadata, replaced atomically, so a kill at any
    moment leaves weights and counters that belong together; state.json is a readable copy."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.items()}
    for index, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).contiguous()
    tensors.update({f"extra.{k}": v.contiguous() for k, v in (extra or {}).items()})
    tmp = directory / f".{TRAINING_STATE}.tmp"
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    os.replace(tmp, directory / TRAINING_STATE)
    write_json(directory / RUN_STATE, state)


def load_training_state(
    directory: Path, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Restores the optimizer in place; returns the model weights and the extras."""
    try:
        tensors = load_file(str(directory / TRAINING_STATE))
    except (SafetensorError, OSError) as exc:
        raise LamRobotError(
            f"{directory / TRAINING_STATE} is missing or corrupt ({exc}); pass --overwrite to start the run again"
        ) from exc
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "extra": {}}
    param_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, _, rest = key.partition(".")
        if kind == "optim":
            index, name = rest.split(".", 1)
            param_state.setdefault(int(index), {})[name] = value
        else:
            groups[kind][rest] = value
    optimizer.load_state_dict({"state": param_state, "param_groups": optimizer.state_dict()["param_groups"]})
    return groups["model"], groups["extra"]


def snapshot_state(directory: Path) -> dict[str, Any] | None:
    """The state (counters, config) of the resume snapshot in ``directory``, or None if there is none;
    read from the weights file itself, falling back to state.json for snapshots older than that."""
    weights = directory / TRAINING_STATE
    if weights.is_file():
        try:
            with safe_open(str(weights), "pt") as f:
                metadata = f.metadata() or {}
        except (SafetensorError, OSError) as exc:
            raise LamRobotError(f"{weights} is corrupt ({exc}); pass --overwrite to start the run again") from exc
        if "state" in metadata:
            return dict(json.loads(metadata["state"]))
    legacy = directory / RUN_STATE
    return read_json(legacy, "resume state") if legacy.is_file() else None


def prepare_run_dir(
    out: Path,
    overwrite: bool,
    our_files: tuple[str, ...],
    config: dict[str, Any],
    may_change: set[str],
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Make ``out`` ready for a training run. Returns the saved state of a run to resume there, or
    None for a fresh start. ``overwrite`` removes only our own files; a run saved with other
    settings (apart from ``may_change``) is refused rather than silently mixed. ``defaults`` gives
    what a setting left at None means, so a run saved before (or after) that default was spelt out
    still resumes. A setting naming an existing file or directory is compared by where it points, so
    ``runs/bc`` and its absolute path (seen from the same working directory) resume alike."""
    if out.exists() and not out.is_dir():
        raise LamRobotError(f"--out {out} is a file; give a directory")
    if overwrite and out.is_dir():
        for name in our_files:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    state = snapshot_state(out / LAST)
    if state is not None:
        saved = state.get("config", {})
        meant = defaults or {}

        def value(settings: dict[str, Any], key: str) -> Any:
            v = settings.get(key)
            v = meant.get(key) if v is None else v
            return str(Path(v).resolve()) if isinstance(v, str) and v and Path(v).exists() else v

        changed = sorted(k for k in saved if k not in may_change and value(saved, k) != value(config, k))
        if changed:
            diffs = ", ".join(f"{k}: {saved[k]!r} -> {config.get(k)!r}" for k in changed)
            raise LamRobotError(
                f"{out} holds a run with other settings ({diffs}); "
                "pass --overwrite to start again, or use another --out"
            )
        return state
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if names and not names <= set(RUN_LOGS) & set(our_files):
        raise LamRobotError(f"{out} is not empty and holds no run to resume; use another --out or --overwrite")
    if names:
        print(f"note: {out} holds only the logs of a run stopped before its first snapshot; starting it afresh")
        for name in names:
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    return None
