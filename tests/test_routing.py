"""Routing over reached goals: the paths finetune records, the graph's waypoints, `evaluate --route`."""

import json

import h5py
import numpy as np

from lam_robot.config import FinetuneConfig
from lam_robot.policy.routing import (
    PATHS_FILE,
    ExperienceGraph,
    ReachedPaths,
    RoutedPolicy,
    paths_in_files,
    routed_policy,
    same_place_radius,
)
from lam_robot.tasks import load_task
from lam_robot.train.finetune import FinetuneRun
from lam_robot.train.route_training import TrainingRouter, WaypointGoals
from tests.conftest import assert_clean_error, run_cli

TINY = dict(n_envs=2, n_steps=64, batch_size=32, n_epochs=1, eval_episodes=1, critic_warmup=0)


class GoalRecorder:
    """A user's goal-conditioned policy: remembers the goals it was given, pushes nowhere."""

    def __init__(self) -> None:
        self.goals: list[np.ndarray] = []

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        self.goals.append(np.array(obs["desired_goal"]))
        return np.zeros((len(obs["desired_goal"]), 2), np.float32), state


def maze_same_place():
    """Two points are one place where nav-umaze's own compute_reward says the goal is reached (0.45 apart)."""
    env = load_task("nav-umaze").make_env()
    reward = env.unwrapped.compute_reward

    def same_place(a, b):
        return reward(a, b, None) >= reward(a[:1], a[:1], None)[0]

    return same_place


def line(start, end, spacing=0.25):
    n = int(round(np.linalg.norm(np.subtract(end, start)) / spacing))
    return np.linspace(start, end, n + 1).astype(np.float32)


def test_routes_go_round_the_gap_the_paths_never_crossed():
    # Two paths along y = 0 and y = 2 (2.0 apart, never linked), joined only by a third at x = 3.
    bottom, right, top = line((0, 0), (3, 0)), line((3, 0), (3, 2)), line((3, 2), (0, 2))
    # Recorded every 5 steps: 0.25 apart, so the paths move 0.05 per step.
    graph = ExperienceGraph([bottom, right, top], maze_same_place(), every=5)
    inner = GoalRecorder()
    routed = RoutedPolicy(inner, graph, ("achieved_goal", "desired_goal"), ahead=15)
    far, near = np.array([0.0, 2.0], np.float32), np.array([2.4, 2.0], np.float32)
    obs = {"achieved_goal": np.array([[0.0, 0.0], [3.0, 1.8]], np.float32),
           "desired_goal": np.stack([far, near]), "observation": np.zeros((2, 4), np.float32)}
    routed.predict(obs)
    given = inner.goals[-1]
    # Env 0: the goal lies 2.0 straight up but about 150 steps round; it is sent 15 steps along the bottom path.
    np.testing.assert_allclose(given[0], [0.75, 0.0], atol=1e-5)
    # Env 1: its goal is 12 steps away (0.35 across the corner at 0.05 per step, then 5 along the top): no waypoint.
    np.testing.assert_array_equal(given[1], near)
    # Further on, env 0 is sent up the right-hand path, and at the end given its own goal.
    obs["achieved_goal"][0] = [3.0, 0.3]
    routed.predict(obs)
    np.testing.assert_allclose(inner.goals[-1][0], [3.0, 1.0], atol=1e-5)
    obs["achieved_goal"][0] = [0.6, 2.0]
    routed.predict(obs)
    np.testing.assert_array_equal(inner.goals[-1][0], far)


