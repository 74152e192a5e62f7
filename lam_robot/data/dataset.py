"""The only reader of demo files: opens, validates and serves episodes and summaries."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from lam_robot.data import schema
from lam_robot.errors import LamRobotError
from lam_robot.tasks import TaskSpec


def _open_hdf5(path: Path) -> h5py.File:
    if not path.exists():
        raise LamRobotError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise LamRobotError(f"{path} is a directory; give the path of an .hdf5 demo file")
    if not h5py.is_hdf5(path):
        raise LamRobotError(f"{path} is not an HDF5 file; give a demo file written by `lam-robot record`")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).splitlines()[0]
        raise LamRobotError(
            f"{path} is truncated or corrupt and cannot be opened ({reason}); re-record it or restore a copy"
        ) from exc


class DemoFile:
    """A demo file opened read-only; construction validates the layout (and, optionally, the values)."""

    def __init__(self, path: str | Path, check_values: bool = False) -> None:
        self.path = Path(path)
        self._file = _open_hdf5(self.path)
        try:
            self.demo_names = schema.validate_structure(self._file)
            self.env_args = schema.read_env_args(self._file["data"])
            self.task = TaskSpec.from_dict(self.env_args["task"], origin=f"{self.path} env_args")
            if check_values:
                for name in self.demo_names:
                    schema.validate_values(self._file["data"][name], name)
        except schema.SchemaError as exc:
            self._file.close()
            raise LamRobotError(f"{self.path}: {exc}") from exc
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self._file.close()
            raise LamRobotError(f"{self.path} is damaged and cannot be read ({exc}); re-record it") from exc

    def __enter__(self) -> DemoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HDF5 file."""
        self._file.close()

    def __len__(self) -> int:
        return len(self.demo_names)

    def demo(self, name: str) -> h5py.Group:
        """The HDF5 group ``data/<name>`` of one demo."""
        return self._file["data"][name]

    def split(self, name: str) -> list[str]:
        """Demo names in ``mask/<name>``; empty if the split does not exist."""
        mask = self._file.get(f"mask/{name}")
        return [] if mask is None else [n.decode() if isinstance(n, bytes) else str(n) for n in mask[()]]

    def episode(self, name: str) -> dict[str, Any]:
        """All arrays and attributes of one demo, loaded into memory."""
        demo = self.demo(name)
        out: dict[str, Any] = {g: {k: demo[g][k][()] for k in demo[g]} for g in ("obs", "next_obs")}
        for key in schema.STEP_ARRAYS + schema.OPTIONAL_STEP_ARRAYS:
            if key in demo:
                out[key] = demo[key][()]
        out["attrs"] = {k: _plain(v) for k, v in demo.attrs.items()}
        return out

    def policy_episodes(self, split: str, task: TaskSpec | None = None) -> list[PolicyEpisode]:
        """Policy observations, actions and which actions are labels, for each demo in ``mask/<split>``.

        An episode with an ``interventions`` array was driven by a policy with a human (or
        DAgger's expert) taking over: only the intervened steps are labels (HG-DAgger); the
        policy's own steps still give the Transformer its history."""
        task = task or self.task
        out = []
        for name in self.split(split):
            demo = self.demo(name)
            obs = task.flat_obs({k: demo["obs"][k][()] for k in demo["obs"]})
            actions = demo["actions"][()].astype(np.float32)
            labels = demo["interventions"][()].astype(bool) if "interventions" in demo else np.ones(len(actions), bool)
            out.append(PolicyEpisode(obs, actions, labels))
        return out

    def input_events(self) -> RecordedInputs | None:
        """The recorded input events of every demo that has them (teleop/events.py makes them a script)."""
        names = [n for n in self.demo_names if schema.INPUT_EVENTS in self.demo(n)]
        if not names:
            return None
        devices = [json.loads(self.demo(n).attrs[schema.INPUT_DEVICE_ATTR]) for n in names]
        if any(d != devices[0] for d in devices):
            raise LamRobotError(
                f"{self.path}: its episodes were recorded with different devices or settings; "
                "export one device's episodes first"
            )
        return RecordedInputs(
            devices[0],
            [self.demo(n)[schema.INPUT_EVENTS][()] for n in names],
            [int(self.demo(n).attrs["seed"]) for n in names],
        )

    def summary(self) -> dict[str, Any]:
        """What ``lam-robot inspect`` reports."""
        data = self._file["data"]
        demos = [data[n] for n in self.demo_names]
        lengths = np.array([int(d.attrs["num_samples"]) for d in demos])
        successes = np.array([bool(d.attrs["success"]) for d in demos])
        actions = np.concatenate([d["actions"][()] for d in demos])
        first = demos[0]
        return {
            "file": str(self.path),
            "format_version": int(data.attrs["format_version"]),
            "task": self.task.name,
            "env_id": self.env_args["env_name"],
            "demos": len(demos),
            "steps": int(lengths.sum()),
            "length_mean": float(lengths.mean()),
            "length_min": int(lengths.min()),
            "length_max": int(lengths.max()),
            "success_rate": float(successes.mean()),
            "sources": dict(Counter(str(_plain(d.attrs["source"])) for d in demos)),
            "obs": {k: [int(s) for s in first["obs"][k].shape[1:]] for k in first["obs"]},
            "action_dim": int(actions.shape[1]),
            "action_min": actions.min(axis=0).round(4).tolist(),
            "action_max": actions.max(axis=0).round(4).tolist(),
            "splits": {k: len(self.split(k)) for k in self._file.get("mask", {})},
            "interventions": int(sum(int(d["interventions"][()].sum()) for d in demos if "interventions" in d)),
            "input_devices": dict(
                Counter(
                    json.loads(d.attrs[schema.INPUT_DEVICE_ATTR])["device"]
                    for d in demos
                    if schema.INPUT_DEVICE_ATTR in d.attrs
                )
            ),
        }


