"""Demo files to and from local Minari datasets (under MINARI_DATASETS_PATH, default ~/.minari/datasets).

Observations stay a dict (N+1 per episode, as Minari stores them); actions, rewards, terminations
and truncations have their fields, the seed is the episode's own. Every other per-step array
(dones, interventions, ...) is a step info, N+1 rows as Minari's DataCollector records them: row 0
belongs to the reset (zeros), row t+1 to step t. Each episode's metadata holds lam-robot's (JSON
under ``"lam_robot"``: attributes, masks, packed input events), the dataset's metadata the file's
env_args. Nothing is dropped.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.interop import carry
from lam_robot.interop.carry import META
from lam_robot.tasks import TaskSpec

NATIVE_STEPS = {"actions": "actions", "rewards": "rewards", "terminated": "terminations", "truncated": "truncations"}
"""Our per-step arrays with a field of their own in a Minari episode (ours -> Minari's name)."""


def _info_key(name: str) -> str:
    return name.replace("/", ".")  # Minari nests infos on "/"


def export_minari(
    path: str | Path, dataset_id: str, author: str = "lam-robot", overwrite: bool = False
) -> carry.Exported:
    """Write a local Minari dataset that minari.load_dataset opens; ``overwrite`` replaces one of that id."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    contents = carry.read(path)
    if dataset_id in minari.list_local_datasets():
        if not overwrite:
            raise LamRobotError(f"Minari dataset {dataset_id!r} exists; choose another id or pass --overwrite")
        minari.delete_dataset(dataset_id)
    buffers = []
    for i, demo in enumerate(contents.demos):
        infos = {}
        for name, values in demo.steps.items():
            if name not in NATIVE_STEPS:
                infos[_info_key(name)] = np.concatenate([np.zeros_like(values[:1]), values])
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=int(demo.attrs["seed"]),
                observations=demo.obs,
                actions=demo.steps["actions"],
                rewards=list(demo.steps["rewards"]),
                terminations=list(demo.steps["terminated"]),
                truncations=list(demo.steps["truncated"]),
                infos=infos,
            )
        )
    env = contents.task.make_env()
    try:
        with warnings.catch_warnings():  # Minari's advice about optional metadata (e-mail, scores)
            warnings.simplefilter("ignore", UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env.spec,
                eval_env=env.spec,
                algorithm_name="lam-robot",
                author=author,
                description=f"lam-robot demos of task {contents.task.name} from {Path(path).name}",
            )
    except ValueError as exc:
        raise LamRobotError(f"Minari refused dataset {dataset_id!r}: {exc}") from exc
    finally:
        env.close()
    dataset.storage.update_metadata({META: json.dumps(contents.file_meta())})
    dataset.storage.update_episode_metadata([{META: json.dumps(d.meta())} for d in contents.demos])
    return carry.Exported(len(buffers), contents.dropped())


def import_minari(dataset_id: str, task: TaskSpec, out: str | Path) -> int:
    """A Minari dataset (by id) -> a new demo file of ``task``; returns the number of episodes."""
    import minari

    try:
        dataset = minari.load_dataset(dataset_id)
    except (FileNotFoundError, ValueError) as exc:
        raise LamRobotError(f"cannot open Minari dataset {dataset_id!r}: {exc}") from exc
    file_meta = dataset.storage.metadata.get(META)
    env_args = carry.carried_env_args(
        json.loads(file_meta) if file_meta else None, task, f"Minari dataset {dataset_id!r}"
    )
    metas = list(dataset.storage.get_episode_metadata(dataset.episode_indices))
    demos = []
    for i, (ep, episode_meta) in enumerate(zip(dataset.iterate_episodes(), metas)):
        if not isinstance(ep.observations, dict):
            raise LamRobotError(
                f"Minari dataset {dataset_id!r} has flat observations; lam-robot files keep each observation key"
            )
        steps = {ours: np.asarray(getattr(ep, theirs)) for ours, theirs in NATIVE_STEPS.items()}
        infos: dict[str, Any] = ep.infos or {}
        meta = json.loads(episode_meta[META]) if META in episode_meta else None
        defaults = {}
        if meta is None:  # a foreign dataset: its own seed, and success if it records it
            defaults = {"seed": int(episode_meta.get("seed", i)), "success": bool(infos.get("success", [False])[-1])}
        else:
            for name in meta["steps"]:
                if name not in NATIVE_STEPS:
                    steps[name] = np.asarray(infos[_info_key(name)])[1:]
        demos.append(carry.demo_from_meta(meta, i, dict(ep.observations), steps, defaults))
    return carry.write(demos, task, out, env_args)
