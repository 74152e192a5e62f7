"""Diagnostics behind the goal-reaching README (issue 13), on benchmarks/goal_targets.py's own files.

    python benchmarks/goal_diagnostics.py                          # all of them (about 10 minutes on one core)
    python benchmarks/goal_diagnostics.py --only si_kept si_buffer  # some; the others keep their last values

- coverage: for the evaluation episodes of goal_targets seeds 0-2 on nav-medium (reset seeds 10_000 + 1000 x
  seed + i), the share whose goal, whose start, and both, lie within half a cell (0.5) of a state the 5 demos
  passed through: what hindsight relabelling of those demos can reach at best;
- bc_coverage: nav-medium's bc and bc+relabel rows (seeds 0-2) on the same episodes: success on those whose start
  and goal both lie near a demo state, and on the others;
- idm: how well the inverse-dynamics model fit on each task's demos (`pretrain --demos`) labels the play
  data's states: per action dimension, the correlation of its labels with the logged actions (first 20 play
  episodes);
- si_kept: the share of relabelled windows the self-imitation value filter kept, at the end of each
  `bc+relabel+ppo+si` run of goal_targets (default settings; from its TensorBoard log);
- si_buffer: what self-imitation keeps on grasp: a 30k-step `finetune --self-imitation hindsight` from
  goal_targets' seed-0 relabelled BC, then its buffer: windows, episodes that gave any, goals above the table,
  relabelled return against the critic's value (quartiles);
- nav_failures: success and mean episode length by shortest-path distance (cells) from start to goal, on the
  seed's evaluation episodes, for the nav-medium `bc+relabel+ppo+si` 500k policies and the pretrained one;
- nav_motion: how seed 0's nav-medium policies move on its 50 evaluation episodes, over the successes and the
  failures apart: episode length, mean action norm, mean speed, share of steps stuck (speed < 0.2), path
  travelled over the shortest path, and shortest-path cells to the goal at the start and at the end; and the
  success rate when the policy samples its actions instead of taking its mean;
- nav_stuck: where the failures of seed 2's `--si-priority advantage` policy end, on its 50 evaluation episodes:
  for each, the start, the goal, the final position, how far the ball moved over its last 100 steps (the size
  of their bounding box) and the mean action norm over them;
- nav_noise: the same policy's success on the same 50 episodes when Gaussian noise (std 0.3 or 0.6, in the env's
  [-1, 1] action units) is added to its mean action, drawn afresh every step or held for 25 steps: whether a
  push that lasts gets the ball round a wall (one env at a time; noise seeded per run);
- nav_waypoints: the same policy on the same episodes when its goal is replaced by the centre of the cell 1, 2 or
  4 cells ahead on the maze's shortest path to the real goal (the real goal itself once that close; the env
  still judges success on the real goal): whether the policy's local skill suffices once someone else routes;
- nav_graph: the same, routed without the map: a graph of the points its own 100 rollouts on other seeds
  reached (every 5th step a node; edges along each rollout, both ways, and between nodes of any two rollouts
  closer than 0.25), the shortest path in steps from the ball's nearest node to the goal's, and as goal the
  node 4, 8, 12 or 16 nodes (about 20 to 80 steps) along it; the real goal once within 1.0 of the ball, or when no node
  lies within 0.5 of it;
- route_ahead: `evaluate --route` on the three nav-medium `--si-horizon 15` runs of goal_targets' routed row, for
  waypoints 20, 40, 60 and 80 env steps ahead, on 50 episodes per seed that the benchmark does not evaluate on (reset
  seeds 20_000 + 1000 x seed + i): the default's check on episodes the benchmark does not use; and unrouted. No
  sight check (`--route-sight 0`): how the first default, 40 steps, was chosen;
- route_sight: the same runs and episodes with the sight check (`--route-sight`: where the route bends within
  the waypoint's steps, aim through the bend): 40 steps and 0.45 success radii, 60 steps, 0.3 and 0.7 radii;
- route_sight_large: nav-large's three routed runs (default settings, 1M) on their own 50 other episodes per
  seed: unrouted; 40 steps ahead without and with the sight check (0.45), 60 steps with it, and 20 steps
  without (a near waypoint).
Writes benchmarks/results/goal_diagnostics.json.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from goal_targets import RESULTS, bc_run, demos, play  # noqa: E402

from lam_robot.config import FinetuneConfig, PretrainConfig  # noqa: E402
from lam_robot.data.dataset import DemoFile  # noqa: E402
from lam_robot.experts.maze import MazeExpert  # noqa: E402
from lam_robot.policy.routing import routed_policy  # noqa: E402
from lam_robot.rollout import run_episodes  # noqa: E402
from lam_robot.sources import load_policy  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.finetune import FinetuneRun  # noqa: E402
from lam_robot.train.pretrain import _flat, idm_keys, inverse_model  # noqa: E402

WORKDIR = Path(__file__).parent / ".work" / "goal_targets"
EPISODES = 50
PRIORITY_RUN = "nav-medium-bc+relabel+ppo+si-2-si_horizon=15.0,si_priority=advantage-500000"
"""The 80% policy (seed 2, --si-priority advantage) whose failures nav_stuck, nav_noise, nav_waypoints and nav_graph
study, on its own evaluation episodes (reset seeds 10_000 + 2000 + i)."""


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


def bc_coverage(radius: float = 0.5) -> dict:
    """nav-medium's bc and bc+relabel rows (goal_targets seeds 0-2, their evaluation episodes): success on the
    episodes whose start and goal both lie near a demo state (``coverage``'s "both") and on the others."""
    task = load_task("nav-medium")
    with DemoFile(demos("nav-medium", WORKDIR)) as f:
        visited = np.concatenate([f.episode(n)["obs"]["achieved_goal"] for n in f.demo_names])
    result = {}
    for row in ("bc", "bc+relabel"):
        wins = {"covered": [], "other": []}
        for seed in range(3):
            policy = load_policy(str(bc_run("nav-medium", row, seed, WORKDIR)), task, seed=seed)
            for e in run_episodes(task, policy, EPISODES, seed=10_000 + 1000 * seed, n_envs=4, states=False):
                near = [np.linalg.norm(visited - e.obs[k][0], axis=1).min() < radius for k in ("achieved_goal",
                                                                                                "desired_goal")]
                wins["covered" if all(near) else "other"].append(bool(e.success))
        result[row] = {part: {"episodes": len(w), "success": round(float(np.mean(w)), 3)} for part, w in wins.items()}
    return result


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


def si_kept() -> dict:
    """Per goal_targets self-imitation run (default settings): the kept share of relabelled windows at its end."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shares = {}
    for run in sorted(WORKDIR.glob("*-bc+relabel+ppo+si-[0-9]-[0-9]*")):
        kept = [e for log in sorted((run / "tensorboard").glob("*")) for e in _scalars(EventAccumulator(str(log)))]
        if kept:
            shares[run.name] = round(max(kept)[1], 3)  # the latest step's value
    return shares


def _scalars(log) -> list[tuple[int, float]]:
    log.Reload()
    tag = "train/si_kept_fraction"
    return [(e.step, e.value) for e in log.Scalars(tag)] if tag in log.Tags()["scalars"] else []


def si_buffer(steps: int = 30_000) -> dict:
    """What self-imitation keeps on grasp after ``steps`` env steps from goal_targets' seed-0 relabelled BC."""
    with tempfile.TemporaryDirectory() as out:
        config = FinetuneConfig(policy=str(WORKDIR / "grasp-bc+relabel-0"), demos=demos("grasp", WORKDIR), out=out,
                                steps=steps, seed=0, eval_every=steps, eval_episodes=1, self_imitation="hindsight")
        run = FinetuneRun(config, progress=False)
        run.train()
        si = run.model.self_imitation
        table_height = float(run.si_env.unwrapped.height_offset)
    kept = si.windows()
    goals = kept["goal"].numpy()
    quartiles = lambda x: [round(float(q), 1) for q in np.quantile(x.numpy(), [0.25, 0.5, 0.75])]  # noqa: E731
    return {"env_steps": steps, "episodes": si.episodes_finished, "relabelled": si.relabelled, "kept": si.kept,
            "episodes_with_windows": int(len(np.unique(kept["episode"].numpy()))),
            "goals_above_table": round(float((goals[:, 2] > table_height + 0.025).mean()), 2),
            "return_quartiles": quartiles(kept["ret"]), "value_quartiles": quartiles(kept["value"])}


def nav_failures() -> dict:
    """Success and mean length by start-to-goal distance on each seed's evaluation episodes (nav-medium)."""
    task = load_task("nav-medium")
    env = task.make_env()
    planner = MazeExpert.from_env(env)
    env.close()
    bins = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 99)]
    result = {}
    runs = [(f"nav-medium-bc+relabel+ppo+si-{seed}-500000", seed) for seed in range(3)] + [("nav-medium-pretrain-0", 0)]
    for name, seed in runs:
        policy = load_policy(str(WORKDIR / name), task, seed=seed)
        episodes = list(run_episodes(task, policy, EPISODES, seed=10_000 + 1000 * seed, n_envs=4, states=False))
        cells = np.array([planner.path_length(e.obs["achieved_goal"][:1], e.obs["desired_goal"][:1])[0]
                          for e in episodes]) / planner.scale
        success = np.array([e.success for e in episodes])
        length = np.array([e.length for e in episodes])
        result[name] = {f"{lo}-{hi} cells": {"episodes": int(m.sum()), "success": round(float(success[m].mean()), 2),
                                             "mean_length": round(float(length[m].mean()))}
                        for lo, hi in bins if (m := (cells >= lo) & (cells < hi)).any()}
    return result