class RecordedInputs(NamedTuple):
    """Input events as stored: the device settings, one structured array per demo, their seeds."""

    device: dict[str, Any]
    """{device, gain, dead_zone}"""
    events: list[np.ndarray]
    """(E,) arrays of schema's input-event fields (step, time, control, value)."""
    seeds: list[int]


class PolicyEpisode(NamedTuple):
    """One demo as the policy sees it: flat observations, actions, and which actions to imitate."""

    obs: np.ndarray
    """(N, D) policy observations."""
    actions: np.ndarray
    """(N, A) actions."""
    labels: np.ndarray
    """(N,) bool: which actions to imitate."""


@dataclasses.dataclass
class Windows:
    """Episodes laid end to end with K-1 padding rows before each, so that the window of K steps
    ending at any real step is the contiguous slice ``[start, start + K)``."""

    obs: np.ndarray
    """(P, obs_dim) policy observations, padding rows zero."""
    actions: np.ndarray
    """(P, act_dim) actions, padding rows zero."""
    valid: np.ndarray
    """(P,) False on padding rows."""
    labels: np.ndarray
    """(P,) True on rows whose action is imitated (False on padding and on a policy's own steps)."""
    starts: np.ndarray
    """(N,) one window start per labelled step."""
    context: int

    def __len__(self) -> int:
        return len(self.starts)


def build_windows(episodes: list[PolicyEpisode], context: int) -> Windows:
    """``episodes`` already normalised; one window ends at each labelled step."""
    if not episodes:
        raise LamRobotError("no episodes to build training windows from")
    pad = context - 1
    obs_parts, act_parts, valid_parts, label_parts, starts = [], [], [], [], []
    offset = 0
    for obs, actions, labels in episodes:
        n = len(obs)
        obs_parts += [np.zeros((pad, obs.shape[1]), obs.dtype), obs]
        act_parts += [np.zeros((pad, actions.shape[1]), actions.dtype), actions]
        valid_parts += [np.zeros(pad, bool), np.ones(n, bool)]
        label_parts += [np.zeros(pad, bool), labels]
        starts.append(offset + np.flatnonzero(labels))
        offset += pad + n
    return Windows(
        np.concatenate(obs_parts),
        np.concatenate(act_parts),
        np.concatenate(valid_parts),
        np.concatenate(label_parts),
        np.concatenate(starts),
        context,
    )


def _plain(value: Any) -> Any:
    """HDF5 attributes come back as numpy scalars or bytes; make them JSON-friendly."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
