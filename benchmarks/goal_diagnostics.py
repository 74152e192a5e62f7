"""Two diagnostics behind the goal-reaching README (issue 13), on benchmarks/goal_targets.py's own files.

    python benchmarks/goal_diagnostics.py

- coverage: for the evaluation episodes of goal_targets seeds 0-2 on nav-medium (reset seeds 10_000 + 1000 x
  seed + i), the share whose goal, whose start, and both, lie within half a cell (0.5) of a state the 5 demos
  passed through: what hindsight relabelling of those demos can reach at best;
- idm: how well the inverse-dynamics model fit on each task's demos (`pretrain --demos`) labels the play
  data's states: per action dimension, the correlation of its labels with the logged actions (first 20 play
  episodes).
Writes benchmarks/results/goal_diagnostics.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from goal_targets import RESULTS, demos, play  # noqa: E402

from lam_robot.config import PretrainConfig  # noqa: E402
from lam_robot.data.dataset import DemoFile  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.pretrain import _flat, idm_keys, inverse_model  # noqa: E402

WORKDIR = Path(__file__).parent / ".work" / "goal_targets"
EPISODES = 50


def coverage(task_name: str = "nav-medium", radius: float = 0.5) -> dict:
    """Per goal_targets seed: the share of its evaluation episodes whose goal, start, and both lie near a demo
    state."""
    task = load_task(task_name)
    with DemoFile(demos(task_name, WORKDIR)) as f:
        visited = np.concatenate([f.episode(n)["obs"]["achieved_goal"] for n in f.demo_names])
    env = task.make_env()
    shares = {}
    for seed in range(3):
        near_goal, near_start = [], []
        for i in range(EPISODES):
            obs, _ = env.reset(seed=10_000 + 1000 * seed + i)
            near_goal.append(np.linalg.norm(visited - obs["desired_goal"], axis=1).min() < radius)
            near_start.append(np.linalg.norm(visited - obs["achieved_goal"], axis=1).min() < radius)
        goal, start = np.array(near_goal), np.array(near_start)
        shares[seed] = {"goal": goal.mean(), "start": start.mean(), "both": (goal & start).mean()}
    env.close()
    return shares


def idm_correlation(task_name: str) -> list[float]:
    """Per action dimension: correlation of the inverse-dynamics labels of play states with the logged actions."""
    task = load_task(task_name)
    config = PretrainConfig(data=play(task_name, WORKDIR), demos=demos(task_name, WORKDIR), out=Path("unused"))
    idm = inverse_model(config, task)
    keys = idm_keys(task)
    with DemoFile(play(task_name, WORKDIR)) as f:
        episodes = [f.episode(n) for n in list(f.demo_names)[:20]]
    obs = np.concatenate([_flat(e["obs"], keys) for e in episodes])
    next_obs = np.concatenate([_flat(e["next_obs"], keys) for e in episodes])
    logged = np.concatenate([e["actions"] for e in episodes])
    labels = idm.label(obs, next_obs)
    return [round(float(np.corrcoef(labels[:, i], logged[:, i])[0, 1]), 3) for i in range(logged.shape[1])]


def main() -> None:
    """Measure both, write the JSON, print it."""
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    result = {"coverage": {str(k): {n: round(float(v), 2) for n, v in s.items()} for k, s in coverage().items()},
              "idm_correlation": {t: idm_correlation(t) for t in ("nav-medium", "grasp")}}
    (RESULTS / "goal_diagnostics.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
