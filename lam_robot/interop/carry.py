"""What every exporter carries and every importer gives back: a whole demo file, format-neutral.

``read`` walks each demo group that the one reader (DemoFile) opened and keeps every dataset and
attribute; ``write`` hands them back to the one writer (DemoWriter). In between, each format keeps
the observations, actions, rewards, terminated and truncated in its own fields, and the rest in its
own extension points as ``Demo.meta()`` (JSON): the demo's attributes and masks, the dtypes of its
per-step arrays, and its arrays that are not per step (input_events) packed as bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from lam_robot.data import schema
from lam_robot.data.dataset import DemoFile
from lam_robot.data.writer import DemoWriter
from lam_robot.errors import LamRobotError
from lam_robot.rollout import Episode
from lam_robot.tasks import TaskSpec

META = "lam_robot"
"""The key under which each format's extension point holds lam-robot's own metadata."""
CORE_STEPS = ("actions", "rewards", "terminated", "truncated")
"""Per-step arrays every format has a field for."""
DERIVED_STEPS = ("dones",)
"""Per-step arrays the writer derives (dones = terminated | truncated)."""
WRITER_ATTRS = ("num_samples", "seed", "source", "success", schema.INPUT_DEVICE_ATTR)
"""Demo attributes the writer sets itself from its arguments."""


@dataclasses.dataclass
class Demo:
    """Everything one demo group holds, with the N+1 observations the other formats use."""

    name: str
    obs: dict[str, np.ndarray]
    """(N+1, ...) per key: obs/<key> and the final next_obs/<key>."""
    steps: dict[str, np.ndarray]
    """(N, ...) per dataset path: actions, rewards, terminated, truncated, dones and every other per-step
    dataset (interventions, states, ...; next_obs/<key> too where it is not the following obs)."""
    other: dict[str, np.ndarray]
    """Datasets that are not per step (input_events), by path."""
    attrs: dict[str, Any]
    """Every attribute of the demo group (plain Python values)."""
    splits: list[str]
    """The masks that list this demo."""

    @property
    def length(self) -> int:
        """Number of steps N."""
        return len(self.steps["actions"])

    def extra_steps(self) -> dict[str, np.ndarray]:
        """The per-step arrays a format keeps in its extension point: all but the core ones."""
        return {k: v for k, v in self.steps.items() if k not in CORE_STEPS}

    def meta(self) -> dict[str, Any]:
        """JSON-able: what a format keeps beside its own fields (see the module docstring)."""
        return {
            "name": self.name,
            "attrs": self.attrs,
            "splits": self.splits,
            "obs": {k: dtype_spec(v) for k, v in self.obs.items()},
            "steps": {k: dtype_spec(v) for k, v in self.steps.items()},
            "other": {k: pack(v) for k, v in self.other.items()},
        }


@dataclasses.dataclass
class Contents:
    """A whole demo file: its task, env_args and demos."""

    task: TaskSpec
    env_args: dict[str, Any]
    demos: list[Demo]

    def file_meta(self) -> dict[str, Any]:
        """JSON-able file-level metadata: the format version and env_args (task spec, control_freq, ...)."""
        return {"format_version": schema.FORMAT_VERSION, "env_args": self.env_args}

    def dropped(self) -> list[str]:
        """What no format keeps: only demo names that are not demo_0, demo_1, ... (import renumbers)."""
        expected = [schema.demo_name(i) for i in range(len(self.demos))]
        return [] if [d.name for d in self.demos] == expected else ["demo names (import numbers them from demo_0)"]


class Exported(NamedTuple):
    """What an export wrote: how many demos, and the fields the format could not keep (one line each)."""

    demos: int
    dropped: list[str]


def clear_target(out: str | Path, overwrite: bool, marker: str) -> None:
    """Refuse an existing export target, or with ``overwrite`` remove it: only a directory that holds
    ``marker`` (an earlier export of that format), never anything else."""
    out = Path(out)
    if not out.exists():
        return
    if not overwrite:
        raise LamRobotError(f"{out} exists; export into a new directory or pass --overwrite")
    if not (out / marker).is_file():
        raise LamRobotError(f"{out} exists and is not an earlier export (no {marker}); remove it yourself")
    shutil.rmtree(out)


def dtype_spec(values: np.ndarray) -> list[Any]:
    """[dtype descr, shape of one row]: enough to rebuild an array from plain lists."""
    return [_descr(values.dtype), list(values.shape[1:])]


def _descr(dtype: np.dtype) -> Any:
    with warnings.catch_warnings():  # h5py tags string fields with metadata that npy descrs leave out
        warnings.simplefilter("ignore", UserWarning)
        return np.lib.format.dtype_to_descr(dtype)


def dtype_from_spec(spec: list[Any]) -> np.dtype:
    """The dtype of a ``dtype_spec``."""
    return _dtype(spec[0])


def _dtype(descr: Any) -> np.dtype:
    if isinstance(descr, list):  # a structured dtype: JSON turned its tuples into lists
        descr = [tuple(_descr_field(f)) for f in descr]
    return np.lib.format.descr_to_dtype(descr)


def _descr_field(field: list[Any]) -> list[Any]:
    name, sub, *shape = field
    return [name, [tuple(_descr_field(f)) for f in sub] if isinstance(sub, list) else sub, *[tuple(s) for s in shape]]


def pack(values: np.ndarray) -> dict[str, Any]:
    """Any array (structured ones too) as JSON: dtype, shape and its bytes in base64. Exact."""
    values = np.ascontiguousarray(values)
    return {
        "dtype": _descr(values.dtype),
        "shape": list(values.shape),
        "base64": base64.b64encode(values.tobytes()).decode("ascii"),
    }


def unpack(packed: dict[str, Any]) -> np.ndarray:
    """The array of a ``pack``."""
    raw = base64.b64decode(packed["base64"])
    return np.frombuffer(raw, dtype=_dtype(packed["dtype"])).reshape(packed["shape"]).copy()


def read(path: str | Path) -> Contents:
    """Every dataset and attribute of a demo file, through the one reader."""
    with DemoFile(path, check_values=True) as demos:
        splits: dict[str, list[str]] = {}
        for split in _mask_names(demos):
            for name in demos.split(split):
                splits.setdefault(name, []).append(split)
        out = [_read_demo(demos.demo(name), name, splits.get(name, [])) for name in demos.demo_names]
        return Contents(demos.task, dict(demos.env_args), out)


def _mask_names(demos: DemoFile) -> list[str]:
    masks = demos.demo(demos.demo_names[0]).file.get("mask")
    return sorted(masks) if masks is not None else []


def _read_demo(group: h5py.Group, name: str, splits: list[str]) -> Demo:
    n = int(group.attrs["num_samples"])
    datasets: dict[str, np.ndarray] = {}
    group.visititems(
        lambda path, item: datasets.__setitem__(path, item[()]) if isinstance(item, h5py.Dataset) else None
    )
    obs = {k.split("/", 1)[1]: v for k, v in datasets.items() if k.startswith("obs/")}
    next_obs = {k.split("/", 1)[1]: v for k, v in datasets.items() if k.startswith("next_obs/")}
    steps, other = {}, {}
    for path, values in datasets.items():
        if path.startswith("obs/"):
            continue
        if path.startswith("next_obs/"):
            key = path.split("/", 1)[1]
            if not np.array_equal(values[:-1], obs[key][1:]):  # not the following obs: carry it whole
                steps[path] = values
        elif path != schema.INPUT_EVENTS and values.shape[:1] == (n,):
            steps[path] = values
        else:
            other[path] = values
    return Demo(
        name=name,
        obs={k: np.concatenate([obs[k], next_obs[k][-1:]]) for k in sorted(obs)},
        steps=steps,
        other=other,
        attrs={k: _plain(v) for k, v in group.attrs.items()},
        splits=splits,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def carried_env_args(file_meta: dict[str, Any] | None, task: TaskSpec, where: str) -> dict[str, Any] | None:
    """The exported file's env_args, after checking that it was recorded in ``task``; None for foreign data."""
    if not file_meta:
        return None
    env_args = dict(file_meta["env_args"])
    recorded = env_args.get("task", {}).get("name")
    if recorded != task.name:
        raise LamRobotError(
            f"{where} was recorded in task {recorded!r}, not {task.name!r}; import it with --task {recorded}"
        )
    return env_args