def test_with_sight_the_policy_aims_through_the_corner_the_route_goes_round():
    bottom, right, top = line((0, 0), (3, 0)), line((3, 0), (3, 2)), line((3, 2), (0, 2))
    same_place = maze_same_place()
    graph = ExperienceGraph([bottom, right, top], same_place, every=5)
    radius = same_place_radius(same_place, graph.points[0])
    assert abs(radius - 0.45) < 1e-6  # the maze's own success distance, found through compute_reward
    obs = {"achieved_goal": np.array([[2.0, 0.0]], np.float32), "desired_goal": np.array([[0.0, 2.0]], np.float32),
           "observation": np.zeros((1, 4), np.float32)}
    blind, seeing = GoalRecorder(), GoalRecorder()
    RoutedPolicy(blind, graph, ("achieved_goal", "desired_goal"), ahead=60).predict(obs)
    RoutedPolicy(seeing, graph, ("achieved_goal", "desired_goal"), ahead=60, straight=0.45 * radius).predict(obs)
    # 60 steps along (the corners cut by same-place links) is (2.5, 2) on the top path, across the corner at (3, 0).
    # With sight: aim through the first point round the corner, (3, 0.25), as far off as (2.5, 2).
    np.testing.assert_allclose(blind.goals[-1][0], [2.5, 2.0], atol=1e-5)
    aim = seeing.goals[-1][0] - [2.0, 0.0]
    np.testing.assert_allclose(aim / np.linalg.norm(aim), np.array([1.0, 0.25]) / np.hypot(1.0, 0.25), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(aim), np.hypot(0.5, 2.0), atol=1e-5)
    # Round the corner the path runs straight up to (3, 1.75), then bends left: aim up through it, as far off
    # as the waypoint 60 steps along.
    obs["achieved_goal"][0] = [3.0, 0.1]
    RoutedPolicy(seeing, graph, ("achieved_goal", "desired_goal"), ahead=60, straight=0.45 * radius).predict(obs)
    RoutedPolicy(blind, graph, ("achieved_goal", "desired_goal"), ahead=60).predict(obs)
    aim = seeing.goals[-1][0] - [3.0, 0.1]
    np.testing.assert_allclose(aim / np.linalg.norm(aim), [0.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(aim), np.linalg.norm(blind.goals[-1][0] - [3.0, 0.1]), atol=1e-5)
    # Near the goal with the way there straight: the goal itself.
    obs["achieved_goal"][0] = [0.8, 2.0]
    RoutedPolicy(seeing, graph, ("achieved_goal", "desired_goal"), ahead=60, straight=0.45 * radius).predict(obs)
    np.testing.assert_array_equal(seeing.goals[-1][0], [0.0, 2.0])


def test_finetune_records_the_demos_and_its_episodes_paths_and_a_resume_keeps_them(bc_run, umaze_demos, tmp_path):
    out = tmp_path / "ft"
    config = FinetuneConfig(policy=bc_run, out=out, steps=640, demos=umaze_demos, **TINY)
    FinetuneRun(config, progress=False).train()
    saved = ReachedPaths.load(out / PATHS_FILE)
    with h5py.File(umaze_demos, "r") as f:
        demos = [f["data"][name]["obs"]["achieved_goal"][()] for name in f["data"]]
    assert len(saved.fixed) == len(demos) == 12
    expected = sorted(tuple(map(tuple, saved.thin(d))) for d in demos)
    assert sorted(tuple(map(tuple, p)) for p in saved.fixed) == expected
    # 320 steps per env finish at least one 300-step episode in each; a path moves a few steps per point.
    assert len(saved.latest) >= 2
    for path in saved.latest:
        assert len(path) >= 2 and np.linalg.norm(np.diff(path, axis=0), axis=1).max() < 1.5
    before = [p.copy() for p in saved.latest]
    FinetuneRun(FinetuneConfig(policy=bc_run, out=out, steps=1280, demos=umaze_demos, **TINY), progress=False).train()
    resumed = ReachedPaths.load(out / PATHS_FILE)
    assert len(resumed.fixed) == 12 and len(resumed.latest) > len(before)
    for old, kept in zip(before, resumed.latest):
        np.testing.assert_array_equal(old, kept)


def test_evaluate_route_runs_a_finetuned_policy_and_refuses_bad_input(bc_run, umaze_demos, tmp_path):
    out = tmp_path / "ft"
    FinetuneRun(FinetuneConfig(policy=bc_run, out=out, steps=384, demos=umaze_demos, **TINY), progress=False).train()
    result = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(out), "--route", "--route-ahead", "4",
                     "--episodes", "2", "--json", str(tmp_path / "routed.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "routed.json").read_text())["episodes"] == 2
    no_paths = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(bc_run), "--route", "--episodes", "1")
    assert_clean_error(no_paths, f"has no {PATHS_FILE}")
    # A user's spec of the same maze with its dense reward: compute_reward calls no two points one place.
    dense = tmp_path / "umaze-dense.toml"
    dense.write_text('name = "my-dense-umaze"\nenv_id = "PointMaze_UMaze-v3"\nhorizon = 300\n'
                     'policy_obs_keys = ["observation", "desired_goal"]\n'
                     'goal_keys = ["achieved_goal", "desired_goal"]\nsuccess_key = "success"\n'
                     'expert = "maze-waypoints"\n[env_kwargs]\ncontinuing_task = false\nreward_type = "dense"\n')
    dense_route = run_cli("evaluate", "--task", str(dense), "--policy", str(out), "--route", "--episodes", "1")
    assert_clean_error(dense_route, "my-dense-umaze's never does off the goal itself")
    (out / PATHS_FILE).write_bytes(b"not numpy")
    corrupt = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(out), "--route", "--episodes", "1")
    assert_clean_error(corrupt, "is not a reached-paths file")
    ahead = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(out), "--route", "--route-ahead", "0")
    assert_clean_error(ahead, "--route-ahead must be positive")
    sight = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(out), "--route", "--route-sight", "-1")
    assert_clean_error(sight, "--route-sight must be non-negative")
    workers = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(out), "--route", "--workers", "2")
    assert_clean_error(workers, "--route runs the episodes in this process")