class _Sampling:
    """A policy that samples its actions (``deterministic=False``) whatever the caller asks."""

    def __init__(self, policy) -> None:
        self.policy = policy

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return self.policy.predict(obs, state, episode_start, deterministic=False)


def nav_motion() -> dict:
    """Seed 0's nav-medium policies: how the successful and the failed evaluation episodes move."""
    task = load_task("nav-medium")
    env = task.make_env()
    planner = MazeExpert.from_env(env)
    env.close()
    names = ["bc+relabel-0", "bc+relabel+ppo+si-0-500000", "bc+relabel+ppo+si-0-si_horizon=15.0-500000", "pretrain-0"]
    result = {}
    for name in names:
        policy = load_policy(str(WORKDIR / f"nav-medium-{name}"), task, seed=0)
        rows = []
        for e in run_episodes(task, policy, EPISODES, seed=10_000, n_envs=4, states=False):
            reached, goal = e.obs["achieved_goal"], e.obs["desired_goal"][:1]
            speed = np.linalg.norm(e.obs["observation"][:, 2:4], axis=1)
            start, end = (planner.path_length(reached[[i]], goal)[0] for i in (0, -1))
            travelled = np.linalg.norm(np.diff(reached, axis=0), axis=1).sum()
            action = np.linalg.norm(e.actions, axis=1).mean()
            rows.append([e.success, e.length, action, speed.mean(), (speed < 0.2).mean(), travelled / max(start, 1e-6),
                         start / planner.scale, end / planner.scale])
        table = np.array(rows, dtype=float)
        keys = ["length", "action_norm", "speed", "stuck_share", "path_over_shortest", "start_cells", "end_cells"]
        result[name] = {"success": round(float(table[:, 0].mean()), 2)}
        for part, rows_in in (("successes", table[:, 0] > 0), ("failures", table[:, 0] == 0)):
            if rows_in.any():
                means = table[rows_in, 1:].mean(axis=0)
                stats = {k: round(float(v), 2) for k, v in zip(keys, means)}
                result[name][part] = {"episodes": int(rows_in.sum())} | stats
        # The mean-action episodes above drew nothing from the policy's generator: the same draws as a fresh load.
        sampled = run_episodes(task, _Sampling(policy), EPISODES, seed=10_000, n_envs=4, states=False)
        result[name]["success_sampled"] = round(float(np.mean([e.success for e in sampled])), 2)
    return result


