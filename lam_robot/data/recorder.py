"""The only writer of demo files.

Episodes go to a writer process that commits them by copy, append and atomic rename, so
the file on disk is always a complete HDF5 file: a recorder killed at any moment leaves a
file that opens and holds every committed episode. Killing the recording process alone
(not its writer) still commits every episode it finished. The writer runs beside the
simulation, so recording costs the main loop little more than handing over arrays.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import shutil
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lam_robot.data import schema
from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.rollout import Episode
from lam_robot.tasks import TaskSpec


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def env_args_for(task: TaskSpec) -> dict[str, Any]:
    return {"env_name": task.env_id, "env_kwargs": task.env_kwargs, "type": "gymnasium", "task": task.to_dict()}


class DemoWriter:
    """Appends episodes to a demo file (created if missing); use as a context manager."""

    def __init__(self, path: str | Path, task: TaskSpec, valid_fraction: float = 0.1) -> None:
        if not 0.0 <= valid_fraction < 1.0:
            raise LamRobotError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        self.path = Path(path)
        self.task = task
        self.next_index = self._check_target()
        self.sent = 0
        self.committed = 0
        self._error: str | None = None
        ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited sim or torch state
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=_writer_main, name="lam-robot-writer", daemon=False,
            args=(child_conn, str(self.path), json.dumps(env_args_for(task)), valid_fraction))
        self._process.start()
        child_conn.close()

    def _check_target(self) -> int:
        """Refuse files we must not touch; return the index of the next demo."""
        if self.path.is_dir():
            raise LamRobotError(f"{self.path} is a directory; give a file path such as demos/{self.task.name}.hdf5")
        if not self.path.parent.is_dir():
            raise LamRobotError(f"directory {self.path.parent} does not exist; create it first")
        _refuse_if_locked(self.path)
        if not self.path.exists():
            return 0
        with DemoFile(self.path) as existing:
            if existing.task.name != self.task.name or existing.env_args["env_name"] != self.task.env_id:
                raise LamRobotError(
                    f"{self.path} holds demos of task {existing.task.name!r} ({existing.env_args['env_name']}), "
                    f"not {self.task.name!r}; record into another file")
            return max(schema.demo_index(n) for n in existing.demo_names) + 1

    def add(self, episode: Episode, source: str, interventions: np.ndarray | None = None) -> str:
        """Queue one finished episode for commit; returns its demo name."""
        if source not in schema.SOURCES:
            raise ValueError(f"source must be one of {schema.SOURCES}, got {source!r}")
        self._poll()
        name = schema.demo_name(self.next_index)
        message = {
            "name": name, "obs": episode.obs, "next_obs": episode.next_obs, "actions": episode.actions,
            "rewards": episode.rewards, "terminated": episode.terminated, "truncated": episode.truncated,
            "attrs": {"num_samples": episode.length, "seed": episode.seed, "source": source,
                      "success": bool(episode.success)},
        }
        if interventions is not None:
            message["interventions"] = np.asarray(interventions, dtype=bool)
        self._conn.send(message)
        self.next_index += 1
        self.sent += 1
        return name

    def _poll(self) -> None:
        while self._conn.poll():
            kind, value = self._conn.recv()
            if kind == "committed":
                self.committed = value
            else:
                self._error = value
        if self._error is not None:
            raise LamRobotError(f"writing {self.path} failed: {self._error}")

    def close(self) -> None:
        """Wait until every queued episode is committed."""
        if self._process is None:
            return
        try:
            self._conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self._process.join()
        try:
            self._poll()
        except EOFError:
            pass
        finally:
            self._conn.close()
            self._process = None
        if self._error is None and self.committed != self.sent:
            raise LamRobotError(f"the writer of {self.path} stopped after {self.committed} of {self.sent} episodes")

    def __enter__(self) -> DemoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse_if_locked(path: Path) -> None:
    lock = lock_path(path)
    if not lock.exists():
        return
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LamRobotError(f"{path} is being written by another recorder; wait for it or use another file")
        fcntl.flock(handle, fcntl.LOCK_UN)


def _writer_main(conn: Connection, path_str: str, env_args_json: str, valid_fraction: float) -> None:
    """Writer process: commit whatever has arrived, batch by batch, until told to stop or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    path = Path(path_str)
    with open(lock_path(path), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        committed, done = 0, False
        while not done:
            batch: list[dict[str, Any]] = []
            try:
                message = conn.recv()
                while True:
                    if message is None:
                        done = True
                        break
                    batch.append(message)
                    if not conn.poll():
                        break
                    message = conn.recv()
            except (EOFError, OSError):
                done = True  # the recorder is gone: commit what it finished, then stop
            if not batch:
                continue
            try:
                _commit(path, batch, env_args_json, valid_fraction)
            except Exception as exc:  # report any failure to the parent rather than dying silently
                _try_send(conn, ("error", f"{type(exc).__name__}: {exc}"))
                return
            committed += len(batch)
            _try_send(conn, ("committed", committed))
        lock_path(path).unlink(missing_ok=True)


def _try_send(conn: Connection, message: tuple[str, Any]) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):
        pass


def _commit(path: Path, batch: list[dict[str, Any]], env_args_json: str, valid_fraction: float) -> None:
    tmp = path.with_name(f".{path.name}.writing")
    if path.exists():
        shutil.copyfile(path, tmp)
    else:
        tmp.unlink(missing_ok=True)
    with h5py.File(tmp, "a") as f:
        data = f.require_group("data")
        if "env_args" not in data.attrs:
            data.attrs["env_args"] = env_args_json
            data.attrs["format_version"] = schema.FORMAT_VERSION
            data.attrs["total"] = 0
        for message in batch:
            _write_demo(data, message)
        data.attrs["total"] = int(data.attrs["total"]) + sum(m["attrs"]["num_samples"] for m in batch)
        _write_masks(f, schema.sorted_demo_names(data), valid_fraction)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_demo(data: h5py.Group, message: dict[str, Any]) -> None:
    demo = data.create_group(message["name"])
    for group in ("obs", "next_obs"):
        for key, values in message[group].items():
            demo.create_dataset(f"{group}/{key}", data=values)
    demo.create_dataset("actions", data=message["actions"].astype(np.float32))
    demo.create_dataset("rewards", data=message["rewards"])
    demo.create_dataset("terminated", data=message["terminated"])
    demo.create_dataset("truncated", data=message["truncated"])
    demo.create_dataset("dones", data=message["terminated"] | message["truncated"])
    if "interventions" in message:
        demo.create_dataset("interventions", data=message["interventions"])
    for key, value in message["attrs"].items():
        demo.attrs[key] = value


def _write_masks(f: h5py.File, names: list[str], valid_fraction: float) -> None:
    splits = {"train": [], "valid": []}
    for name in names:
        splits["valid" if schema.is_valid_split(schema.demo_index(name), valid_fraction) else "train"].append(name)
    mask = f.require_group("mask")
    for split, members in splits.items():
        if split in mask:
            del mask[split]
        mask.create_dataset(split, data=np.array(members, dtype="S"))
