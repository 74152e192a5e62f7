"""The HDF5 demo layout (robomimic-compatible) and its validation.

data/                      attrs: total, env_args (JSON), format_version
data/demo_<i>/             attrs: num_samples, seed, source, success
data/demo_<i>/obs/<key>, next_obs/<key>, actions, rewards, dones, terminated, truncated
data/demo_<i>/states          optional, (N, S) float64: MuJoCo's full physics state (mj_getState with
                              mjSTATE_FULLPHYSICS) before each step, aligned with obs; env_args then
                              holds control_freq (Hz, 1 / the env's dt)
data/demo_<i>/interventions   optional, (N,) bool: steps where a human (or DAgger's expert) acted
data/demo_<i>/input_events    optional, teleop input events (step, time, control, value);
                              attrs input_device: JSON {device, gain, dead_zone}
mask/<split>               demo names as bytes; demo i is in valid by ``is_valid_split``

Play data. ``data.attrs['unlabelled']`` true marks trajectories recorded without a task goal (the
desired-goal key is absent from obs/ and next_obs/), without rewards, and with success False; actions
are optional (observation-only logs). Only ``lam-robot pretrain`` reads such a file.

Foreign files. A file without ``format_version`` was written by another program in robomimic's
layout. It needs env_args (with env_name), demos named demo_<i> with obs/<key>, actions, rewards and
dones; everything else of ours is derived when read (``foreign_demo_attrs``, ``foreign_step_arrays``):

- seed: the demo's index i; source: "unknown"; success: ``dones[-1]`` (robomimic's default
  done_mode marks success states as done); num_samples: the rows of ``actions`` if the attribute is
  missing; total: checked only if present.
- terminated = dones; truncated = False, except at the last step of a demo that does not end done
  (it was cut off); next_obs, if absent: obs shifted by one, the last row repeated.
- No task spec: readers take the task from the caller (``--task``) and match env_name against the
  task's env id (a note, not an error); the task's policy_obs_keys must all be in obs/.
- No mask/ group: the splits follow ``is_valid_split`` with the default fraction.
Our writer never appends to a foreign file.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
SOURCES = ("expert", "teleop", "policy", "play")
FOREIGN_SOURCE = "unknown"
"""The source of a demo in a foreign file, which does not say who acted."""
DEFAULT_VALID_FRACTION = 0.1
STEP_ARRAYS = ("actions", "rewards", "dones", "terminated", "truncated")
OPTIONAL_STEP_ARRAYS = ("interventions", "states")
FOREIGN_STEP_ARRAYS = ("actions", "rewards", "dones")
INPUT_EVENTS = "input_events"
UNLABELLED_ATTR = "unlabelled"
"""data/ attribute of play data: trajectories without task goal, reward or success (actions optional)."""
UNLABELLED_OPTIONAL = ("actions", "rewards")
INPUT_DEVICE_ATTR = "input_device"
DEMO_ATTRS = ("num_samples", "seed", "source", "success")
DEMO_NAME = re.compile(r"^demo_(\d+)$")


class SchemaError(ValueError):
    """The file does not follow the demo layout; the message says where."""


def demo_name(index: int) -> str:
    """The group name of demo ``index``: ``demo_<index>``."""
    return f"demo_{index}"


def demo_index(name: str) -> int:
    """The index in a ``demo_<i>`` group name; SchemaError for any other name."""
    match = DEMO_NAME.match(name)
    if match is None:
        raise SchemaError(f"group data/{name} is not named demo_<i>")
    return int(match.group(1))


def sorted_demo_names(data: h5py.Group) -> list[str]:
    """The demo groups under ``data`` in index order (demo_2 before demo_10)."""
    return sorted(data.keys(), key=demo_index)


def is_valid_split(index: int, valid_fraction: float) -> bool:
    """Whether demo ``index`` goes to mask/valid: demo 1 first, then every 1/f-th (1, 11, 21, ... at 0.1).

    Demo 0 is always in train and demo 1 in valid (for any f > 0), so a file of 2 to 9 demos has a
    validation demo (robomimic's training needs one); a large file holds a share f; and the rule depends
    on the index only, so appending demos never moves old ones."""
    if index < 1 or valid_fraction <= 0:
        return False
    eps = 1e-9  # (i - 1) * f that should be whole must not round just below it
    return math.floor((index - 1) * valid_fraction + eps) > math.floor((index - 2) * valid_fraction + eps)


def is_foreign(data: h5py.Group) -> bool:
    """Whether the file was written by another program (robomimic's layout without our ``format_version``)."""
    return "format_version" not in data.attrs


def read_env_args(data: h5py.Group) -> dict[str, Any]:
    """The parsed ``data.attrs['env_args']`` JSON; SchemaError if missing, malformed or incomplete
    (a foreign file needs env_name only; ours also env_kwargs and task)."""
    if "env_args" not in data.attrs:
        raise SchemaError(
            "data has no 'env_args' attribute (the task this file was recorded in); was it written by another tool?"
        )
    try:
        env_args = json.loads(data.attrs["env_args"])
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"data.attrs['env_args'] is not valid JSON: {exc}") from exc
    if not isinstance(env_args, dict):
        raise SchemaError("data.attrs['env_args'] is not a JSON object")
    for key in ("env_name",) if is_foreign(data) else ("env_name", "env_kwargs", "task"):
        if key not in env_args:
            raise SchemaError(f"data.attrs['env_args'] has no {key!r} entry")
    return env_args


def validate_structure(f: h5py.File) -> list[str]:
    """Check the layout and attributes without reading the arrays; returns the demo names."""
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise SchemaError("no 'data' group: this HDF5 file is not a lam-robot/robomimic demo file")
    data = f["data"]
    read_env_args(data)
    foreign = is_foreign(data)
    if not foreign and int(data.attrs["format_version"]) > FORMAT_VERSION:
        raise SchemaError(
            f"format_version {int(data.attrs['format_version'])} is newer than this lam-robot reads "
            f"({FORMAT_VERSION}); upgrade lam-robot"
        )
    names = sorted_demo_names(data)
    if not names:
        raise SchemaError("the file holds no demos")
    unlabelled = bool(data.attrs.get(UNLABELLED_ATTR, False))
    for name in names:
        if foreign:
            _validate_foreign_demo_structure(data[name], name)
        else:
            _validate_demo_structure(data[name], name, unlabelled)
    if not foreign or "total" in data.attrs:
        if int(data.attrs.get("total", -1)) != sum(num_samples(data[n]) for n in names):
            raise SchemaError("data.attrs['total'] does not equal the sum of the demos' num_samples")
    return names


def num_samples(demo: h5py.Group) -> int:
    """The demo's ``num_samples`` attribute (a foreign demo without it: the rows of its actions)."""
    if "num_samples" in demo.attrs:
        return int(demo.attrs["num_samples"])
    return int(demo["actions"].shape[0])


def _check_rows(demo: h5py.Group, name: str, paths: list[str]) -> None:
    n = num_samples(demo)
    for path in paths:
        if path not in demo:
            raise SchemaError(f"{name} has no {path!r} dataset")
        rows = demo[path].shape[0] if demo[path].shape else 0
        if rows != n:
            raise SchemaError(f"{name}/{path} has {rows} rows but num_samples is {n}")


def _validate_demo_structure(demo: h5py.Group, name: str, unlabelled: bool = False) -> None:
    for attr in DEMO_ATTRS:
        if attr not in demo.attrs:
            raise SchemaError(f"{name} has no {attr!r} attribute")
    for group in ("obs", "next_obs"):
        if group not in demo or not isinstance(demo[group], h5py.Group) or not demo[group].keys():
            raise SchemaError(f"{name} has no {group}/ observations")
    arrays = [f"{g}/{k}" for g in ("obs", "next_obs") for k in demo[g].keys()]
    required = [k for k in STEP_ARRAYS if not (unlabelled and k in UNLABELLED_OPTIONAL and k not in demo)]
    _check_rows(demo, name, arrays + required + [k for k in OPTIONAL_STEP_ARRAYS if k in demo])
    if set(demo["obs"].keys()) != set(demo["next_obs"].keys()):
        raise SchemaError(f"{name}: obs/ and next_obs/ have different keys")
    if INPUT_EVENTS in demo:
        if INPUT_DEVICE_ATTR not in demo.attrs:
            raise SchemaError(f"{name} has input_events but no {INPUT_DEVICE_ATTR!r} attribute")
        fields = demo[INPUT_EVENTS].dtype.names or ()
        if set(fields) != {"step", "time", "control", "value"}:
            raise SchemaError(f"{name}/input_events has fields {fields}, expected step, time, control, value")


def _validate_foreign_demo_structure(demo: h5py.Group, name: str) -> None:
    """robomimic's documented minimum: obs/<key>, actions, rewards, dones (next_obs/ and the rest optional)."""
    if "obs" not in demo or not isinstance(demo["obs"], h5py.Group) or not demo["obs"].keys():
        raise SchemaError(f"{name} has no obs/ observations")
    if "actions" not in demo:
        raise SchemaError(f"{name} has no 'actions' dataset")
    groups = ("obs", "next_obs") if "next_obs" in demo else ("obs",)
    arrays = [f"{g}/{k}" for g in groups for k in demo[g].keys()]
    optional = [k for k in ("terminated", "truncated", *OPTIONAL_STEP_ARRAYS) if k in demo]
    _check_rows(demo, name, arrays + list(FOREIGN_STEP_ARRAYS) + optional)
    if num_samples(demo) == 0:
        raise SchemaError(f"{name} has no steps")
    if "next_obs" in demo and set(demo["obs"].keys()) != set(demo["next_obs"].keys()):
        raise SchemaError(f"{name}: obs/ and next_obs/ have different keys")


def foreign_demo_attrs(demo: h5py.Group, name: str) -> dict[str, Any]:
    """A foreign demo's num_samples, seed, source and success: its own attributes where it has them,
    else derived (seed = index, source "unknown", success = the last ``dones``)."""
    attrs: dict[str, Any] = {k: demo.attrs[k] for k in demo.attrs}
    attrs["num_samples"] = num_samples(demo)
    attrs.setdefault("seed", demo_index(name))
    attrs.setdefault("source", FOREIGN_SOURCE)
    if "success" not in attrs:
        attrs["success"] = bool(demo["dones"][-1])
    return attrs


def foreign_step_arrays(demo: h5py.Group) -> dict[str, np.ndarray]:
    """terminated and truncated of a foreign demo: stored, or derived from dones (see the module docstring)."""
    dones = demo["dones"][()].astype(bool)
    out = {"dones": dones}
    out["terminated"] = demo["terminated"][()].astype(bool) if "terminated" in demo else dones.copy()
    if "truncated" in demo:
        out["truncated"] = demo["truncated"][()].astype(bool)
    else:
        truncated = np.zeros(len(dones), bool)
        truncated[-1] = not dones[-1]
        out["truncated"] = truncated
    return out


def foreign_next_obs(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """next_obs of a foreign demo that lacks it: obs shifted by one step, the last row repeated."""
    return {k: np.concatenate([v[1:], v[-1:]]) for k, v in obs.items()}


def check_finite(name: str, path: str, values: np.ndarray) -> None:
    """Raise SchemaError if the float array ``values`` (``name/path``) holds NaN or inf."""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        step = int(np.argwhere(~np.isfinite(values))[0][0])
        raise SchemaError(f"{name}/{path} contains NaN or inf (first at step {step})")


def validate_values(demo: h5py.Group, name: str) -> None:
    """Read one demo's arrays and reject NaN/inf; the expensive part of validation."""
    for group in ("obs", "next_obs"):
        for key in demo[group].keys() if group in demo else ():
            check_finite(name, f"{group}/{key}", demo[group][key][()])
    for key in ("actions", "rewards", "states"):
        if key in demo:
            check_finite(name, key, demo[key][()])