def demo_from_meta(
    meta: dict[str, Any] | None,
    index: int,
    obs: dict[str, np.ndarray],
    steps: dict[str, np.ndarray],
    defaults: dict[str, Any],
) -> Demo:
    """A Demo from a format's arrays and (if lam-robot wrote it) its carried metadata; arrays get their
    recorded dtypes back. ``defaults`` fill the attributes of foreign data (seed, source, success)."""
    if meta is None:
        attrs = {"seed": index, "source": "expert", "success": False, **defaults}
        return Demo(schema.demo_name(index), obs, steps, {}, attrs, [])
    obs = {k: np.asarray(obs[k], dtype=dtype_from_spec(spec)) for k, spec in meta["obs"].items()}
    steps = {k: np.asarray(steps[k], dtype=dtype_from_spec(spec)) for k, spec in meta["steps"].items()}
    other = {k: unpack(v) for k, v in meta["other"].items()}
    return Demo(meta["name"], obs, steps, other, dict(meta["attrs"]), list(meta["splits"]))


def write(demos: list[Demo], task: TaskSpec, out: str | Path, env_args: dict[str, Any] | None = None) -> int:
    """Demos -> a new demo file of ``task`` through the one writer; returns how many."""
    if Path(out).exists():
        raise LamRobotError(f"{out} exists; import into a new file")
    with DemoWriter(out, task, env_args=env_args) as writer:
        for i, demo in enumerate(demos):
            _add(writer, demo, i)
    return len(demos)


