"""The HDF5 demo layout (robomimic-compatible) and its validation.

data/                      attrs: total, env_args (JSON), format_version
data/demo_<i>/             attrs: num_samples, seed, source, success
data/demo_<i>/obs/<key>, next_obs/<key>, actions, rewards, dones, terminated, truncated
data/demo_<i>/interventions   optional, (N,) bool: steps where a human (or DAgger's expert) acted
data/demo_<i>/input_events    optional, teleop input events (step, time, control, value);
                              attrs input_device: JSON {device, gain, dead_zone}
mask/<split>               demo names as bytes
"""

from __future__ import annotations

import json
import re
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
SOURCES = ("expert", "teleop", "policy")
STEP_ARRAYS = ("actions", "rewards", "dones", "terminated", "truncated")
OPTIONAL_STEP_ARRAYS = ("interventions",)
INPUT_EVENTS = "input_events"
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
    """Deterministic split that stays put when demos are appended: every 1/f-th demo is validation."""
    return int((index + 1) * valid_fraction) > int(index * valid_fraction)


def read_env_args(data: h5py.Group) -> dict[str, Any]:
    """The parsed ``data.attrs['env_args']`` JSON; SchemaError if missing, malformed or incomplete."""
    if "env_args" not in data.attrs:
        raise SchemaError(
            "data has no 'env_args' attribute (the task this file was recorded in); was it written by another tool?"
        )
    try:
        env_args = json.loads(data.attrs["env_args"])
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"data.attrs['env_args'] is not valid JSON: {exc}") from exc
    for key in ("env_name", "env_kwargs", "task"):
        if key not in env_args:
            raise SchemaError(f"data.attrs['env_args'] has no {key!r} entry")
    return env_args


def validate_structure(f: h5py.File) -> list[str]:
    """Check the layout and attributes without reading the arrays; returns the demo names."""
    if "data" not in f or not isinstance(f["data"], h5py.Group):
        raise SchemaError("no 'data' group: this HDF5 file is not a lam-robot/robomimic demo file")
    data = f["data"]
    read_env_args(data)
    version = data.attrs.get("format_version")
    if version is None:
        raise SchemaError("data has no 'format_version' attribute")
    if int(version) > FORMAT_VERSION:
        raise SchemaError(
            f"format_version {int(version)} is newer than this lam-robot reads ({FORMAT_VERSION}); upgrade lam-robot"
        )
    names = sorted_demo_names(data)
    if not names:
        raise SchemaError("the file holds no demos")
    for name in names:
        _validate_demo_structure(data[name], name)
    if int(data.attrs.get("total", -1)) != sum(int(data[n].attrs["num_samples"]) for n in names):
        raise SchemaError("data.attrs['total'] does not equal the sum of the demos' num_samples")
    return names


def _validate_demo_structure(demo: h5py.Group, name: str) -> None:
    for attr in DEMO_ATTRS:
        if attr not in demo.attrs:
            raise SchemaError(f"{name} has no {attr!r} attribute")
    n = int(demo.attrs["num_samples"])
    for group in ("obs", "next_obs"):
        if group not in demo or not isinstance(demo[group], h5py.Group) or not demo[group].keys():
            raise SchemaError(f"{name} has no {group}/ observations")
    arrays = [f"{g}/{k}" for g in ("obs", "next_obs") for k in demo[g].keys()]
    arrays += list(STEP_ARRAYS) + [k for k in OPTIONAL_STEP_ARRAYS if k in demo]
    for path in arrays:
        if path not in demo:
            raise SchemaError(f"{name} has no {path!r} dataset")
        rows = demo[path].shape[0] if demo[path].shape else 0
        if rows != n:
            raise SchemaError(f"{name}/{path} has {rows} rows but num_samples is {n}")
    if set(demo["obs"].keys()) != set(demo["next_obs"].keys()):
        raise SchemaError(f"{name}: obs/ and next_obs/ have different keys")
    if INPUT_EVENTS in demo:
        if INPUT_DEVICE_ATTR not in demo.attrs:
            raise SchemaError(f"{name} has input_events but no {INPUT_DEVICE_ATTR!r} attribute")
        fields = demo[INPUT_EVENTS].dtype.names or ()
        if set(fields) != {"step", "time", "control", "value"}:
            raise SchemaError(f"{name}/input_events has fields {fields}, expected step, time, control, value")


def check_finite(name: str, path: str, values: np.ndarray) -> None:
    """Raise SchemaError if the float array ``values`` (``name/path``) holds NaN or inf."""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        step = int(np.argwhere(~np.isfinite(values))[0][0])
        raise SchemaError(f"{name}/{path} contains NaN or inf (first at step {step})")


def validate_values(demo: h5py.Group, name: str) -> None:
    """Read one demo's arrays and reject NaN/inf; the expensive part of validation."""
    for group in ("obs", "next_obs"):
        for key in demo[group].keys():
            check_finite(name, f"{group}/{key}", demo[group][key][()])
    for key in ("actions", "rewards"):
        check_finite(name, key, demo[key][()])
