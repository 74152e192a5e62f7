"""Task variants: specs whose [variant] table changes the simulated world, and specs without an expert."""

from __future__ import annotations

import json
import os
import tomllib

import h5py
import mujoco
import numpy as np
import pytest

from lam_robot.errors import LamRobotError
from lam_robot.experts import make_expert
from lam_robot.tasks import TaskSpec, builtin_spec_dir, load_task
from lam_robot.variants import describe_variant, maze_text
from tests.conftest import assert_clean_error, run_cli

SHIPPED = ["grasp-heavy", "grasp-table-moved", "nav-spiral", "nav-rooms"]


def _model_ids(model: mujoco.MjModel) -> tuple[int, int, int]:
    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "object0")
    geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "object0")
    table = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "table0")
    return body, geom, table


def _step(env, steps: int = 5) -> None:
    env.reset(seed=0)
    for _ in range(steps):
        env.step(env.action_space.sample())


def test_grasp_heavy_compiles_a_heavier_larger_cube():
    task = load_task("grasp-heavy")
    env = task.make_env()
    try:
        model = env.unwrapped.model
        body, geom, _ = _model_ids(model)
        assert model.body_mass[body] == pytest.approx(8.0)
        np.testing.assert_allclose(model.geom_size[geom], [0.035] * 3)
        # The bigger cube rests 1 cm higher, and table-top goals follow it.
        assert env.unwrapped.height_offset == pytest.approx(0.435, abs=2e-3)
        _step(env)
    finally:
        env.close()


def test_grasp_table_moved_compiles_the_moved_table_and_gripper_start():
    base_env, env = load_task("grasp").make_env(), load_task("grasp-table-moved").make_env()
    try:
        base, moved = base_env.unwrapped, env.unwrapped
        table = _model_ids(moved.model)[2]
        table_geom = moved.model.body_geomadr[table]
        np.testing.assert_allclose(moved.model.body_pos[table], [1.35, 0.85, 0.175])
        np.testing.assert_allclose(moved.model.geom_size[table_geom], [0.25, 0.35, 0.175])
        np.testing.assert_allclose(moved.initial_gripper_xpos - base.initial_gripper_xpos, [0.05, 0.1, -0.05], atol=2e-3)
        assert moved.height_offset - base.height_offset == pytest.approx(-0.05, abs=2e-3)
        obs, _ = env.reset(seed=3)
        assert obs["observation"][5] == pytest.approx(moved.height_offset, abs=2e-3)  # the cube is on the table
        _step(env)
    finally:
        base_env.close()
        env.close()


def test_a_grasp_variant_renders_its_own_model():
    env = load_task("grasp-table-moved").make_env(render_mode="rgb_array")
    try:
        env.reset(seed=0)
        frame = env.render()
        assert frame.shape[2] == 3 and frame.std() > 0
        assert env.unwrapped.mujoco_renderer.model is env.unwrapped.model
    finally:
        env.close()


def test_friction_and_a_push_env_are_edited_too(tmp_path):
    path = tmp_path / "push.toml"
    path.write_text(
        'name = "push-slippery"\nenv_id = "FetchPush-v4"\nhorizon = 10\npolicy_obs_keys = ["observation"]\n'
        'success_key = "is_success"\n[variant]\nobject_friction = 0.3\n'
    )
    env = load_task(path).make_env()
    try:
        geom = _model_ids(env.unwrapped.model)[1]
        np.testing.assert_allclose(env.unwrapped.model.geom_friction[geom], [0.3, 0.005, 0.0001])
        _step(env)
    finally:
        env.close()


@pytest.mark.parametrize("name", ["nav-spiral", "nav-rooms"])
def test_maze_variant_builds_the_toml_rows(name):
    rows = tomllib.loads((builtin_spec_dir() / f"{name}.toml").read_text())["variant"]["maze"]
    env = load_task(name).make_env()
    try:
        assert maze_text(env.unwrapped.maze.maze_map) == [r.replace("g", "G").replace("r", "R") for r in rows]
        _step(env)
    finally:
        env.close()


@pytest.mark.parametrize("name", SHIPPED)
def test_the_expert_solves_shipped_variants(name):
    task = load_task(name)
    env = task.make_env()
    try:
        expert = make_expert(task.expert, env)
        for seed in range(2):
            obs, _ = env.reset(seed=seed)
            for _ in range(task.horizon):
                obs, _, terminated, truncated, info = env.step(expert.predict(obs)[0])
                if terminated or truncated:
                    break
            assert task.is_success(info), (name, seed)
    finally:
        env.close()


def test_variant_specs_round_trip_through_json():
    for name in SHIPPED:
        task = load_task(name)
        assert TaskSpec.from_dict(json.loads(task.to_json())) == task
    assert "variant" not in load_task("grasp").to_dict()  # unvaried specs are stored as before