def write_user_paths(path, paths, keys=("observation", "desired_goal", "achieved_goal")):
    """Another program's nav-umaze episodes in robomimic's layout, written with h5py alone: obs/ only (no
    next_obs, no task spec), the ball's positions as ``paths``."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "PointMaze_UMaze-v3", "type": 2, "env_kwargs": {}})
        for i, points in enumerate(paths):
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = len(points)
            values = {"observation": np.c_[points, np.zeros_like(points)], "desired_goal": np.repeat(points[-1:],
                      len(points), 0), "achieved_goal": points}
            for key in keys:
                demo.create_dataset(f"obs/{key}", data=values[key].astype(np.float32))
            demo.create_dataset("actions", data=np.zeros((len(points), 2), np.float32))
            demo.create_dataset("rewards", data=np.zeros(len(points), np.float32))
            demo.create_dataset("dones", data=np.zeros(len(points), np.int64))
        data.attrs["total"] = sum(len(p) for p in paths)


def test_route_over_a_users_file_routes_a_bc_policy_and_refuses_bad_input(bc_run, umaze_demos, tmp_path):
    # The U of nav-umaze (a 1-unit grid centred on 0): along its bottom, up its right side, back along its top.
    bottom, right, top = line((-1, -1), (1, -1), 0.02), line((1, -1), (1, 1), 0.02), line((1, 1), (-1, 1), 0.02)
    user = tmp_path / "user.hdf5"
    write_user_paths(user, [np.r_[bottom, right], top])
    task = load_task("nav-umaze")
    paths = paths_in_files([user], task)
    assert len(paths.fixed) == 2 and not paths.latest
    np.testing.assert_array_equal(paths.fixed[1], top[sorted({*range(0, len(top), 5), len(top) - 1})])
    # From the bottom-left corner to the top-left one, the policy is sent along the bottom first, not up the wall.
    inner, env = GoalRecorder(), task.make_env()
    routed = routed_policy(inner, paths, task, env, ahead=20)
    env.close()
    routed.predict({"achieved_goal": np.array([[-1.0, -1.0]], np.float32),
                    "desired_goal": np.array([[-1.0, 1.0]], np.float32), "observation": np.zeros((1, 4), np.float32)})
    x, y = inner.goals[-1][0]  # about 20 steps (0.4) along the bottom
    assert y == -1.0 and -0.7 < x < -0.4
    # A BC checkpoint has no reached paths of its own; routed over the user's file it runs.
    result = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(bc_run), "--route-over", str(user),
                     "--episodes", "2", "--json", str(tmp_path / "routed.json"))
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "routed.json").read_text())["episodes"] == 2
    # Recorded routed: the file keeps the env's real goals; only the actions follow the waypoints.
    for name, route in (("plain", []), ("routed", ["--route-over", str(user)])):
        result = run_cli("record", "--task", "nav-umaze", "--source", str(bc_run), "--episodes", "2", "--out",
                         str(tmp_path / f"{name}.hdf5"), *route)
        assert result.returncode == 0, result.stderr
    with h5py.File(tmp_path / "plain.hdf5") as plain, h5py.File(tmp_path / "routed.hdf5") as routed_file:
        for demo in ("demo_0", "demo_1"):
            goals = routed_file[f"data/{demo}/obs/desired_goal"][()]
            np.testing.assert_array_equal(goals[0], plain[f"data/{demo}/obs/desired_goal"][0])  # the same episode
            assert np.ptp(goals, axis=0).max() == 0.0  # its one real goal throughout, no waypoint stored
        assert any(not np.array_equal(plain[f"data/{d}/actions"][()], routed_file[f"data/{d}/actions"][()])
                   for d in ("demo_0", "demo_1"))
    teleop = run_cli("record", "--task", "nav-umaze", "--source", "keyboard", "--route", "--out", str(tmp_path / "k"))
    assert_clean_error(teleop, "--route do not apply to teleoperation")
    record_workers = run_cli("record", "--task", "nav-umaze", "--source", str(bc_run), "--route", "--workers", "2",
                             "--out", str(tmp_path / "w.hdf5"))
    assert_clean_error(record_workers, "--route runs the episodes in this process")
    lacking = tmp_path / "no-achieved.hdf5"
    write_user_paths(lacking, [top], keys=("observation", "desired_goal"))
    no_goal = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(bc_run), "--route-over", str(lacking))
    assert_clean_error(no_goal, "episode demo_0 has no obs/achieved_goal to route over")
    missing = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(bc_run), "--route-over", "nowhere.hdf5")
    assert_clean_error(missing, "no such file")
    other = run_cli("evaluate", "--task", "nav-medium", "--policy", str(bc_run), "--route-over", str(umaze_demos))
    assert_clean_error(other, "holds episodes of task 'nav-umaze', not 'nav-medium'")
    workers = run_cli("evaluate", "--task", "nav-umaze", "--policy", str(bc_run), "--route-over", str(user),
                      "--workers", "2")
    assert_clean_error(workers, "--route runs the episodes in this process")


def test_route_training_aims_routed_episodes_at_waypoints_and_finetune_trains_with_it(bc_run, umaze_demos, tmp_path):
    task = load_task("nav-umaze")
    router = TrainingRouter(task, ahead=20)
    paths = ReachedPaths()  # the U: along the top, down the right side, back along the bottom
    paths.add(np.r_[line((-1, 1), (1, 1), 0.02), line((1, 1), (1, -1), 0.02), line((1, -1), (-1, -1), 0.02)])
    router.rebuild(paths)
    far = {"reset_cell": [1, 1], "goal_cell": [3, 1]}  # top-left to bottom-left: the wall between, the way round
    for share, routed in ((1.0, True), (0.0, False)):
        env = WaypointGoals(task.make_env(), router, share, seed=0)
        obs, _ = env.reset(seed=0, options=far)
        real = env.unwrapped.goal
        if routed:  # about 20 steps (0.4) along the top, towards the right
            assert abs(obs["desired_goal"][1] - 1.0) < 1e-6 and -0.9 < obs["desired_goal"][0] < -0.4
        else:
            np.testing.assert_array_equal(obs["desired_goal"], real)
        obs, reward, *_ = env.step(np.zeros(2, np.float32))
        assert reward == 0.0 and np.array_equal(env.unwrapped.goal, real)  # the env judges the real goal
        env.close()
    router.close()
    config = FinetuneConfig(policy=bc_run, out=tmp_path / "ft", steps=640, demos=umaze_demos, route_training=1.0,
                            self_imitation="hindsight", **TINY)
    run = FinetuneRun(config, progress=False)
    run.train()
    # 5 rollouts, all before the first rebuild after the start: the graph is the one built over the demos' paths.
    demo_points = sum(len(p) for p in ReachedPaths.load(tmp_path / "ft" / PATHS_FILE).fixed)
    assert run.router is not None and len(run.router.routed.graph.points) == demo_points
    bad = run_cli("finetune", "--policy", str(bc_run), "--out", str(tmp_path / "x"), "--route-training", "0.5",
                  "--vec-env", "subproc")
    assert_clean_error(bad, "--route-training shares one graph among PPO's envs in this process")