def nav_stuck() -> dict:
    """Seed 2's --si-priority advantage policy: where and how its failed evaluation episodes end."""
    task = load_task("nav-medium")
    policy = load_policy(str(WORKDIR / PRIORITY_RUN), task, seed=2)
    failures = []
    for e in run_episodes(task, policy, EPISODES, seed=10_000 + 2000, n_envs=4, states=False):
        if e.success:
            continue
        reached = e.obs["achieved_goal"]
        last = reached[-100:]
        failures.append({"episode": e.index, "start": reached[0].round(2).tolist(),
                         "goal": e.obs["desired_goal"][0].round(2).tolist(), "end": reached[-1].round(2).tolist(),
                         "moved_last_100": round(float(np.linalg.norm(last.max(0) - last.min(0))), 2),
                         "action_norm_last_100": round(float(np.linalg.norm(e.actions[-100:], axis=1).mean()), 2)})
    return {"run": PRIORITY_RUN, "episodes": EPISODES, "failures": sorted(failures, key=lambda f: f["episode"])}


def _outcome(episodes: list) -> dict:
    """Success rate and mean length of some evaluation episodes."""
    return {"success": round(float(np.mean([e.success for e in episodes])), 2),
            "mean_length": round(float(np.mean([e.length for e in episodes])))}