def test_a_demo_file_recorded_in_a_variant_carries_the_variant(tmp_path):
    from lam_robot.data.dataset import DemoFile
    from lam_robot.recording import record_expert

    task = load_task("nav-rooms")
    record_expert(task, tmp_path / "rooms.hdf5", 1)
    found = DemoFile(tmp_path / "rooms.hdf5").task
    assert found == task and found.world.maze == task.world.maze


def test_tasks_describe_what_a_variant_changes():
    assert describe_variant(load_task("grasp-heavy").world) == "variant of grasp: object mass 4x, size 1.4x"
    assert "table moved (+5, +10, -5) cm" in describe_variant(load_task("grasp-table-moved").world)
    assert describe_variant(load_task("nav-spiral").world) == "variant of nav-medium: its own 9x9 maze map"
    assert describe_variant(load_task("grasp").world) == ""


NO_EXPERT_SPEC = """name = "my-open"
env_id = "PointMaze_Open-v3"
horizon = 100
policy_obs_keys = ["observation", "desired_goal"]
success_key = "success"
[env_kwargs]
continuing_task = false
"""

USER_EXPERT = """import numpy as np


class GoStraight:
    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.clip(10 * (obs["desired_goal"] - obs["observation"][..., :2]) - obs["observation"][..., 2:], -1, 1), state
"""


def test_a_spec_without_an_expert_records_with_a_py_expert(tmp_path, monkeypatch):
    (tmp_path / "my.toml").write_text(NO_EXPERT_SPEC)
    (tmp_path / "my_variant_expert.py").write_text(USER_EXPERT)
    assert load_task(tmp_path / "my.toml").expert == ""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "demos.hdf5"
    result = run_cli("record", "--task", str(tmp_path / "my.toml"), "--source", "py:my_variant_expert:GoStraight",
                     "--episodes", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "saved 2 episodes" in result.stdout
    with h5py.File(out, "r") as f:
        assert f["data"].attrs["total"] > 0 and len([k for k in f["data"] if k.startswith("demo_")]) == 2


def test_source_expert_on_a_spec_without_one_is_a_clean_error(tmp_path):
    (tmp_path / "my.toml").write_text(NO_EXPERT_SPEC)
    result = run_cli("record", "--task", str(tmp_path / "my.toml"), "--episodes", "1", "--out",
                     str(tmp_path / "d.hdf5"))
    assert_clean_error(result, "task 'my-open': its spec names no built-in expert; pass your own with --source py:")


GRASP_HEAD = 'name = "v"\nenv_id = "FetchPickAndPlace-v4"\nhorizon = 50\npolicy_obs_keys = ["observation"]\n' \
             'success_key = "is_success"\nexpert = "pick-and-place"\n[variant]\n'
MAZE_HEAD = GRASP_HEAD.replace("FetchPickAndPlace-v4", "PointMaze_Medium-v3")


@pytest.mark.parametrize("text, message", [
    (GRASP_HEAD + "object_colour = 1", "[variant] has unknown key(s) object_colour; allowed: base, object_mass"),
    (GRASP_HEAD + "object_mass = -1", "object_mass must be a number in [0.01, 50.0], got -1"),
    (GRASP_HEAD + "table_offset = [0.1, 0.1]", "table_offset must be a list of 3 numbers"),
    (GRASP_HEAD + 'maze = ["####", "#..#", "####"]', "'maze' needs a PointMaze_* env"),
    (MAZE_HEAD + "object_mass = 3.0", "object_mass need a Fetch object env"),
    (MAZE_HEAD + 'maze = ["#####", "#.X.#", "#####"]', "maze row 1 '#.X.#' has unknown cell(s) 'X'; use # or 1"),
    (MAZE_HEAD + 'maze = ["#####", "#..#", "#####"]', "maze row 1 '#..#' has 4 cells, row 0 has 5"),
    (MAZE_HEAD + 'maze = ["#####", "#...#", "#.###"]', "walls all round"),
    (MAZE_HEAD + 'maze = ["#####", "#.#.#", "#####"]', "cannot be reached"),
    (MAZE_HEAD + "maze = 5", "maze must be a list of text rows"),
    (MAZE_HEAD.replace("[variant]", "[env_kwargs]\nmaze_map = [[1]]\n[variant]") + 'maze = ["####", "#..#", "####"]',
     "not both"),
])
def test_malformed_variants_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LamRobotError) as info:
        load_task(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_malformed_variant_is_one_clean_line_on_the_command_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(MAZE_HEAD + 'maze = ["#####", "#.X.#", "#####"]')
    result = run_cli("evaluate", "--task", str(path), "--episodes", "1")
    assert_clean_error(result, "task 'v': [variant] maze row 1 '#.X.#' has unknown cell(s) 'X'")
