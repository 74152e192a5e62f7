"""Demo files to and from `imitation` trajectories (``TrajectoryWithRew``, its own serialiser on disk).

Observations are flat, in the order of gymnasium's FlattenObservation over the env's Dict space
(what imitation's algorithms train on). Actions and rewards have their fields, the final terminated
flag is ``terminal``; every other per-step array (terminated, truncated, dones, interventions, ...)
is a key of each step's info dict, and the last step's info holds lam-robot's metadata under
``"lam_robot"``: the observation layout, the demo's attributes, masks and packed input events, and
the file's env_args. Nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.interop import carry
from lam_robot.interop.carry import META
from lam_robot.tasks import TaskSpec

NATIVE_STEPS = ("actions", "rewards")
"""Per-step arrays with a field of their own in a trajectory; the rest travel in the step infos."""


def obs_layout(observations: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """gymnasium's flatten order for Dict spaces: keys sorted, each flattened."""
    return [(k, int(np.prod(observations[k].shape[1:]))) for k in sorted(observations)]


def to_imitation(path: str | Path) -> list:
    """The demos as imitation ``TrajectoryWithRew`` objects (flat observations; see the module docstring)."""
    return _trajectories(carry.read(path))


def _trajectories(contents: carry.Contents) -> list:
    from imitation.data.types import TrajectoryWithRew

    trajectories = []
    for demo in contents.demos:
        layout = obs_layout(demo.obs)
        flat = np.concatenate([demo.obs[k].reshape(len(demo.obs[k]), -1) for k, _ in layout], axis=1)
        infos: list[dict[str, Any]] = [{} for _ in range(demo.length)]
        for name, values in demo.steps.items():
            if name not in NATIVE_STEPS:
                for info, row in zip(infos, values.tolist()):
                    info[name] = row
        infos[-1][META] = {**demo.meta(), **contents.file_meta(), "obs_layout": layout}
        trajectories.append(
            TrajectoryWithRew(
                obs=flat,
                acts=demo.steps["actions"],
                infos=np.array(infos),
                terminal=bool(demo.steps["terminated"][-1]),
                rews=demo.steps["rewards"],
            )
        )
    return trajectories


def export_imitation(path: str | Path, out: str | Path, overwrite: bool = False) -> carry.Exported:
    """Save the demos with imitation's own serialiser (a HuggingFace dataset directory)."""
    from imitation.data import serialize

    contents = carry.read(path)
    carry.clear_target(out, overwrite, marker="dataset_info.json")
    serialize.save(out, _trajectories(contents))
    return carry.Exported(len(contents.demos), contents.dropped())


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
    default_layout = obs_layout({k: np.zeros((1,) + (space.shape or ())) for k, space in obs_space.items()})
    env.close()
    demos, env_args = [], None
    for i, traj in enumerate(trajectories):
        n = len(traj.acts)
        infos = list(traj.infos) if traj.infos is not None else [{}] * n
        meta = infos[-1].get(META) if n else None
        if meta is not None and env_args is None:
            env_args = carry.carried_env_args(meta, task, f"trajectory {i}")
        layout = [(k, int(d)) for k, d in (meta or {}).get("obs_layout", default_layout)]
        flat = np.asarray(traj.obs).reshape(n + 1, -1)
        if flat.shape[1] != sum(d for _, d in layout):
            raise LamRobotError(
                f"trajectory {i} has observations of size {flat.shape[1]}, but task {task.name!r} "
                f"has {sum(d for _, d in layout)}; import into the task it was recorded in"
            )
        bounds = np.cumsum([0] + [d for _, d in layout])
        obs = {k: flat[:, bounds[j] : bounds[j + 1]] for j, (k, _) in enumerate(layout)}
        steps = {"actions": np.asarray(traj.acts), "rewards": np.asarray(getattr(traj, "rews", np.zeros(n)))}
        if meta is None:  # foreign trajectories: the terminal flag ends them
            steps["terminated"], steps["truncated"] = np.zeros(n, bool), np.zeros(n, bool)
            steps["terminated" if traj.terminal else "truncated"][-1] = True
        else:
            for name, spec in meta["steps"].items():
                if name not in NATIVE_STEPS:
                    rows = [info[name] for info in infos]
                    steps[name] = np.array(rows, dtype=carry.dtype_from_spec(spec)).reshape(n, *spec[1])
            obs = {k: v.reshape(n + 1, *meta["obs"][k][1]) for k, v in obs.items()}
        demos.append(carry.demo_from_meta(meta, i, obs, steps, {}))
    return carry.write(demos, task, out, env_args)