class _HeldNoise:
    """A policy whose mean action gets Gaussian noise of std ``scale``, redrawn every ``hold`` steps of an episode."""

    def __init__(self, policy, scale: float, hold: int, seed: int) -> None:
        self.policy, self.scale, self.hold = policy, scale, hold
        self.rng = np.random.default_rng(seed)
        self.noise: np.ndarray | None = None
        self.step = 0

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        actions, state = self.policy.predict(obs, state, episode_start, deterministic=True)
        if episode_start is not None and episode_start.any():
            self.step = 0
        if self.step % self.hold == 0:
            self.noise = self.rng.normal(0.0, self.scale, np.shape(actions))
        self.step += 1
        return np.clip(actions + self.noise, -1.0, 1.0), state


def nav_noise() -> dict:
    """Seed 2's --si-priority advantage policy with noise on its mean action, redrawn every step or held."""
    task = load_task("nav-medium")
    policy = load_policy(str(WORKDIR / PRIORITY_RUN), task, seed=2)
    result: dict = {"run": PRIORITY_RUN, "episodes": EPISODES}
    for scale, hold in ((0.0, 1), (0.3, 1), (0.3, 25), (0.6, 1), (0.6, 25)):
        noisy = _HeldNoise(policy, scale, hold, seed=0)
        episodes = list(run_episodes(task, noisy, EPISODES, seed=10_000 + 2000, n_envs=1, states=False))
        result[f"std {scale}, held {hold}"] = _outcome(episodes)
    return result


class _Waypoints:
    """A policy whose desired goal is replaced by the cell ``hops`` cells ahead on the shortest path (planner's)."""

    def __init__(self, policy, planner: MazeExpert, hops: int) -> None:
        self.policy, self.planner, self.hops = policy, planner, hops

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        goal = np.atleast_2d(obs["desired_goal"])
        g_cell = self.planner.cell_index(goal)
        cell = self.planner.cell_index(np.atleast_2d(obs["observation"])[:, :2])
        for _ in range(self.hops):
            cell = self.planner.hop[g_cell, cell]
        waypoint = np.where((cell == g_cell)[:, None], goal, self.planner.centers[cell])
        routed = dict(obs, desired_goal=waypoint.reshape(np.shape(obs["desired_goal"])).astype(goal.dtype))
        return self.policy.predict(routed, state, episode_start, deterministic)


