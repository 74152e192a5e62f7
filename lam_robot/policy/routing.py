"""Routing a goal-conditioned policy over the goals it has reached: no map, only its own experience.

A fine-tuned maze policy reaches goals a few cells away but stalls against the wall between it and a far
goal (benchmarks/goal_diagnostics.py, nav_stuck). ``finetune`` on a goal task therefore keeps the achieved-goal
paths of its latest training episodes, and of the demos, in ``RUN/reached_paths.npz`` (``ReachedPaths``).
``RoutedPolicy`` builds a graph over those points (``ExperienceGraph``): a node every 5 steps, edges along
each path both ways, and edges to the nearest nodes that count as the same place by the env's own
``compute_reward``; every edge is as long as the env steps the paths take to cover it. While the goal is more
than ``ahead`` env steps away on that graph, the policy is given the node that many steps along the shortest
path instead of its goal (search on the replay buffer, Eysenbach et al. 2019, with the paths' own step counts
for distances). The env still judges the real goal. With ``sight``, where the path bends within those steps,
the policy aims through the bend instead (``RoutedPolicy``): on nav-medium 96.0% instead of 89.3%, on nav-large
68.7% instead of 83.3%, so it is off by default. (Aiming at the last node before the bend itself gave 94.0% and
76.7%: nav-large's policies do worse with a near waypoint.)

A first version counted hops, every same-place pair linked: on nav-medium each node had about 550 links, a hop
crossed up to 0.45, and the routed policy did no better than the unrouted one (80% and 80% on seeds 1 and 2).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.rollout import Obs, Policy

if TYPE_CHECKING:
    import gymnasium as gym

    from lam_robot.config import RouteOptions
    from lam_robot.tasks import TaskSpec

PATHS_FILE = "reached_paths.npz"
"""In a fine-tuning run's directory: the achieved-goal paths its routing graph is built from."""


class ReachedPaths:
    """Achieved-goal paths, every ``every``-th step (and the last): the demos' and the latest ``keep``
    training episodes'."""

    def __init__(self, keep: int = 200, every: int = 5) -> None:
        self.every = every
        self.fixed: list[np.ndarray] = []
        self.latest: deque[np.ndarray] = deque(maxlen=keep)

    def thin(self, achieved: np.ndarray) -> np.ndarray:
        """One episode's achieved goals at every ``every``-th step and its last."""
        achieved = np.asarray(achieved, dtype=np.float32)
        keep = np.unique(np.r_[np.arange(0, len(achieved), self.every), len(achieved) - 1])
        return achieved[keep]

    def add(self, achieved: np.ndarray, fixed: bool = False) -> None:
        """An episode's path: kept for good (the demos) or among the latest."""
        (self.fixed.append if fixed else self.latest.append)(self.thin(achieved))

    @property
    def paths(self) -> list[np.ndarray]:
        """The demos' paths, then the latest episodes'."""
        return [*self.fixed, *self.latest]

    def save(self, path: Path) -> None:
        """Write every path to ``path`` (a temporary file first, so a kill leaves the old one whole)."""
        paths = self.paths
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            points=np.concatenate(paths) if paths else np.zeros((0, 0), np.float32),
            lengths=np.array([len(p) for p in paths], np.int64),
            fixed=len(self.fixed),
            every=self.every,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, keep: int = 200) -> ReachedPaths:
        """The paths ``save`` wrote (a resumed run continues them)."""
        try:
            with np.load(path) as f:
                points, lengths, fixed, every = f["points"], f["lengths"], int(f["fixed"]), int(f["every"])
        except (OSError, KeyError, ValueError) as e:
            raise LamRobotError(f"{path} is not a reached-paths file ({e}); re-run finetune to write it") from e
        out = cls(keep, every)
        split = np.split(points, np.cumsum(lengths)[:-1]) if len(lengths) else []
        out.fixed, out.latest = list(split[:fixed]), deque(split[fixed:], maxlen=keep)
        return out


