"""Move demos between lam-robot's HDF5 files and other tools: `imitation` trajectories and Minari.

Exports read through the one reader (DemoFile) and imports write through the one writer
(DemoWriter). A round trip keeps every array: observations (the N+1 of the other formats are
our obs plus the last next_obs), actions, rewards, terminated and truncated; the per-demo
seed, source and success travel in the last step's info.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from lam_robot.data.dataset import DemoFile
from lam_robot.data.writer import DemoWriter
from lam_robot.errors import LamRobotError
from lam_robot.rollout import Episode
from lam_robot.tasks import TaskSpec

META = "lam_robot"  # key in the last step's info that carries seed, source and success


def _episodes(path: str | Path) -> tuple[TaskSpec, list[dict[str, Any]]]:
    with DemoFile(path, check_values=True) as demos:
        return demos.task, [demos.episode(name) for name in demos.demo_names]


def _observations(ep: dict[str, Any]) -> dict[str, np.ndarray]:
    """N+1 observations per key: the N observations and the final next observation."""
    return {k: np.concatenate([ep["obs"][k], ep["next_obs"][k][-1:]]) for k in ep["obs"]}


def _episode(
    observations: dict[str, np.ndarray],
    actions: np.ndarray,
    rewards: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    meta: dict[str, Any],
    index: int,
) -> Episode:
    n = len(actions)
    for key, values in observations.items():
        if len(values) != n + 1:
            raise LamRobotError(f"episode {index}: observation {key!r} has {len(values)} rows, expected {n + 1}")
    return Episode(
        obs={k: v[:-1] for k, v in observations.items()},
        next_obs={k: v[1:] for k, v in observations.items()},
        actions=np.asarray(actions, np.float32),
        rewards=np.asarray(rewards, np.float64),
        terminated=np.asarray(terminated, bool),
        truncated=np.asarray(truncated, bool),
        success=bool(meta.get("success", False)),
        seed=int(meta.get("seed", index)),
        index=index,
    )


def _import(episodes: list[tuple[Episode, str]], task: TaskSpec, out: str | Path) -> int:
    if Path(out).exists():
        raise LamRobotError(f"{out} exists; import into a new file")
    with DemoWriter(out, task) as writer:
        for episode, source in episodes:
            writer.add(episode, source=source)
    return len(episodes)


# --- imitation ------------------------------------------------------------------------------------


def _layout(observations: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """gymnasium's flatten order for Dict spaces: keys sorted, each flattened."""
    return [(k, int(np.prod(observations[k].shape[1:]))) for k in sorted(observations)]


def to_imitation(path: str | Path) -> list:
    """The demos as imitation ``TrajectoryWithRew`` objects. Observations are flat, in the order of
    gymnasium's FlattenObservation over the env's Dict space (what imitation's algorithms train on);
    the last step's info records the layout so that the keys can be split again."""
    from imitation.data.types import TrajectoryWithRew

    _, episodes = _episodes(path)
    trajectories = []
    for ep in episodes:
        observations = _observations(ep)
        layout = _layout(observations)
        flat = np.concatenate([observations[k].reshape(len(observations[k]), -1) for k, _ in layout], axis=1)
        infos: list[dict[str, Any]] = [{} for _ in ep["actions"]]
        infos[-1] = {
            META: {
                "seed": int(ep["attrs"]["seed"]),
                "source": str(ep["attrs"]["source"]),
                "success": bool(ep["attrs"]["success"]),
                "obs_layout": layout,
            },
            "truncated": bool(ep["truncated"][-1]),
        }
        trajectories.append(
            TrajectoryWithRew(
                obs=flat,
                acts=ep["actions"],
                infos=np.array(infos),
                terminal=bool(ep["terminated"][-1]),
                rews=ep["rewards"],
            )
        )
    return trajectories


def export_imitation(path: str | Path, out: str | Path) -> int:
    """Save the demos with imitation's own serialiser (a HuggingFace dataset directory)."""
    from imitation.data import serialize

    if Path(out).exists():
        raise LamRobotError(f"{out} exists; export into a new directory")
    trajectories = to_imitation(path)
    serialize.save(out, trajectories)
    return len(trajectories)