def nav_waypoints() -> dict:
    """Seed 2's --si-priority advantage policy, routed by the planner's waypoints instead of the far goal."""
    task = load_task("nav-medium")
    env = task.make_env()
    planner = MazeExpert.from_env(env)
    env.close()
    result: dict = {"run": PRIORITY_RUN, "episodes": EPISODES}
    for hops in (1, 2, 4):
        policy = _Waypoints(load_policy(str(WORKDIR / PRIORITY_RUN), task, seed=2), planner, hops)
        episodes = list(run_episodes(task, policy, EPISODES, seed=10_000 + 2000, n_envs=4, states=False))
        result[f"{hops} cells ahead"] = _outcome(episodes)
    return result


class _GraphRouting:
    """A policy routed over a graph of the points earlier rollouts reached (no map): see ``nav_graph``."""

    def __init__(self, policy, paths: list[np.ndarray], ahead: int, every: int = 5, link: float = 0.25) -> None:
        self.policy, self.ahead = policy, ahead
        nodes = [p[::every] for p in paths]
        self.points = np.concatenate(nodes)
        self.edges: list[list[tuple[int, float]]] = [[] for _ in range(len(self.points))]
        start = 0
        for p in nodes:  # along each rollout, both ways (a point in a maze can go back the way it came)
            for i in range(start, start + len(p) - 1):
                self.edges[i].append((i + 1, float(every)))
                self.edges[i + 1].append((i, float(every)))
            start += len(p)
        for i, point in enumerate(self.points):  # between rollouts: nodes closer than ``link``
            d = np.linalg.norm(self.points - point, axis=1)
            for j in np.flatnonzero((d < link) & (np.arange(len(d)) != i)):
                self.edges[i].append((int(j), float(d[j]) / 0.05))  # about 0.05 per step
        self.goal: list[tuple[np.ndarray, np.ndarray | None] | None] = []
        """Per env: its goal, and each node's next node toward the goal's nearest node (None: no node near it)."""

    def _toward(self, goal_node: int) -> np.ndarray:
        """Each node's next node on its shortest path to ``goal_node`` (Dijkstra from the goal; edges go both ways)."""
        dist = np.full(len(self.points), np.inf)
        nxt = np.arange(len(self.points))
        dist[goal_node] = 0.0
        heap = [(0.0, goal_node)]
        while heap:
            d, i = heapq.heappop(heap)
            if d > dist[i]:
                continue
            for j, w in self.edges[i]:
                if d + w < dist[j]:
                    dist[j], nxt[j] = d + w, i
                    heapq.heappush(heap, (d + w, j))
        return nxt

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        goals = np.atleast_2d(obs["desired_goal"])
        positions = np.atleast_2d(obs["observation"])[:, :2]
        if len(self.goal) != len(goals):
            self.goal = [None] * len(goals)
        routed_goals = goals.copy()
        for k, (goal, position) in enumerate(zip(goals, positions)):
            known = self.goal[k]
            if known is None or not np.array_equal(known[0], goal) or (episode_start is not None and episode_start[k]):
                near = np.linalg.norm(self.points - goal, axis=1)
                self.goal[k] = (goal.copy(), self._toward(int(near.argmin())) if near.min() < 0.5 else None)
            toward = self.goal[k][1]
            if toward is None or np.linalg.norm(goal - position) < 1.0:
                continue
            node = int(np.linalg.norm(self.points - position, axis=1).argmin())
            for _ in range(self.ahead):
                node = int(toward[node])
            routed_goals[k] = self.points[node]
        routed = dict(obs, desired_goal=routed_goals.reshape(np.shape(obs["desired_goal"])).astype(goals.dtype))
        return self.policy.predict(routed, state, episode_start, deterministic)