class ExperienceGraph:
    """Nodes: the points of some paths, ``every`` env steps apart. Edges: consecutive points of a path, both ways,
    ``every`` steps long; and from each point to the ``links`` nearest points ``same_place`` says are one place
    with it, as long as the paths' median speed takes to cover the gap. Distances are env steps."""

    def __init__(
        self,
        paths: list[np.ndarray],
        same_place: Callable[[np.ndarray, np.ndarray], np.ndarray],
        every: int,
        links: int = 8,
    ) -> None:
        paths = [p for p in paths if len(p)]
        if not paths:
            raise LamRobotError("no reached paths to route over; fine-tune on a goal task first")
        self.points = np.concatenate(paths)
        edges: list[dict[int, float]] = [{} for _ in range(len(self.points))]
        steps = np.concatenate([np.linalg.norm(np.diff(p, axis=0), axis=1) for p in paths]) / every
        speed = max(float(np.median(steps)) if len(steps) else 0.0, 1e-9)  # goal-space distance per env step
        start = 0
        for p in paths:
            for i in range(start, start + len(p) - 1):
                edges[i][i + 1] = edges[i + 1][i] = float(every)
            start += len(p)
        for i, point in enumerate(self.points):
            near = np.flatnonzero(same_place(self.points, np.broadcast_to(point, self.points.shape)))
            gaps = np.linalg.norm(self.points[near] - point, axis=1)
            for j, gap in zip(near[np.argsort(gaps)[: links + 1]], np.sort(gaps)[: links + 1]):
                if j != i:  # the way between two places counts as the time the paths take to cover it
                    cost = min(edges[i].get(int(j), np.inf), float(gap) / speed)
                    edges[i][int(j)] = edges[int(j)][i] = cost
        self.edges = [(np.fromiter(e.keys(), np.int64), np.fromiter(e.values(), np.float64)) for e in edges]

    def nearest(self, point: np.ndarray) -> int:
        """The node closest to ``point`` (Euclidean, in goal space)."""
        return int(np.linalg.norm(self.points - point, axis=1).argmin())

    def toward(self, target: int) -> tuple[np.ndarray, np.ndarray]:
        """Each node's next node on a shortest path to ``target``, and its env steps to it (inf: no path)."""
        dist = np.full(len(self.points), np.inf)
        nxt = np.arange(len(self.points))
        dist[target] = 0.0
        heap = [(0.0, target)]
        while heap:  # Dijkstra from the target: edges go both ways
            d, i = heapq.heappop(heap)
            if d > dist[i]:
                continue
            nodes, costs = self.edges[i]
            better = d + costs < dist[nodes]
            for j, dj in zip(nodes[better].tolist(), (d + costs[better]).tolist()):
                dist[j], nxt[j] = dj, i
                heapq.heappush(heap, (dj, j))
        return nxt, dist


class RoutedPolicy:
    """A goal-conditioned policy that is given a waypoint on the graph's shortest path to its goal while the goal
    is more than ``ahead`` env steps away, or further than it can see (see the module docstring).

    With ``straight`` (goal-space units; inf: not checked) the path's first ``ahead`` steps must run nearly
    straight from the policy: every node on the way within ``straight`` of the line to the waypoint. Where the
    path bends, the policy aims through the last node before the bend instead, at the waypoint's distance (or
    the goal's, when near): it never aims across the corner the path goes round, and is not slowed down by a
    near waypoint."""

    def __init__(
        self,
        policy: Policy,
        graph: ExperienceGraph,
        goal_keys: tuple[str, str],
        ahead: int = 40,
        straight: float = np.inf,
    ) -> None:
        if ahead < 1:
            raise LamRobotError(f"--route-ahead must be at least 1, got {ahead}")
        self.policy, self.graph, self.ahead, self.straight = policy, graph, ahead, straight
        self.achieved_key, self.desired_key = goal_keys
        self._routes: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
        """Per env: its goal, and the graph's next nodes and env steps toward the goal's nearest node."""

    def waypoint(self, here: np.ndarray, goal: np.ndarray, nxt: np.ndarray, dist: np.ndarray) -> np.ndarray | None:
        """Where to aim from ``here`` on a route to ``goal`` (``toward``'s output); None: at the goal itself."""
        node = self.graph.nearest(here)
        if not np.isfinite(dist[node]):
            return None
        far = dist[node] > self.ahead
        left = (dist[node] - self.ahead if far else 0.0) + 1e-6  # steps summed in floats
        along = [node]
        while dist[along[-1]] > left:
            along.append(int(nxt[along[-1]]))
        points = self.graph.points[along]
        end = points[-1] if far else goal
        for j in range(2, len(along)):
            if _off_line(points[1:j], here, points[j]).max() > self.straight:
                # Aim through the corner, as far off as the end: a near goal slows a policy down.
                toward = points[j - 1] - here
                reach = np.linalg.norm(end - here) / max(float(np.linalg.norm(toward)), 1e-9)
                return here + toward * max(1.0, reach)
        return end if far else None

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """SB3's predict protocol; the desired goal is replaced by a waypoint where the goal is far."""
        goals = np.atleast_2d(obs[self.desired_key])
        reached = np.atleast_2d(obs[self.achieved_key])
        if len(self._routes) != len(goals):
            self._routes = [None] * len(goals)
        routed = goals.copy()
        for k, (goal, here) in enumerate(zip(goals, reached)):
            route = self._routes[k]
            if route is None or not np.array_equal(route[0], goal):
                route = self._routes[k] = (goal.copy(), *self.graph.toward(self.graph.nearest(goal)))
            point = self.waypoint(here, goal, route[1], route[2])
            if point is not None:
                routed[k] = point
        given = dict(obs, **{self.desired_key: routed.reshape(np.shape(obs[self.desired_key])).astype(goals.dtype)})
        return self.policy.predict(given, state, episode_start, deterministic)


