"""What a SAC fine-tuning run keeps on disk besides its weights: the online replay buffer in OUT/last/
(so a killed run resumes with the experience it had), and ``RUN/sac.zip`` opened as a policy.

The buffer file holds only the filled part of SB3's (Dict or HER) replay buffer, as one ``.npz``
replaced atomically, stamped with the env step count of the snapshot it belongs to; a buffer whose
stamp does not match the weights (a kill between the two writes) is not used.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC

from lam_robot.errors import LamRobotError
from lam_robot.policy.history import History, HistoryKeeper
from lam_robot.policy.sb3_bridge import read_zip_header
from lam_robot.tasks import TaskSpec, space_size
from lam_robot.train.sac import ACHIEVED, GOAL, TransformerSACPolicy, goal_layout

REPLAY = "replay.npz"
_ARRAYS = ("actions", "rewards", "dones", "timeouts", "ep_start", "ep_length")
"""Per-transition arrays of SB3's buffers besides the observations (HER adds the episode ones)."""


def save_replay(buffer: Any, directory: Path, num_timesteps: int) -> None:
    """The filled part of ``buffer`` as ``directory/replay.npz``, stamped with ``num_timesteps``."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {f"obs.{k}": v[:n] for k, v in buffer.observations.items()}
    arrays |= {f"next.{k}": v[:n] for k, v in buffer.next_observations.items()}
    arrays |= {name: getattr(buffer, name)[:n] for name in _ARRAYS if hasattr(buffer, name)}
    arrays |= {"pos": np.asarray(buffer.pos), "full": np.asarray(buffer.full), "stamp": np.asarray(num_timesteps)}
    if hasattr(buffer, "_current_ep_start"):
        arrays["current_ep_start"] = buffer._current_ep_start
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{REPLAY}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, directory / REPLAY)


def restore_replay(buffer: Any, directory: Path, num_timesteps: int) -> int:
    """Fill ``buffer`` from ``directory/replay.npz`` if it belongs to the snapshot at ``num_timesteps``;
    the episodes that were running are closed as truncated (the envs start new ones). Returns the
    number of transitions restored (0: no usable file; the run refills the buffer instead)."""
    path = directory / REPLAY
    if not path.is_file():
        return 0
    try:
        with np.load(path) as data:
            if int(data["stamp"]) != num_timesteps:
                return 0
            n = len(data["actions"])
            for key, target in buffer.observations.items():
                target[:n] = data[f"obs.{key}"]
            for key, target in buffer.next_observations.items():
                target[:n] = data[f"next.{key}"]
            for name in _ARRAYS:
                if hasattr(buffer, name):
                    getattr(buffer, name)[:n] = data[name]
            buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])
            if hasattr(buffer, "_current_ep_start"):
                buffer._current_ep_start[:] = data["current_ep_start"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return 0  # a damaged or foreign file: refill instead
    if hasattr(buffer, "truncate_last_trajectory"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SB3 warns that it truncates: that is the point here
            buffer.truncate_last_trajectory()
    return n


def is_sac_zip(path: str | Path) -> bool:
    """Whether ``path`` is a lam-robot SAC model (its policy keyword arguments name the goal slot)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "goal_at" in json.loads(archive.read("data")).get("policy_kwargs", {})
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, AttributeError):
        return False


class SacZipPolicy:
    """A ``finetune --algo sac`` model (``RUN/sac.zip``) behind the predict protocol on the env's own
    observations: it keeps each env's history and builds SAC's Dict observation itself."""

    def __init__(self, model: SAC, task: TaskSpec, env: gym.Env) -> None:
        self.model = model
        self.keys, self.goal_at = goal_layout(task, env)
        space = cast(gym.spaces.Dict, env.observation_space)
        context = int(cast(TransformerSACPolicy, model.policy).network["context"])
        self._histories = HistoryKeeper(context, sum(space_size(space[k]) for k in self.keys))

    def predict(
        self, obs: dict[str, np.ndarray], state: Any = None, episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, History]:  # fmt: skip
        """Actions for one observation or a batch, and the new histories (as ``TransformerPolicy``)."""
        flat = np.concatenate([np.asarray(obs[k], np.float32) for k in self.keys], axis=-1)
        single = flat.ndim == 1
        rows = flat.reshape(-1, flat.shape[-1])
        history = self._histories.step(rows, state, episode_start)
        sac_obs = {"observation": history.to_box()}
        if self.goal_at is not None:
            for key in (ACHIEVED, GOAL):
                sac_obs[key] = np.asarray(obs[key], np.float32).reshape(len(rows), -1)
        with torch.inference_mode():
            action, _ = self.model.predict(sac_obs, deterministic=deterministic)
        return (action[0] if single else action), history


def load_sac(path: str | Path, task: TaskSpec, env: gym.Env) -> SacZipPolicy:
    """``RUN/sac.zip`` opened by SB3's ``SAC.load`` on the CPU without unpickling (the pickled entries are
    rebuilt from ``task`` or left out), checked against the task's sizes."""
    path = Path(path)
    data, context, obs_dim, low, high = read_zip_header(path, "sac")
    kwargs = data["policy_kwargs"]
    keys, goal_at = goal_layout(task, env)
    space = cast(gym.spaces.Dict, env.observation_space)
    dim = sum(space_size(space[k]) for k in keys)
    goal = space_size(space[GOAL]) if goal_at is not None else 0
    act = cast(gym.spaces.Box, env.action_space).shape
    if dim + goal != obs_dim or (kwargs.get("goal_at") is None) != (goal_at is None) or act != low.shape:
        raise LamRobotError(
            f"{path} was trained on observations of size {obs_dim} and actions of shape {low.shape}; task "
            f"{task.name!r} gives {dim + goal} and {act}: give the task it was fine-tuned in"
        )
    spaces: dict[str, gym.spaces.Space] = {
        "observation": gym.spaces.Box(-np.inf, np.inf, shape=(context, dim + 1), dtype=np.float32)
    }
    if goal_at is not None:
        for key in (ACHIEVED, GOAL):
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape=(space_size(space[key]),), dtype=np.float32)
    rebuilt: dict[str, Any] = {
        "policy_class": TransformerSACPolicy,
        "observation_space": gym.spaces.Dict(spaces),
        "action_space": gym.spaces.Box(low, high, dtype=np.float32),
        "replay_buffer_class": None,
        "replay_buffer_kwargs": {},
        "buffer_size": 1,  # inference only: no replay buffer worth allocating
        "train_freq": 1,
        "learning_rate": 3e-4,
        "lr_schedule": None,
        "action_noise": None,
    }
    pickled = [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]
    overrides = {k: rebuilt.get(k) for k in pickled} | {k: rebuilt[k] for k in ("buffer_size", "replay_buffer_kwargs")}
    try:
        model = SAC.load(path, device="cpu", custom_objects=overrides)
    except (RuntimeError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise LamRobotError(f"{path} is corrupt or not a lam-robot SAC model ({reason})") from exc
    model.policy.set_training_mode(False)
    return SacZipPolicy(model, task, env)