def nav_graph() -> dict:
    """Seed 2's --si-priority advantage policy, routed over a graph of its own rollouts' reached points."""
    task = load_task("nav-medium")
    policy = load_policy(str(WORKDIR / PRIORITY_RUN), task, seed=2)
    paths = [e.obs["achieved_goal"] for e in run_episodes(task, policy, 100, seed=70_000, n_envs=4, states=False)]
    result: dict = {"run": PRIORITY_RUN, "episodes": EPISODES, "rollouts": len(paths)}
    for ahead in (4, 8, 12, 16):
        routed = _GraphRouting(load_policy(str(WORKDIR / PRIORITY_RUN), task, seed=2), paths, ahead)
        episodes = list(run_episodes(task, routed, EPISODES, seed=10_000 + 2000, n_envs=4, states=False))
        result[f"{ahead} nodes ahead"] = _outcome(episodes) | {"nodes": len(routed.points)}
    return result


ROUTED_RUN = "nav-medium-bc+relabel+ppo+si-{seed}-si_horizon=15.0-500000"
"""The runs of goal_targets' bc+relabel+ppo+si+route row (--ft si_horizon=15): they saved reached_paths.npz."""


ROUTED_LARGE_RUN = "nav-large-bc+relabel+ppo+si-{seed}-1000000"
"""The nav-large runs of the routed row (default settings, 1M env steps)."""


def _routed_runs(settings: list[tuple[int, float]], task_name: str = "nav-medium", runs: str = ROUTED_RUN) -> dict:
    """Success of the routed row's three runs for each (route ahead, route sight); (0, 0): unrouted. On 50
    episodes per seed that the benchmark does not use."""
    task = load_task(task_name)
    env = task.make_env()
    result: dict = {"runs": runs, "episodes": EPISODES, "reset_seeds": "20_000 + 1000 x seed + i"}
    for ahead, sight in settings:
        per_seed = []
        for seed in range(3):
            run = WORKDIR / runs.format(seed=seed)
            policy = load_policy(str(run), task, seed=seed)
            if ahead:
                policy = routed_policy(policy, run, task, env, ahead, sight)
            episodes = run_episodes(task, policy, EPISODES, seed=20_000 + 1000 * seed, n_envs=4, states=False)
            per_seed.append(_outcome(list(episodes)))
        name = "unrouted" if not ahead else f"{ahead} steps ahead" + (f", sight {sight}" if sight else "")
        result[name] = {
            "success per seed": [o["success"] for o in per_seed],
            "pooled": round(float(np.mean([o["success"] for o in per_seed])), 3),
            "mean_length": round(float(np.mean([o["mean_length"] for o in per_seed])))}
    env.close()
    return result


def route_ahead() -> dict:
    """Routed by waypoint distance (env steps) alone, no sight check: how the first default (40) was checked."""
    return _routed_runs([(0, 0.0), (20, 0.0), (40, 0.0), (60, 0.0), (80, 0.0)])


def route_sight() -> dict:
    """Routed with the sight check (aim through the route's first bend), around 40 steps and 0.45."""
    return _routed_runs([(40, 0.45), (60, 0.45), (40, 0.3), (40, 0.7)])


def route_sight_large() -> dict:
    """The same check on nav-large's routed runs, against the default (40 steps ahead, no sight check)."""
    return _routed_runs([(0, 0.0), (40, 0.0), (40, 0.45), (60, 0.45), (20, 0.0)], "nav-large", ROUTED_LARGE_RUN)


PARTS = {
    "coverage": lambda: {str(k): {n: round(float(v), 2) for n, v in s.items()} for k, s in coverage().items()},
    "bc_coverage": bc_coverage,
    "idm_correlation": lambda: {t: idm_correlation(t) for t in ("nav-medium", "grasp")},
    "si_kept": si_kept,
    "si_buffer": si_buffer,
    "nav_failures": nav_failures,
    "nav_motion": nav_motion,
    "nav_stuck": nav_stuck,
    "nav_noise": nav_noise,
    "nav_waypoints": nav_waypoints,
    "nav_graph": nav_graph,
    "route_ahead": route_ahead,
    "route_sight": route_sight,
    "route_sight_large": route_sight_large,
}


def main() -> None:
    """Measure them (or ``--only`` some), write the JSON, print it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = RESULTS / "goal_diagnostics.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    result |= {name: PARTS[name]() for name in args.only}
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