def _off_line(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Each point's distance from the segment ``start``-``end`` (any dimension)."""
    seg = end - start
    length2 = float(seg @ seg)
    t = np.clip((points - start) @ seg / length2, 0.0, 1.0) if length2 > 0 else np.zeros(len(points))
    return np.linalg.norm(points - start - t[:, None] * seg, axis=1)


def same_place_radius(same_place: Callable[[np.ndarray, np.ndarray], np.ndarray], point: np.ndarray) -> float:
    """How far from ``point`` (along the first axis) ``same_place`` still holds: the env's success radius.
    inf where it holds at any distance, 0 where not even 1e-6 away (a dense reward: only at the point itself)."""
    point = np.asarray(point, np.float64)[None]
    step = np.zeros_like(point)
    step[0, 0] = 1.0

    def holds(d: float) -> bool:
        return bool(same_place(point, point + d * step)[0])

    lo, hi = 0.0, 1e-6
    if not holds(hi):
        return 0.0
    while holds(hi):
        lo, hi = hi, hi * 2
        if hi > 1e9:
            return np.inf
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo


def paths_in_files(files: Sequence[Path], task: TaskSpec) -> ReachedPaths:
    """The achieved-goal paths of every episode in some demo or play files of ``task`` (``--route-over``)."""
    from lam_robot.data.dataset import DemoFile
    from lam_robot.tasks import require_same_task

    achieved_key = task.require_goals("--route-over")[0]
    paths = ReachedPaths()
    for file in files:
        with DemoFile(file, task=task) as f:
            require_same_task(f.task, task, f"--route-over {file} holds episodes of task", "give that task's files")
            for name in f.demo_names:
                obs = f.demo(name)["obs"]
                if achieved_key not in obs:
                    raise LamRobotError(
                        f"--route-over {file}: episode {name} has no obs/{achieved_key} to route over; "
                        "give files recorded in the goal task"
                    )
                paths.add(obs[achieved_key][()], fixed=True)
    return paths


def routed_policy(
    policy: Policy, paths: Path | ReachedPaths, task: TaskSpec, env: gym.Env, ahead: int = 40, sight: float = 0.0
) -> RoutedPolicy:
    """``policy`` routed over ``paths``, or the reached paths a fine-tuning run saved in the directory ``paths``:
    waypoints ``ahead`` env steps along; with ``sight`` > 0, aimed through the first bend that strays that many
    success radii from a straight line. One-line errors for a task without goal keys or a success radius, or a
    directory without the file."""
    if sight < 0:
        raise LamRobotError(f"--route-sight must be non-negative, got {sight}")
    goal_keys = task.require_goals("--route")
    if not isinstance(paths, ReachedPaths):
        paths = _run_paths(Path(paths))
    graph, radius = experience_graph(paths, task, env)
    straight = sight * radius if sight > 0 else np.inf
    return RoutedPolicy(policy, graph, goal_keys, ahead, straight)


def routed_as(policy: Policy, name: str, task: TaskSpec, options: RouteOptions) -> RoutedPolicy:
    """``policy`` (loaded from ``name``: RUN, policy:RUN or RUN/ppo.zip) routed as ``options`` say (evaluate and
    record): over the --route-over files, or else over the reached paths its fine-tuning run saved."""
    paths: Path | ReachedPaths
    if options.route_over:
        paths = paths_in_files(options.route_over, task)
    else:
        run_dir = Path(name.removeprefix("policy:"))
        paths = run_dir.parent if run_dir.suffix == ".zip" else run_dir
    env = task.make_env()
    try:
        return routed_policy(policy, paths, task, env, options.route_ahead, options.route_sight)
    finally:
        env.close()


def experience_graph(
    paths: ReachedPaths, task: TaskSpec, env: gym.Env, what: str = "--route"
) -> tuple[ExperienceGraph, float]:
    """The graph over ``paths``, with places told apart by ``env``'s own ``compute_reward``, and its success
    radius; a one-line error for a task whose reward has none (dense)."""
    compute_reward = env.unwrapped.compute_reward  # type: ignore[attr-defined]  # a GoalEnv's

    def same_place(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        at = np.asarray(compute_reward(a[:1], a[:1], None), np.float64)  # the reward at the goal itself
        return np.asarray(compute_reward(a, b, None), np.float64) >= at[0]

    graph = ExperienceGraph(paths.paths, same_place, paths.every)
    radius = same_place_radius(same_place, graph.points[0])
    if not 0 < radius < np.inf:  # a dense reward: no two points are one place, so no links and no sight
        raise LamRobotError(
            f"{what} needs a task whose compute_reward marks a goal as reached within some distance; "
            f"{task.name}'s {'never does off the goal itself' if radius == 0 else 'does at any distance'} "
            '(a dense reward?): evaluate it with its sparse reward (env_kwargs reward_type = "sparse")'
        )
    return graph, radius


def _run_paths(run_dir: Path) -> ReachedPaths:
    """The paths a fine-tuning run saved, or a one-line error for a directory without them."""
    path = run_dir / PATHS_FILE
    if not path.is_file():
        raise LamRobotError(
            f"{run_dir} has no {PATHS_FILE}: --route needs a policy fine-tuned on a goal task by this version's "
            "`lam-robot finetune` (it records the paths its episodes reached), or --route-over demo or play files"
        )
    return ReachedPaths.load(path)
