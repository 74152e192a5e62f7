"""Goal-reaching: hindsight relabelling, play data, pretraining on unlabelled trajectories, --init-from."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from tests.conftest import assert_clean_error, run_cli

from lam_robot.config import BCConfig, PretrainConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import load_checkpoint
from lam_robot.tasks import load_task
from lam_robot.train.bc import load_training_data


def _relabelled_batch(data_path, tmp_path, **fields):
    config = BCConfig(data=data_path, out=tmp_path / "run", relabel="hindsight", context=4, **fields)
    data = load_training_data(config)
    batches = data.train
    idx = torch.arange(len(batches))
    plain, *_ = batches.get(idx)
    relabelled, _, valid, _ = batches.get(idx, torch.Generator().manual_seed(3))
    return data, batches, idx, plain, relabelled, valid


@pytest.mark.parametrize("fixture", ["umaze_demos", "grasp_demos"])
def test_relabelled_windows_take_a_goal_their_episode_reached_later(fixture, request, tmp_path):
    data_path = request.getfixturevalue(fixture)
    data, batches, idx, plain, relabelled, valid = _relabelled_batch(data_path, tmp_path, relabel_ratio=0.5)
    columns = batches.hindsight[0].columns
    changed = (relabelled != plain).any(-1).any(-1)
    assert 0.3 < changed.float().mean() < 0.7  # about the ratio asked for
    assert torch.equal(relabelled[..., : columns.start], plain[..., : columns.start])  # only the goal moves
    last = batches.starts[idx] + batches.offsets[-1]
    for i in torch.nonzero(changed).flatten().tolist():
        goal = relabelled[i, -1, columns]
        # The same goal across the whole context window ...
        assert torch.equal(relabelled[i, :, columns], goal.expand_as(relabelled[i, :, columns]))
        # ... and it is a goal the episode reached at the window's last step or later.
        reached = batches.achieved[last[i] : batches.ends[i] + 1]
        assert (reached == goal).all(-1).any(), i
    # The goals come from achieved_goal: un-normalised they are positions the demos passed through.
    task = data.task
    with DemoFile(data_path) as demos:
        achieved = np.concatenate([demos.episode(n)["next_obs"][task.goal_keys[0]] for n in demos.split("train")])
    i = int(torch.nonzero(changed).flatten()[0])
    goal = relabelled[i, -1, columns].double().numpy() * data.normalizer.obs_std[columns] + data.normalizer.obs_mean[
        columns
    ]
    assert np.abs(achieved - goal).max(-1).min() < 1e-5


def test_relabelling_is_deterministic_for_a_seed_and_reaches_the_episode_end(umaze_demos, tmp_path):
    _, batches, idx, _, first, _ = _relabelled_batch(umaze_demos, tmp_path, relabel_ratio=1.0, relabel_horizon=1e6)
    again, *_ = batches.get(idx, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    # A horizon far beyond the episode's length: every goal is the episode's final achieved goal.
    final = batches.achieved[batches.ends[idx]]
    assert torch.equal(first[:, -1, batches.hindsight[0].columns], final)


def test_relabelled_bc_trains_and_checkpoint_records_it(umaze_demos, tmp_path):
    out = tmp_path / "bc"
    result = run_cli(
        "train-bc", "--data", str(umaze_demos), "--out", str(out), "--epochs", "2", "--relabel", "hindsight",
        "--relabel-ratio", "0.8", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
    )
    assert result.returncode == 0, result.stderr
    meta = load_checkpoint(out).meta
    assert meta["training"]["relabel"] == "hindsight" and meta["training"]["relabel_ratio"] == 0.8


def test_relabelling_a_task_without_goal_keys_is_a_one_line_error(tmp_path):
    spec = tmp_path / "my-maze.toml"
    spec.write_text(
        'name = "my-maze"\nenv_id = "PointMaze_UMaze-v3"\nhorizon = 300\n'
        'policy_obs_keys = ["observation", "desired_goal"]\nsuccess_key = "success"\nexpert = "maze-waypoints"\n'
        "[env_kwargs]\ncontinuing_task = false\n"
    )
    demos = tmp_path / "d.hdf5"
    assert run_cli("record", "--task", str(spec), "--out", str(demos), "--episodes", "2").returncode == 0
    result = run_cli("train-bc", "--data", str(demos), "--out", str(tmp_path / "bc"), "--relabel", "hindsight")
    assert_clean_error(result, "names no goal keys")
    result = run_cli("record", "--task", str(spec), "--source", "play", "--out", str(tmp_path / "p.hdf5"))
    assert_clean_error(result, "names no goal keys")
    # A file recorded before its spec named goal keys: --task with a spec of that name that does.
    named = tmp_path / "my-maze-goals.toml"
    named.write_text(spec.read_text().replace("[env_kwargs]", 'goal_keys = ["achieved_goal", "desired_goal"]\n[env_kwargs]'))
    result = run_cli(
        "train-bc", "--data", str(demos), "--out", str(tmp_path / "bc"), "--relabel", "hindsight", "--task", str(named),
        "--epochs", "1", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def play_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("play") / "play.hdf5"
    result = run_cli(
        "record", "--task", "nav-umaze", "--source", "play", "--out", str(path), "--episodes", "6", "--n-envs", "2"
    )
    assert result.returncode == 0, result.stderr
    assert "unlabelled play episodes" in result.stdout
    return path


def test_play_data_is_unlabelled_and_not_mistaken_for_demos(play_file, umaze_demos, tmp_path):
    with DemoFile(play_file, check_values=True) as play:
        assert play.unlabelled
        for name in play.demo_names:
            demo = play.demo(name)
            assert "desired_goal" not in demo["obs"] and "desired_goal" not in demo["next_obs"]
            assert "rewards" not in demo and not demo.attrs["success"]
            assert demo.attrs["source"] == "play"
        with pytest.raises(LamRobotError, match="unlabelled play data"):
            play.policy_episodes("train")
    assert_clean_error(
        run_cli("train-bc", "--data", str(play_file), "--out", str(tmp_path / "bc")), "lam-robot pretrain"
    )
    # Demos and play data never share a file.
    mixed = tmp_path / "mixed.hdf5"
    shutil.copyfile(umaze_demos, mixed)
    assert_clean_error(
        run_cli("record", "--task", "nav-umaze", "--source", "play", "--out", str(mixed), "--episodes", "1"),
        "holds demos",
    )


def test_play_goals_do_not_depend_on_the_env_count(tmp_path):
    files = []
    for n_envs in (1, 3):
        path = tmp_path / f"play{n_envs}.hdf5"
        result = run_cli(
            "record", "--task", "nav-umaze", "--source", "play", "--out", str(path), "--episodes", "3",
            "--n-envs", str(n_envs),
        )
        assert result.returncode == 0, result.stderr
        files.append(path)
    with DemoFile(files[0]) as a, DemoFile(files[1]) as b:
        for name in a.demo_names:
            assert np.array_equal(a.episode(name)["actions"], b.episode(name)["actions"])


def test_pretrain_on_play_data_then_init_from(play_file, umaze_demos, tmp_path):
    pre = tmp_path / "pre"
    result = run_cli(
        "pretrain", "--data", str(play_file), "--out", str(pre), "--epochs", "2", "--d-model", "16",
        "--n-layers", "1", "--n-heads", "2", "--context", "4",
    )
    assert result.returncode == 0, result.stderr
    assert "--init-from" in result.stdout
    assert load_checkpoint(pre).meta["training"]["relabel_ratio"] == 1.0
    # train-bc from it: the architecture comes from the source (said in one line), the weights too.
    bc = tmp_path / "bc"
    result = run_cli(
        "train-bc", "--data", str(umaze_demos), "--out", str(bc), "--epochs", "1", "--init-from", str(pre),
        "--lr", "1e-12",
    )
    assert result.returncode == 0, result.stderr
    assert "fixes the architecture" in result.stdout
    source, tuned = load_checkpoint(pre), load_checkpoint(bc)
    assert tuned.net.config.d_model == 16 and tuned.net.config.context == 4
    for (name, a), b in zip(source.net.state_dict().items(), tuned.net.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert np.array_equal(source.normalizer.obs_mean, tuned.normalizer.obs_mean)
    # A source of another task (here: the same sizes) is mapped layer by layer, said in one line.
    other = tmp_path / "other-pre"
    shutil.copytree(pre, other)
    config = (other / "config.json").read_text().replace('"name": "nav-umaze"', '"name": "nav-other"')
    (other / "config.json").write_text(config)
    result = run_cli(
        "train-bc", "--data", str(umaze_demos), "--out", str(tmp_path / "bc2"), "--init-from", str(other),
        "--epochs", "1",
    )
    assert result.returncode == 0, result.stderr
    assert "(trained on nav-other): mapped trunk, body.embed, mean_head+log_std; re-initialised nothing" in result.stdout


def test_pretrain_on_trajectories_without_actions_uses_an_inverse_model(play_file, umaze_demos, tmp_path):
    # Observation-only logs, written here as another tool would leave them: the actions dataset removed.
    obs_only = tmp_path / "obs-only.hdf5"
    shutil.copyfile(play_file, obs_only)
    with h5py.File(obs_only, "a") as f:
        for name in f["data"]:
            del f["data"][name]["actions"]
    result = run_cli("pretrain", "--data", str(obs_only), "--out", str(tmp_path / "pre"), "--epochs", "1")
    assert_clean_error(result, "give --demos")
    from lam_robot.train.pretrain import pretrain

    config = PretrainConfig(
        data=obs_only, demos=umaze_demos, out=tmp_path / "pre", epochs=1, idm_epochs=30, d_model=16, n_layers=1,
        n_heads=2, context=4,
    )
    result = pretrain(config, progress=False)
    assert result.epochs_run == 1
    # The inverse model's labels are close to the actions that were really taken.
    from lam_robot.train.pretrain import inverse_model, play_episodes

    idm = inverse_model(config, load_task("nav-umaze"))
    with DemoFile(obs_only) as stripped, DemoFile(play_file) as original:
        labelled = play_episodes(stripped, "train", stripped.task, idm)
        truth = original.policy_episodes("train", goals=True)
    error = np.mean([np.mean((a.actions - b.actions) ** 2) for a, b in zip(labelled, truth)])
    spread = np.mean([np.var(b.actions) for b in truth])
    # On states the few demos never visited (umaze: 0.03 of the spread; 0.29 when the model saw the two
    # observations instead of the observation and its change).
    assert error < 0.1 * spread, (error, spread)


def test_pretrain_on_several_files_of_one_task(play_file, umaze_demos, grasp_demos, tmp_path):
    """--more-data: every file's windows are trained on; one without actions is labelled by the inverse model."""
    obs_only = tmp_path / "obs-only.hdf5"
    shutil.copyfile(play_file, obs_only)
    with h5py.File(obs_only, "a") as f:
        for name in f["data"]:
            del f["data"][name]["actions"]
    # Demos as another program writes them (robomimic's layout, no task spec): read as the first file's task.
    foreign = tmp_path / "foreign-demos.hdf5"
    shutil.copyfile(umaze_demos, foreign)
    with h5py.File(foreign, "a") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        del env_args["task"], f["data"].attrs["format_version"]
        f["data"].attrs["env_args"] = json.dumps(env_args)
    from lam_robot.train.pretrain import pretrain

    tiny = dict(epochs=1, idm_epochs=5, d_model=16, n_layers=1, n_heads=2, context=4)
    pretrain(PretrainConfig(data=play_file, out=tmp_path / "one", **tiny), progress=False)
    pretrain(PretrainConfig(data=play_file, more_data=(obs_only,), demos=umaze_demos, out=tmp_path / "two", **tiny),
             progress=False)  # fmt: skip
    pretrain(PretrainConfig(data=play_file, more_data=(foreign,), out=tmp_path / "three", **tiny), progress=False)
    one, two = load_checkpoint(tmp_path / "one").meta, load_checkpoint(tmp_path / "two").meta
    assert two["demos"] == 2 * one["demos"] == 12
    assert two["train_windows"] == 2 * one["train_windows"] > 0
    with DemoFile(umaze_demos) as demos:
        assert load_checkpoint(tmp_path / "three").meta["demos"] == 6 + len(demos)
    assert_clean_error(
        run_cli("pretrain", "--data", str(play_file), "--more-data", str(obs_only), "--out", str(tmp_path / "x")),
        f"{obs_only} has no actions; give --demos",
    )
    assert_clean_error(
        run_cli("pretrain", "--data", str(play_file), "--more-data", str(grasp_demos), "--out", str(tmp_path / "y")),
        "holds trajectories of task 'grasp', not 'nav-umaze'; pretrain on files of 'nav-umaze' only",
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_train_bc_with_play_data_alongside_the_demos(play_file, umaze_demos, tmp_path):
    out = tmp_path / "cotrain"
    result = run_cli(
        "train-bc", "--data", str(umaze_demos), "--play", str(play_file), "--relabel", "hindsight", "--out", str(out),
        "--epochs", "1", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--context", "4",
    )
    assert result.returncode == 0, result.stderr
    meta = load_checkpoint(out).meta
    assert meta["play_windows"] > meta["train_windows"] > 0
    # Every play window is relabelled: none keeps the placeholder goal (its own achieved goal).
    config = BCConfig(data=umaze_demos, play=play_file, relabel="hindsight", relabel_horizon=1e6, out=tmp_path / "x")
    data = load_training_data(config)
    idx = torch.arange(len(data.play))
    relabelled, *_ = data.play.get(idx, torch.Generator().manual_seed(0))
    assert torch.equal(relabelled[:, -1, data.play.hindsight[0].columns], data.play.achieved[data.play.ends[idx]])
    assert_clean_error(
        run_cli("train-bc", "--data", str(umaze_demos), "--play", str(play_file), "--out", str(tmp_path / "y")),
        "--play needs --relabel hindsight",
    )


def test_multi_task_bc_takes_play_data_of_the_data_file_s_task(play_file, umaze_demos, grasp_demos, tmp_path):
    """--more-data with --play: the play windows go with --data's task (its adapter, its goal columns), padded to
    the widest task, every one relabelled; play data of another task is refused in one line."""
    config = BCConfig(data=umaze_demos, more_data=(grasp_demos,), play=play_file, relabel="hindsight",
                      relabel_horizon=1e6, out=tmp_path / "x", context=4)  # fmt: skip
    data = load_training_data(config)
    assert data.multi is not None and data.play is not None
    umaze = list(data.multi.sizes).index(data.multi.adapter_of["nav-umaze"])
    idx = torch.arange(len(data.play))
    assert (data.play.adapters(idx) == umaze).all()
    relabelled, *_ = data.play.get(idx, torch.Generator().manual_seed(0))
    assert relabelled.shape[-1] == data.train.obs.shape[-1] > data.multi.sizes[data.multi.adapter_of["nav-umaze"]][0]
    columns = data.play.hindsight[umaze].columns
    torch.testing.assert_close(relabelled[:, -1, columns], data.play.achieved[data.play.ends[idx], :2])
    out = tmp_path / "bc"
    result = run_cli(
        "train-bc", "--data", str(umaze_demos), "--more-data", str(grasp_demos), "--play", str(play_file),
        "--relabel", "hindsight", "--out", str(out), "--epochs", "1", "--d-model", "16", "--n-layers", "1",
        "--n-heads", "2", "--context", "4",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(out).meta["play_windows"] == len(data.play)
    assert_clean_error(
        run_cli("train-bc", "--data", str(grasp_demos), "--more-data", str(umaze_demos), "--play", str(play_file),
                "--relabel", "hindsight", "--out", str(tmp_path / "y")),
        "holds trajectories of task",
    )  # fmt: skip
    assert not (tmp_path / "y").exists()


def test_inspect_shows_play_data_and_observation_only_files(play_file, tmp_path):
    result = run_cli("inspect", str(play_file))
    assert result.returncode == 0, result.stderr
    assert "unlabelled play data" in result.stdout
    obs_only = tmp_path / "obs-only.hdf5"
    shutil.copyfile(play_file, obs_only)
    with h5py.File(obs_only, "a") as f:
        for name in f["data"]:
            del f["data"][name]["actions"]
    result = run_cli("inspect", str(obs_only))
    assert result.returncode == 0, result.stderr
    assert "actions: none (observation-only" in result.stdout