def _add(writer: DemoWriter, demo: Demo, index: int) -> None:
    n = demo.length
    for key, values in demo.obs.items():
        if len(values) != n + 1:
            raise LamRobotError(f"episode {index}: observation {key!r} has {len(values)} rows, expected {n + 1}")
    steps = dict(demo.steps)
    terminated = np.asarray(steps.pop("terminated"), bool)
    truncated = np.asarray(steps.pop("truncated"), bool)
    dones = steps.pop("dones", None)
    if dones is not None and not np.array_equal(dones, terminated | truncated):
        raise LamRobotError(f"episode {index}: its dones are not terminated | truncated; lam-robot files derive them")
    next_obs = {k: steps.pop(f"next_obs/{k}", v[1:]) for k, v in demo.obs.items()}
    episode = Episode(
        obs={k: v[:-1] for k, v in demo.obs.items()},
        next_obs=next_obs,
        actions=np.asarray(steps.pop("actions"), np.float32),
        rewards=np.asarray(steps.pop("rewards")),
        terminated=terminated,
        truncated=truncated,
        success=bool(demo.attrs["success"]),
        seed=int(demo.attrs["seed"]),
        index=index,
    )
    other = dict(demo.other)
    input_events = other.pop(schema.INPUT_EVENTS, None)
    device = demo.attrs.get(schema.INPUT_DEVICE_ATTR) if input_events is not None else None
    own = WRITER_ATTRS if input_events is not None else tuple(a for a in WRITER_ATTRS if a != schema.INPUT_DEVICE_ATTR)
    writer.add(
        episode,
        source=str(demo.attrs["source"]),
        interventions=steps.pop("interventions", None),
        input_events=input_events,
        input_device=None if device is None else json.loads(device),
        extras={**steps, **other},
        extra_attrs={k: v for k, v in demo.attrs.items() if k not in own},
        splits=demo.splits or None,
    )