def import_imitation(source: str | Path | list, task: TaskSpec, out: str | Path) -> int:
    """Trajectories (a list, or a directory saved by imitation) -> a new demo file of ``task``.
    Flat observations are split by the layout lam-robot stored, else by the task env's Dict space."""
    trajectories: Sequence[Any]
    if isinstance(source, (str, Path)):
        from imitation.data import serialize

        if not Path(source).is_dir():
            raise LamRobotError(f"{source}: no such imitation trajectory directory")
        trajectories = serialize.load(source)
    else:
        trajectories = source
    env = task.make_env()
    obs_space = cast(gym.spaces.Dict, env.observation_space)  # goal envs: a dict of spaces
    default_layout = _layout({k: np.zeros((1,) + (space.shape or ())) for k, space in obs_space.items()})
    env.close()
    episodes = []
    for i, traj in enumerate(trajectories):
        n = len(traj.acts)
        infos = list(traj.infos) if traj.infos is not None else [{}] * n
        meta = dict(infos[-1].get(META, {})) if n else {}
        layout = [(k, int(d)) for k, d in meta.get("obs_layout", default_layout)]
        flat = np.asarray(traj.obs).reshape(n + 1, -1)
        if flat.shape[1] != sum(d for _, d in layout):
            raise LamRobotError(
                f"trajectory {i} has observations of size {flat.shape[1]}, but task {task.name!r} "
                f"has {sum(d for _, d in layout)}; import into the task it was recorded in"
            )
        bounds = np.cumsum([0] + [d for _, d in layout])
        observations = {k: flat[:, bounds[j] : bounds[j + 1]] for j, (k, _) in enumerate(layout)}
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        terminated[-1] = bool(traj.terminal)
        truncated[-1] = bool(infos[-1].get("truncated", not traj.terminal))
        rewards = getattr(traj, "rews", np.zeros(n))
        episodes.append(
            (
                _episode(observations, traj.acts, rewards, terminated, truncated, meta, i),
                str(meta.get("source", "expert")),
            )
        )
    return _import(episodes, task, out)


# --- Minari -------------------------------------------------------------------------------------


def export_minari(path: str | Path, dataset_id: str, author: str = "lam-robot") -> int:
    """Write a local Minari dataset (under MINARI_DATASETS_PATH or ~/.minari) that minari.load_dataset opens."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    task, episodes = _episodes(path)
    buffers = []
    for i, ep in enumerate(episodes):
        n = len(ep["actions"])
        success = np.zeros(n, bool)
        success[-1] = bool(ep["attrs"]["success"])
        seed = np.full(n, int(ep["attrs"]["seed"]))
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=int(ep["attrs"]["seed"]),
                observations=_observations(ep),
                actions=ep["actions"],
                rewards=list(ep["rewards"]),
                terminations=list(ep["terminated"]),
                truncations=list(ep["truncated"]),
                infos={"success": success, "seed": seed},
            )
        )
    env = task.make_env()
    try:
        with warnings.catch_warnings():  # Minari's advice about optional metadata (e-mail, scores)
            warnings.simplefilter("ignore", UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env.spec,
                eval_env=env.spec,
                algorithm_name="lam-robot",
                author=author,
                description=f"lam-robot demos of task {task.name} from {Path(path).name}",
            )
    except ValueError as exc:
        raise LamRobotError(f"Minari refused dataset {dataset_id!r}: {exc}") from exc
    finally:
        env.close()
    return len(buffers)


def import_minari(dataset_id: str, task: TaskSpec, out: str | Path) -> int:
    """A Minari dataset (by id) -> a new demo file of ``task``; returns the number of episodes."""
    import minari

    try:
        dataset = minari.load_dataset(dataset_id)
    except (FileNotFoundError, ValueError) as exc:
        raise LamRobotError(f"cannot open Minari dataset {dataset_id!r}: {exc}") from exc
    episodes = []
    for i, ep in enumerate(dataset.iterate_episodes()):
        if not isinstance(ep.observations, dict):
            raise LamRobotError(
                f"Minari dataset {dataset_id!r} has flat observations; lam-robot files keep each observation key"
            )
        infos = ep.infos or {}
        meta = {
            "seed": int(infos["seed"][-1]) if "seed" in infos else i,
            "success": bool(infos["success"][-1]) if "success" in infos else False,
        }
        episodes.append(
            (
                _episode(dict(ep.observations), ep.actions, ep.rewards, ep.terminations, ep.truncations, meta, i),
                "expert",
            )
        )
    return _import(episodes, task, out)
