"""The only writer of demo files.

Crash safety without copying the whole file per episode: the recorder keeps a shadow copy
of the file beside it. Each finished episode is appended to the shadow, the shadow is
renamed over the file (atomic), and the old file becomes the new shadow, which catches up
on that episode when the next one is appended to it. The path the user named therefore
always holds a complete HDF5 file with every episode finished so far; a kill at any moment
loses at most the episode in progress. It costs two writes of each episode instead of one,
and one copy of the file per session.
(Not fsynced per episode: this protects against killed processes, not power loss.)
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import threading
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


def sidecar(path: Path, kind: str) -> Path:
    """Hidden files beside the demo file: ``lock``, ``shadow`` and ``previous``."""
    return path.with_name(f".{path.name}.{kind}")


ROBOMIMIC_GYM_ENV_TYPE = 2  # robomimic's EnvType.GYM_TYPE: its tools read env_args["type"] as this int


def env_args_for(task: TaskSpec, control_freq: float | None = None) -> dict[str, Any]:
    """robomimic's ``env_args`` for ``task``: env name and kwargs, env type, the task spec, and the
    control frequency (Hz) when known."""
    env_args: dict[str, Any] = {
        "env_name": task.env_id,
        "env_kwargs": task.env_kwargs,
        "type": ROBOMIMIC_GYM_ENV_TYPE,
        "task": task.to_dict(),
    }
    if control_freq is not None:
        env_args["control_freq"] = control_freq
    return env_args


def check_appendable(path: str | Path, task: TaskSpec, unlabelled: bool | None = None) -> int:
    """Refuse a file the writer must not append to (another task's, another program's, demos to play data
    or back when ``unlabelled`` is given); return the index of the next demo (0 for a new file)."""
    path = Path(path)
    if not path.exists():
        return 0
    with DemoFile(path) as existing:
        if existing.foreign:
            raise LamRobotError(
                f"{path} was written by another program (it has no lam-robot format_version); record into a new file"
            )
        if existing.task.name != task.name or existing.env_args["env_name"] != task.env_id:
            raise LamRobotError(
                f"{path} holds demos of task {existing.task.name!r} ({existing.env_args['env_name']}), "
                f"not {task.name!r}; record into another file"
            )
        if unlabelled is not None and existing.unlabelled != unlabelled:
            held, new = ("play data", "demos") if existing.unlabelled else ("demos", "play data")
            raise LamRobotError(f"{path} holds {held}; record {new} into another file")
        return max(schema.demo_index(n) for n in existing.demo_names) + 1


class DemoWriter:
    """Appends episodes to a demo file (created on the first episode); use as a context manager."""

    def __init__(
        self,
        path: str | Path,
        task: TaskSpec,
        valid_fraction: float = 0.1,
        env_args: dict[str, Any] | None = None,
        unlabelled: bool = False,
    ) -> None:
        """``env_args``: write these instead of ``env_args_for(task)`` (an import that carries a file's own);
        ``unlabelled``: play data, written without the desired goal, rewards and success (see ``schema``)."""
        if not 0.0 <= valid_fraction < 1.0:
            raise LamRobotError(f"valid fraction must be in [0, 1), got {valid_fraction}")
        self.path = Path(path)
        self.task = task
        self.valid_fraction = valid_fraction
        self.env_args = env_args
        self.unlabelled = unlabelled
        self._shadow = sidecar(self.path, "shadow")
        self._previous = sidecar(self.path, "previous")
        self._lock = self._acquire_lock()
        try:
            self.next_index = self._check_target()
            self._previous.unlink(missing_ok=True)  # left by a killed recorder
            for trash in self.path.parent.glob(f".{self.path.name}.trash-*"):  # a shadow a kill left behind
                trash.unlink(missing_ok=True)
            if self.path.exists():
                shutil.copyfile(self.path, self._shadow)
            else:
                self._shadow.unlink(missing_ok=True)
        except BaseException:
            self._release_lock()
            raise
        self.committed = 0
        self._behind: list[_Demo] = []  # episodes the shadow still lacks

    def _acquire_lock(self):
        if self.path.is_dir():
            raise LamRobotError(f"{self.path} is a directory; give a file path such as demos/{self.task.name}.hdf5")
        if not self.path.parent.is_dir():
            raise LamRobotError(f"directory {self.path.parent} does not exist; create it first")
        handle = open(sidecar(self.path, "lock"), "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LamRobotError(
                f"{self.path} is being written by another recorder; wait for it or use another file"
            ) from None
        return handle

    def _release_lock(self) -> None:
        if self._lock is not None:
            sidecar(self.path, "lock").unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def _check_target(self) -> int:
        """Refuse files we must not touch; return the index of the next demo."""
        return check_appendable(self.path, self.task, self.unlabelled)

    def add(
        self,
        episode: Episode,
        source: str,
        interventions: np.ndarray | None = None,
        input_events: np.ndarray | None = None,
        input_device: dict[str, Any] | None = None,
        extras: dict[str, np.ndarray] | None = None,
        extra_attrs: dict[str, Any] | None = None,
        splits: list[str] | None = None,
    ) -> str:
        """Commit one finished episode; when this returns, the file on disk holds it.
        ``input_events`` (teleop.events.EVENT_DTYPE) come with ``input_device`` {device, gain, dead_zone}.
        ``extras``: more datasets of the demo group by path (e.g. ``states``); ``extra_attrs``: more demo
        attributes; ``splits``: the masks to list it in, instead of the one ``valid_fraction`` picks."""
        if self._lock is None:
            raise LamRobotError(f"the writer of {self.path} is closed")
        if source not in schema.SOURCES:
            raise ValueError(f"source must be one of {schema.SOURCES}, got {source!r}")
        attrs = {
            "num_samples": episode.length,
            "seed": episode.seed,
            "source": source,
            "success": bool(episode.success) and not self.unlabelled,
        }
        if input_events is not None:
            attrs[schema.INPUT_DEVICE_ATTR] = json.dumps(input_device)
        demo = _Demo(
            schema.demo_name(self.next_index),
            episode,
            {**attrs, **(extra_attrs or {})},
            None if interventions is None else np.asarray(interventions, dtype=bool),
            input_events,
            extras or {},
            splits,
            self.task.goal_keys[1] if self.unlabelled and self.task.goal_keys else None,
        )
        try:
            self._append(self._shadow, [*self._behind, demo])
            if self.path.exists():
                os.link(self.path, self._previous)  # keep the old file reachable through the swap
                os.replace(self._shadow, self.path)
                os.replace(self._previous, self._shadow)
                self._behind = [demo]
            else:
                tmp = sidecar(self.path, "writing")
                shutil.copyfile(self._shadow, tmp)  # first episode: a one-episode copy
                os.replace(tmp, self.path)
        except OSError as exc:
            raise LamRobotError(f"writing {self.path} failed: {exc}") from exc
        self.next_index += 1
        self.committed += 1
        return demo.name

    def _append(self, target: Path, demos: list[_Demo]) -> None:
        with h5py.File(target, "a") as f:
            data = f.require_group("data")
            if "env_args" not in data.attrs:
                data.attrs["env_args"] = json.dumps(
                    self.env_args or env_args_for(self.task, demos[0].episode.control_freq)
                )
                data.attrs["format_version"] = schema.FORMAT_VERSION
                data.attrs["total"] = 0
                if self.unlabelled:
                    data.attrs[schema.UNLABELLED_ATTR] = True
            for demo in demos:
                _write_demo(data, demo)
                split = "valid" if schema.is_valid_split(schema.demo_index(demo.name), self.valid_fraction) else "train"
                for name in demo.splits or [split]:
                    _append_to_mask(f, name, demo.name)
            data.attrs["total"] = int(data.attrs["total"]) + sum(d.episode.length for d in demos)

    def close(self) -> None:
        """Drop the shadow copy and release the file lock; the demo file itself is already complete."""
        if self._shadow.exists():  # the file itself is complete; the shadow only speeds appends
            # Freeing a file written in many small appends takes ~0.5 s per 6 MB on a disk mounted with
            # online discard: rename it out of the way now, free it in a thread the interpreter waits for.
            trash = sidecar(self.path, f"trash-{os.getpid()}-{id(self)}")
            os.replace(self._shadow, trash)
            threading.Thread(target=trash.unlink, kwargs={"missing_ok": True}, name="lam-robot-unlink").start()
        self._release_lock()

    def __enter__(self) -> DemoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BackgroundWriter:
    """A DemoWriter in a forked child process, so that HDF5 writes overlap the simulation: ``add`` hands
    the episode over and returns while the child commits it. Use as a context manager.

    At most one episode waits in the child: ``add`` first waits until the previous one is committed.
    A kill of this process alone loses only the episode in progress (the child commits what it holds,
    then exits); a kill of the whole process group can also lose the one episode being written.
    ``committed`` counts the episodes on disk; ``close`` returns once all are. Forking suits a process
    without other threads doing I/O (not a Ray driver: use ``DemoWriter`` there)."""

    def __init__(self, path: str | Path, task: TaskSpec, valid_fraction: float = 0.1, unlabelled: bool = False) -> None:
        """Checks the file, takes its lock and makes the shadow copy here, so errors are raised here."""
        writer = DemoWriter(path, task, valid_fraction=valid_fraction, unlabelled=unlabelled)
        self.path = writer.path
        self.next_index = writer.next_index
        self.committed = 0
        self._pending = False
        try:
            context = multiprocessing.get_context("fork")
            self._conn, child = context.Pipe()
            self._process = context.Process(target=_serve, args=(writer, child, self._conn), name="lam-robot-writer")
            self._process.start()
        except BaseException:
            writer.close()
            raise
        child.close()
        assert writer._lock is not None
        writer._lock.close()  # the child holds the lock now (flock follows the shared open file)
        self._closed = False

    def add(self, episode: Episode, source: str, interventions: np.ndarray | None = None) -> str:
        """Hand one finished episode to the writer; it is on disk once ``committed`` counts it."""
        if self._closed:
            raise LamRobotError(f"the writer of {self.path} is closed")
        if source not in schema.SOURCES:
            raise ValueError(f"source must be one of {schema.SOURCES}, got {source!r}")
        self._wait()
        try:
            self._conn.send((episode, source, interventions))
        except OSError as exc:
            raise LamRobotError(f"the writer process of {self.path} died: {exc}") from exc
        self._pending = True
        name = schema.demo_name(self.next_index)
        self.next_index += 1
        return name

    def _wait(self) -> None:
        """Wait for the child to commit the episode it holds (if any)."""
        if not self._pending:
            return
        self._pending = False
        try:
            error = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise LamRobotError(
                f"the writer process of {self.path} died; the file holds the {self.committed} episodes committed before"
            ) from exc
        if error is not None:
            raise LamRobotError(error)
        self.committed += 1

    def close(self) -> None:
        """Wait until every episode handed over is on disk, then stop the child."""
        if self._closed:
            return
        self._closed = True
        try:
            self._wait()
            self._conn.send(None)
            self._conn.recv()  # the child has closed the writer: lock released, shadow on its way out
        except (EOFError, OSError):
            pass  # the child is gone, and with it the lock
        finally:
            self._conn.close()
        # Not joined: the child may still be freeing the shadow copy; multiprocessing reaps it.

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(writer: DemoWriter, conn: Connection, parent_end: Connection) -> None:
    """The child: commit each episode received and answer None (or the error), until the stream ends."""
    parent_end.close()  # inherited by the fork; left open, the parent's death would never end the stream
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which drains and closes
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone: what it sent is committed
                return
            if message is None:  # close
                writer.close()
                _answer(conn, None)
                return
            try:
                writer.add(message[0], source=message[1], interventions=message[2])
            except Exception as exc:
                _answer(conn, str(exc) if isinstance(exc, LamRobotError) else f"writing {writer.path} failed: {exc!r}")
                return
            if not _answer(conn, None):
                return
    finally:
        writer.close()  # a second close is harmless


def _answer(conn: Connection, message: str | None) -> bool:
    """Send to the parent; False when it is gone (killed): the child then closes the writer and exits."""
    try:
        conn.send(message)
    except OSError:
        return False
    return True


@dataclasses.dataclass
class _Demo:
    name: str
    episode: Episode
    attrs: dict[str, Any]
    interventions: np.ndarray | None
    input_events: np.ndarray | None = None
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    splits: list[str] | None = None
    strip: str | None = None
    """Play data: the observation key (the task's desired goal) and the rewards left out."""


def _write_demo(data: h5py.Group, demo: _Demo) -> None:
    group = data.create_group(demo.name)
    ep = demo.episode
    obs, next_obs = group.create_group("obs"), group.create_group("next_obs")
    for key in ep.obs:
        if key != demo.strip:
            _dataset(obs, key, ep.obs[key])
            _dataset(next_obs, key, ep.next_obs[key])
    _dataset(group, "actions", ep.actions.astype(np.float32))
    if demo.strip is None:
        _dataset(group, "rewards", ep.rewards)
    _dataset(group, "terminated", ep.terminated)
    _dataset(group, "truncated", ep.truncated)
    _dataset(group, "dones", ep.terminated | ep.truncated)
    if demo.interventions is not None:
        _dataset(group, "interventions", demo.interventions)
    if ep.states is not None:
        _dataset(group, "states", ep.states)
    if demo.input_events is not None:
        _dataset(group, schema.INPUT_EVENTS, demo.input_events)
    for path, values in demo.extras.items():
        parent, _, leaf = path.rpartition("/")
        _dataset(group.require_group(parent) if parent else group, leaf, values)
    for key, value in demo.attrs.items():
        group.attrs.create(key, value)


def _dataset(group: h5py.Group, name: str, values: np.ndarray) -> None:
    """A contiguous dataset through h5py's low-level API: half the cost of create_dataset."""
    values = np.ascontiguousarray(values)
    dataset = h5py.h5d.create(
        group.id, name.encode(), h5py.h5t.py_create(values.dtype), h5py.h5s.create_simple(values.shape)
    )
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, values)


def _append_to_mask(f: h5py.File, split: str, name: str) -> None:
    """mask/<split> grows by one name; mask/train and mask/valid always exist."""
    if "mask" not in f or split not in f["mask"] or "valid" not in f["mask"] or "train" not in f["mask"]:
        mask = f.require_group("mask")
        for key in ("train", "valid", split):
            if key not in mask:
                mask.create_dataset(key, shape=(0,), maxshape=(None,), dtype="S16", chunks=(256,))
    # One name through the low-level API: h5py's slicing costs several times the write itself.
    members = h5py.h5d.open(f.id, f"mask/{split}".encode())
    n = members.shape[0]
    members.set_extent((n + 1,))
    selection = members.get_space()
    selection.select_hyperslab((n,), (1,))
    members.write(h5py.h5s.create_simple((1,)), selection, np.array([name.encode()], dtype="S16"))
