"""The only reader of demo files: opens, validates and serves episodes and summaries."""

from __future__ import annotations

import dataclasses
import json
import sys
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
    """A demo file opened read-only; construction validates the layout (and, optionally, the values).

    A foreign file (robomimic's layout written by another program, see ``schema``) does not name its
    task: give ``task`` to read it for one. A file that names its task keeps it whatever ``task`` says
    (callers check a mismatch with ``tasks.require_same_task``)."""

    def __init__(self, path: str | Path, check_values: bool = False, task: TaskSpec | None = None) -> None:
        self.path = Path(path)
        self._file = _open_hdf5(self.path)
        try:
            self.demo_names = schema.validate_structure(self._file)
            self.foreign = schema.is_foreign(self._file["data"])  # another program's: extras derived when read
            self.env_args = schema.read_env_args(self._file["data"])
            self._task = self._resolve_task(task)
            if check_values:
                for name in self.demo_names:
                    schema.validate_values(self._file["data"][name], name)
        except schema.SchemaError as exc:
            self._file.close()
            raise LamRobotError(f"{self.path}: {exc}") from exc
        except LamRobotError:
            self._file.close()
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            self._file.close()
            raise LamRobotError(f"{self.path} is damaged and cannot be read ({exc}); re-record it") from exc

    def _resolve_task(self, task: TaskSpec | None) -> TaskSpec | None:
        if "task" in self.env_args:
            own = TaskSpec.from_dict(self.env_args["task"], origin=f"{self.path} env_args")
            if task is not None and task.name == own.name and task.goal_keys and not own.goal_keys:
                # Files recorded before specs named their goal keys: take them from the caller's spec.
                return dataclasses.replace(own, goal_keys=task.goal_keys)
            return own
        if task is None:
            return None
        missing = sorted({k for n in self.demo_names for k in task.policy_obs_keys if k not in self.demo(n)["obs"]})
        if missing:
            have = ", ".join(self.demo(self.demo_names[0])["obs"].keys())
            raise schema.SchemaError(
                f"obs/ lacks key(s) {', '.join(missing)} that task {task.name!r} needs (it has {have}); "
                "give the task these demos were recorded in"
            )
        env_name = self.env_args["env_name"]
        if env_name != task.env_id:
            print(
                f"note: {self.path} was recorded in {env_name!r}, task {task.name!r} uses {task.env_id!r}; "
                f"reading it as {task.name!r}",
                file=sys.stderr,
            )
        return task

    @property
    def task(self) -> TaskSpec:
        """The task the demos were recorded in: the file's own, or the one given for a foreign file."""
        if self._task is None:
            raise LamRobotError(
                f"{self.path} does not name the task it was recorded in (written by another program, "
                f"env {self.env_args['env_name']!r}); pass --task"
            )
        return self._task

    @property
    def task_name(self) -> str | None:
        """The task's name, or None for a foreign file read without a task."""
        return None if self._task is None else self._task.name

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
        """Demo names in ``mask/<name>``; empty if the split does not exist. A file without mask/
        (possible in a foreign one) splits by ``schema.is_valid_split`` at the default fraction."""
        if "mask" not in self._file:
            if name not in ("train", "valid"):
                return []
            fraction = schema.DEFAULT_VALID_FRACTION
            return [
                n for n in self.demo_names if schema.is_valid_split(schema.demo_index(n), fraction) == (name == "valid")
            ]
        mask = self._file.get(f"mask/{name}")
        return [] if mask is None else [n.decode() if isinstance(n, bytes) else str(n) for n in mask[()]]

    def demo_attrs(self, name: str) -> dict[str, Any]:
        """One demo's attributes (num_samples, seed, source, success, ...), derived where a foreign file lacks them."""
        demo = self.demo(name)
        attrs = schema.foreign_demo_attrs(demo, name) if self.foreign else dict(demo.attrs)
        return {k: _plain(v) for k, v in attrs.items()}

    def episode(self, name: str) -> dict[str, Any]:
        """All arrays and attributes of one demo, loaded into memory (a foreign file's extras derived)."""
        demo = self.demo(name)
        out: dict[str, Any] = {"obs": {k: demo["obs"][k][()] for k in demo["obs"]}}
        if "next_obs" in demo:
            out["next_obs"] = {k: demo["next_obs"][k][()] for k in demo["next_obs"]}
        else:
            out["next_obs"] = schema.foreign_next_obs(out["obs"])
        for key in schema.STEP_ARRAYS + schema.OPTIONAL_STEP_ARRAYS:
            if key in demo:
                out[key] = demo[key][()]
        if self.foreign:
            out.update(schema.foreign_step_arrays(demo))
        out["attrs"] = self.demo_attrs(name)
        return out

    @property
    def unlabelled(self) -> bool:
        """Whether the file holds unlabelled play data (no task goal, reward or success), not demos."""
        return bool(self._file["data"].attrs.get(schema.UNLABELLED_ATTR, False))

    def require_demos(self) -> None:
        """Refuse unlabelled play data where demos are needed."""
        if self.unlabelled:
            raise LamRobotError(
                f"{self.path} holds unlabelled play data (no goals, rewards or successes), not demos; "
                "use it with `lam-robot pretrain --play`"
            )

    def policy_episodes(self, split: str, task: TaskSpec | None = None, goals: bool = False) -> list[PolicyEpisode]:
        """Policy observations, actions and which actions are labels, for each demo in ``mask/<split>``.

        An episode with an ``interventions`` array was driven by a policy with a human (or
        DAgger's expert) taking over: only the intervened steps are labels (HG-DAgger); the
        policy's own steps still give the Transformer its history. With ``goals`` each episode also
        carries the goal achieved after every step (for hindsight relabelling); play data without a
        desired goal gets the achieved one in its place. Unlabelled play data is refused without
        ``goals``; an episode without actions is not served (see ``observation_episodes``)."""
        task = task or self.task
        achieved_key, desired_key = task.require_goals("hindsight relabelling") if goals else ("", "")
        if not goals:
            self.require_demos()
        out = []
        for name in self.split(split):
            demo = self.demo(name)
            achieved = demo["next_obs"][achieved_key][()] if goals and achieved_key in demo["next_obs"] else None
            if goals and achieved is None:
                raise LamRobotError(
                    f"{self.path}: {name}/next_obs has no {achieved_key!r} (the goal each step reached); "
                    "hindsight relabelling needs it"
                )
            parts = {k: demo["obs"][k][()] for k in task.policy_obs_keys if k in demo["obs"]}
            if goals and desired_key not in parts and self.unlabelled:
                parts[desired_key] = demo["obs"][achieved_key][()]  # placeholder: every window is relabelled
            missing = [k for k in task.policy_obs_keys if k not in parts]
            if missing:
                raise LamRobotError(
                    f"{self.path}: {name}/obs lacks key(s) {', '.join(missing)} that task {task.name!r} needs "
                    f"(it has {', '.join(demo['obs'])})"
                )
            if "actions" not in demo:
                raise LamRobotError(
                    f"{self.path}: {name} has no actions; label it with an inverse-dynamics model "
                    "(`lam-robot pretrain --play FILE --demos DEMOS`)"
                )
            actions = demo["actions"][()].astype(np.float32)
            labels = demo["interventions"][()].astype(bool) if "interventions" in demo else np.ones(len(actions), bool)
            out.append(PolicyEpisode(task.flat_obs(parts), actions, labels, achieved))
        return out

    def has_actions(self) -> bool:
        """Whether every episode stores its actions (observation-only play data does not)."""
        return all("actions" in self.demo(n) for n in self.demo_names)

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
            [int(self.demo_attrs(n)["seed"]) for n in names],
        )

    def summary(self) -> dict[str, Any]:
        """What ``lam-robot inspect`` reports."""
        data = self._file["data"]
        demos = [data[n] for n in self.demo_names]
        attrs = [self.demo_attrs(n) for n in self.demo_names]
        lengths = np.array([int(a["num_samples"]) for a in attrs])
        successes = np.array([bool(a["success"]) for a in attrs])
        with_actions = [d["actions"][()] for d in demos if "actions" in d]
        actions = np.concatenate(with_actions) if with_actions else np.zeros((0, 0), np.float32)
        first = demos[0]
        return {
            "file": str(self.path),
            "format_version": None if self.foreign else int(data.attrs["format_version"]),
            "foreign": self.foreign,
            "unlabelled": self.unlabelled,
            "task": self.task_name,
            "env_id": self.env_args["env_name"],
            "control_freq": self.env_args.get("control_freq"),
            "demos": len(demos),
            "steps": int(lengths.sum()),
            "length_mean": float(lengths.mean()),
            "length_min": int(lengths.min()),
            "length_max": int(lengths.max()),
            "success_rate": float(successes.mean()),
            "sources": dict(Counter(str(a["source"]) for a in attrs)),
            "states": sum("states" in d for d in demos),
            "obs": {k: [int(s) for s in first["obs"][k].shape[1:]] for k in first["obs"]},
            "action_dim": int(actions.shape[1]),
            "action_min": actions.min(axis=0).round(4).tolist() if len(actions) else None,
            "action_max": actions.max(axis=0).round(4).tolist() if len(actions) else None,
            "splits": {k: len(self.split(k)) for k in self._file.get("mask", ("train", "valid"))},
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
    achieved: np.ndarray | None = None
    """(N, G) the goal achieved after each step (hindsight relabelling), when asked for."""


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
    ends: np.ndarray
    """(N,) row of the last step of each window's episode (a relabelled goal is reached no later)."""
    achieved: np.ndarray | None = None
    """(P, G) the goal achieved after each row's step, when every episode carries it."""

    def __len__(self) -> int:
        return len(self.starts)


def build_windows(episodes: list[PolicyEpisode], context: int) -> Windows:
    """``episodes`` already normalised; one window ends at each labelled step."""
    if not episodes:
        raise LamRobotError("no episodes to build training windows from")
    pad = context - 1
    obs_parts, act_parts, valid_parts, label_parts, starts, ends, achieved = [], [], [], [], [], [], []
    with_goals = all(e.achieved is not None for e in episodes)
    offset = 0
    for obs, actions, labels, reached in episodes:
        n = len(obs)
        obs_parts += [np.zeros((pad, obs.shape[1]), obs.dtype), obs]
        act_parts += [np.zeros((pad, actions.shape[1]), actions.dtype), actions]
        valid_parts += [np.zeros(pad, bool), np.ones(n, bool)]
        label_parts += [np.zeros(pad, bool), labels]
        starts.append(offset + np.flatnonzero(labels))
        ends.append(np.full(int(labels.sum()), offset + pad + n - 1))
        if with_goals and reached is not None:
            achieved += [np.zeros((pad, reached.shape[1]), obs.dtype), reached.astype(obs.dtype)]
        offset += pad + n
    return Windows(
        np.concatenate(obs_parts),
        np.concatenate(act_parts),
        np.concatenate(valid_parts),
        np.concatenate(label_parts),
        np.concatenate(starts),
        context,
        np.concatenate(ends),
        np.concatenate(achieved) if with_goals else None,
    )


def _plain(value: Any) -> Any:
    """HDF5 attributes come back as numpy scalars or bytes; make them JSON-friendly."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
