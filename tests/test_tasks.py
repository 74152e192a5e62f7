import json

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lam_robot.errors import LamRobotError
from lam_robot.tasks import TaskSpec, builtin_task_names, load_task
from tests.conftest import run_cli

REQUIRED = {"grasp": "FetchPickAndPlace-v4", "nav-umaze": "PointMaze_UMaze-v3", "nav-medium": "PointMaze_Medium-v3"}


def test_required_tasks_are_built_in():
    for name, env_id in REQUIRED.items():
        assert load_task(name).env_id == env_id
    assert set(REQUIRED) <= set(builtin_task_names())


@pytest.mark.parametrize("name", builtin_task_names())
def test_task_passes_env_checker(name):
    env = load_task(name).make_env()
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@pytest.mark.parametrize("name", builtin_task_names())
def test_task_is_deterministic_for_a_seed(name):
    task = load_task(name)

    def rollout():
        env = task.make_env()
        env.action_space.seed(7)
        obs, _ = env.reset(seed=123)
        trace = [np.concatenate([obs[k] for k in sorted(obs)])]
        for _ in range(50):
            obs, *_ = env.step(env.action_space.sample())
            trace.append(np.concatenate([obs[k] for k in sorted(obs)]))
        env.close()
        return np.array(trace)

    first, second = rollout(), rollout()
    np.testing.assert_array_equal(first, second)
    assert np.abs(first[-1] - first[0]).max() > 0  # the actions really moved something


def test_policy_obs_keys_exist_in_env():
    for name in builtin_task_names():
        task = load_task(name)
        env = task.make_env()
        assert set(task.policy_obs_keys) <= set(env.observation_space.keys())
        env.close()


def test_task_from_user_spec_file(tmp_path):
    spec = {"name": "my-open-maze", "env_id": "PointMaze_Open-v3", "horizon": 120}
    path = tmp_path / "open.toml"
    path.write_text("\n".join([
        f'name = "{spec["name"]}"', f'env_id = "{spec["env_id"]}"', f'horizon = {spec["horizon"]}',
        'policy_obs_keys = ["observation", "desired_goal"]', 'success_key = "success"',
        'expert = "maze-waypoints"', "[env_kwargs]", "continuing_task = false"]))
    task = load_task(path)
    assert (task.name, task.env_id, task.horizon, task.env_kwargs) == ("my-open-maze", "PointMaze_Open-v3", 120,
                                                                       {"continuing_task": False})
    env = task.make_env()
    assert env.spec.max_episode_steps == 120
    env.close()


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\nenv_id = 'PointMaze_UMaze-v3'", "missing field"),
    ("name = 'x'\nenv_id = 'E'\nhorizon = 5\npolicy_obs_keys = ['o']\nsuccess_key = 's'\nexpert = 'e'\ncolour = 1",
     "unknown field"),
    ("name = 'x'\nenv_id = 'E'\nhorizon = -5\npolicy_obs_keys = ['o']\nsuccess_key = 's'\nexpert = 'e'", "horizon"),
    ("this is = = not toml", "not valid TOML"),
    ("name = 'x'\nenv_id = 'E'\nhorizon = 5\npolicy_obs_keys = ['o']\nsuccess_key = 's'\n[finetune]\nlr = 1",
     r"\[finetune\] does not take lr; it takes si_decay"),
    ("name = 'x'\nenv_id = 'E'\nhorizon = 5\npolicy_obs_keys = ['o']\nsuccess_key = 's'\n[finetune]\nsi_decay = 2",
     r"si_decay must be a number in \(0, 1\], got 2"),
])
def test_bad_spec_files_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LamRobotError, match=message):
        load_task(path)


def test_finetune_table_of_a_user_spec_and_of_specs_stored_before_it(tmp_path):
    path = tmp_path / "push.toml"
    path.write_text(
        'name = "my-push"\nenv_id = "FetchPush-v4"\nhorizon = 50\npolicy_obs_keys = ["observation", "desired_goal"]\n'
        'goal_keys = ["achieved_goal", "desired_goal"]\nsuccess_key = "is_success"\n[finetune]\nsi_decay = 0.9\n'
    )
    push = load_task(path)
    assert push.finetune_default("si_decay") == 0.9 and push.to_dict()["finetune"] == {"si_decay": 0.9}
    maze = load_task("nav-medium")
    assert maze.finetune_default("si_decay") == 1.0 and "finetune" not in maze.to_dict()
    # A grasp spec stored in a demo file or checkpoint before grasp.toml had the table gets the built-in's...
    stored = {k: v for k, v in load_task("grasp").to_dict().items() if k != "finetune"}
    assert TaskSpec.from_dict(stored).finetune_default("si_decay") == 0.95
    # ...but not one of another world that only shares the name.
    heavier = TaskSpec.from_dict({**stored, "variant": {"object_mass": 5.0}})
    assert heavier.finetune_default("si_decay") == 1.0


def test_unknown_task_name_lists_the_choices():
    with pytest.raises(LamRobotError, match="unknown task 'nope'; choose one of .*grasp"):
        load_task("nope")


def test_cli_tasks_lists_sizes():
    result = run_cli("tasks", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["grasp"]["policy_obs_size"] == 25 + 3 and rows["grasp"]["action_size"] == 4
    assert rows["nav-umaze"]["policy_obs_size"] == 4 + 2 and rows["nav-umaze"]["horizon"] == 300
    table = run_cli("tasks")
    assert "FetchPickAndPlace-v4" in table.stdout and "horizon" in table.stdout


def test_cli_unknown_task_is_one_clean_line():
    result = run_cli("evaluate", "--task", "nope", "--episodes", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "unknown task 'nope'" in result.stderr


@pytest.mark.parametrize("command", ["tasks", "record", "train-bc", "finetune", "pipeline", "inspect", "evaluate",
                                     "export", "import", "baseline"])
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: lam-robot" in result.stdout and "--help" in result.stdout
