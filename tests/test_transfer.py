"""Transfer across tasks: multi-task BC with per-family adapters, --init-from and finetune --task across tasks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import lam_robot
from lam_robot.config import BCConfig
from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import load_checkpoint
from lam_robot.policy.network import MultiTaskPolicyNet, TransformerConfig, TransformerPolicyNet
from lam_robot.policy.transfer import checkpoint_for_task
from lam_robot.tasks import load_task
from lam_robot.train.bc import load_training_data
from tests.conftest import assert_clean_error, run_cli

TINY = dict(epochs=2, context=4, d_model=16, n_layers=1, n_heads=2, batch_size=64)
SINGLE_KEYS = {
    "body.embed.weight", "body.embed.bias", "body.position", "body.norm.weight", "body.norm.bias",
    "mean_head.weight", "mean_head.bias", "log_std",
}


@pytest.fixture(scope="module")
def multi_run(umaze_demos, grasp_demos, tmp_path_factory):
    """A tiny two-task checkpoint: nav-umaze (observation 6, action 2) and grasp (28, 4)."""
    out = tmp_path_factory.mktemp("multi") / "bc"
    lam_robot.train_bc(data=umaze_demos, more_data=[grasp_demos], out=out, progress=False, **TINY)
    return out


def test_single_task_state_dict_keys_are_unchanged():
    net = TransformerPolicyNet(TransformerConfig(obs_dim=6, act_dim=2, context=4, d_model=16, n_layers=1, n_heads=2))
    keys = {k for k in net.state_dict() if not k.startswith("body.encoder.")}
    assert keys == SINGLE_KEYS


def test_task_net_shares_the_trunk_and_keeps_single_task_keys():
    config = TransformerConfig(obs_dim=6, act_dim=2, context=4, d_model=16, n_layers=1, n_heads=2, dropout=0.0)
    multi = MultiTaskPolicyNet(config, {"PointMaze_6_2": (6, 2), "Fetch_28_4": (28, 4)})
    nav, fetch = multi.task_net("PointMaze_6_2"), multi.task_net("Fetch_28_4")
    assert {k for k in nav.state_dict() if not k.startswith("body.encoder.")} == SINGLE_KEYS
    assert nav.body.encoder is fetch.body.encoder and nav.body.position is multi.body.position
    # The padded multi-task forward gives each row its own adapter's output.
    obs = torch.randn(3, 4, 28)
    valid = torch.ones(3, 4, dtype=torch.bool)
    adapter = torch.tensor([0, 1, 0])
    multi.eval()
    with torch.no_grad():
        mean, log_std, dims = multi(obs, valid, adapter)
        torch.testing.assert_close(mean[0, :, :2], nav.eval()(obs[:1, :, :6], valid[:1])[0])
        torch.testing.assert_close(mean[1], fetch.eval()(obs[1:2], valid[:1])[0])
    assert dims.tolist() == [[True, True, False, False], [True] * 4, [True, True, False, False]]
    assert float(mean[0, :, 2:].abs().sum()) == 0.0 and float(log_std[0, 2:].abs().sum()) == 0.0


def test_two_task_bc_records_its_tasks_and_evaluates_on_each(multi_run):
    config = json.loads((multi_run / "config.json").read_text())
    assert config["tasks"] == ["nav-umaze", "grasp"]
    assert config["format_version"] == 2
    assert {t: v["adapter"] for t, v in config["multitask"]["tasks"].items()} == {
        "nav-umaze": "PointMaze_6_2",
        "grasp": "Fetch_28_4",
    }
    sizes = {k: (v["obs_dim"], v["act_dim"]) for k, v in config["multitask"]["adapters"].items()}
    assert sizes == {"PointMaze_6_2": (6, 2), "Fetch_28_4": (28, 4)}
    assert "adapter_rule" in config["multitask"]
    keys = set(load_file(str(multi_run / "model.safetensors")))
    assert {"adapters.PointMaze_6_2.embed.weight", "adapters.Fetch_28_4.mean_head.weight", "body.position"} <= keys
    assert "body.embed.weight" not in keys
    for task in ("nav-umaze", "grasp"):
        result = lam_robot.evaluate(policy=str(multi_run), task=task, episodes=2, n_envs=2, progress=False)
        assert result.episodes == 2 and 0.0 <= result.success_rate <= 1.0
    # A task of a trained family (a grasp variant) gets that family's adapter; the default is the first task.
    assert load_checkpoint(multi_run, load_task("grasp-heavy")).net.config.obs_dim == 28
    assert load_checkpoint(multi_run).task.name == "nav-umaze"


def test_multitask_checkpoint_refuses_a_task_of_no_trained_family(multi_run, tmp_path):
    path = _blind_maze(tmp_path)
    with pytest.raises(LamRobotError, match="needs adapter PointMaze_4_2, which it lacks"):
        load_checkpoint(multi_run, load_task(path))


def test_init_from_another_task_lists_mapped_and_reinitialised_layers(bc_run, grasp_demos, tmp_path):
    out = tmp_path / "grasp-from-nav"
    result = run_cli("train-bc", "--data", str(grasp_demos), "--out", str(out), "--epochs", "1",
                     "--init-from", str(bc_run), "--lr", "1e-12")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "re-initialised" in line]
    assert len(lines) == 1, result.stdout
    assert "(trained on nav-umaze): mapped trunk; re-initialised body.embed, mean_head+log_std" in lines[0]
    source, tuned = load_checkpoint(bc_run), load_checkpoint(out)
    assert tuned.task.name == "grasp" and tuned.net.config.obs_dim == 28
    torch.testing.assert_close(source.net.body.position, tuned.net.body.position)


def test_init_from_a_multitask_run_maps_the_family_adapter(multi_run, grasp_demos, tmp_path, capsys):
    out = tmp_path / "grasp"
    lam_robot.train_bc(data=grasp_demos, out=out, init_from=multi_run, progress=False, **TINY | {"lr": 1e-12})
    line = [x for x in capsys.readouterr().out.splitlines() if "re-initialised" in x][0]
    assert "mapped trunk, body.embed, mean_head+log_std; re-initialised nothing" in line
    source, tuned = load_checkpoint(multi_run, load_task("grasp")), load_checkpoint(out)
    torch.testing.assert_close(source.net.mean_head.weight, tuned.net.mean_head.weight)
    assert (source.normalizer.obs_mean == tuned.normalizer.obs_mean).all()


def test_multitask_run_from_a_single_task_run(bc_run, umaze_demos, grasp_demos, tmp_path, capsys):
    out = tmp_path / "multi"
    lam_robot.train_bc(data=umaze_demos, more_data=[grasp_demos], out=out, init_from=bc_run, progress=False,
                       **TINY | {"epochs": 1})
    line = [x for x in capsys.readouterr().out.splitlines() if "re-initialised" in x][0]
    assert ("mapped trunk, adapters.PointMaze_6_2.embed, adapters.PointMaze_6_2.mean_head+log_std; "
            "re-initialised adapters.Fetch_28_4.embed, adapters.Fetch_28_4.mean_head+log_std") in line


def test_finetune_across_tasks_maps_or_refuses(bc_run, multi_run, tmp_path, capsys):
    # Same sizes (another maze): everything maps, and the checkpoint now acts in the new task.
    ckpt = checkpoint_for_task(bc_run, load_task("nav-spiral"), "--policy")
    assert ckpt.task.name == "nav-spiral"
    assert "mapped trunk, body.embed, mean_head+log_std; re-initialised nothing" in capsys.readouterr().out
    # Another observation size, same action size: a new input layer, statistics from reset observations.
    path = _blind_maze(tmp_path)
    ckpt = checkpoint_for_task(multi_run, load_task(path), "--policy")
    assert ckpt.net.config.obs_dim == 4 and ckpt.normalizer.obs_mean.shape == (4,)
    assert "mapped trunk, mean_head+log_std; re-initialised body.embed" in capsys.readouterr().out
    # A multi-task checkpoint on one of its tasks: that task's adapter, no note.
    assert checkpoint_for_task(multi_run, load_task("grasp"), "--policy").net.config.act_dim == 4


def test_finetune_refuses_an_action_space_it_cannot_map(bc_run, tmp_path):
    result = run_cli("finetune", "--policy", str(bc_run), "--task", "grasp", "--out", str(tmp_path / "ft"),
                     "--steps", "64")
    assert_clean_error(result, "acts with actions of shape (2,)")
    assert "takes shape (4,)" in result.stderr


def test_more_data_is_validated_in_one_line(umaze_demos):
    with pytest.raises(LamRobotError, match="lists a file twice"):
        BCConfig(data=umaze_demos, out=umaze_demos.parent / "x", more_data=(umaze_demos,))
    with pytest.raises(LamRobotError, match="--more-data must be a list"):
        BCConfig(data=umaze_demos, out=umaze_demos.parent / "x", more_data="b.hdf5")  # type: ignore[arg-type]


def test_two_task_relabelling_puts_each_task_s_reached_goal_in_its_own_goal_columns(umaze_demos, grasp_demos, tmp_path):
    config = BCConfig(data=umaze_demos, more_data=(grasp_demos,), out=tmp_path / "run", relabel="hindsight",
                      relabel_ratio=1.0, context=4)
    data = load_training_data(config)
    batches, multi = data.train, data.multi
    assert multi is not None and len(batches.hindsight) == 2
    idx = torch.arange(len(batches))
    plain, *_ = batches.get(idx)
    relabelled, *_ = batches.get(idx, torch.Generator().manual_seed(0))
    adapters = batches.adapters(idx)
    last = batches.starts[idx] + batches.offsets[-1]
    order = list(multi.sizes)
    for name, task in multi.tasks.items():
        adapter = order.index(multi.adapter_of[name])
        columns = batches.hindsight[adapter].columns
        width = columns.stop - columns.start
        assert width == len(load_task(name).make_env().observation_space["desired_goal"].low)
        rows = torch.nonzero(adapters == adapter).flatten()
        moved = (relabelled[rows] != plain[rows]).any(1)  # (windows, columns) that changed anywhere in the window
        assert moved[:, columns].any() and not moved[:, : columns.start].any() and not moved[:, columns.stop :].any()
        for i in rows[:: max(1, len(rows) // 20)].tolist():
            goal = relabelled[i, -1, columns]
            assert torch.equal(relabelled[i, :, columns], goal.expand(len(batches.offsets), width))
            reached = batches.achieved[last[i] : batches.ends[i] + 1, :width]
            assert (reached == goal).all(-1).any(), (name, i)
    # Training with it runs and records the setting.
    out = tmp_path / "bc"
    lam_robot.train_bc(data=umaze_demos, more_data=[grasp_demos], out=out, relabel="hindsight", progress=False, **TINY)
    assert load_checkpoint(out).meta["training"]["relabel"] == "hindsight"


def _blind_maze(tmp_path):
    """A user's maze spec whose policy sees no goal: observation size 4 instead of 6, action size 2."""
    spec = load_task("nav-umaze").to_dict() | {"name": "nav-blind", "policy_obs_keys": ["observation"]}
    spec["goal_keys"] = []
    path = tmp_path / "nav-blind.toml"
    path.write_text(_toml(spec))
    return path


def _toml(spec: dict) -> str:
    """A task spec dict as TOML (flat values and one-level tables are all a spec has)."""
    lines, tables = [], []
    for key, value in spec.items():
        if isinstance(value, dict):
            tables.append(f"[{key}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in value.items()))
        else:
            lines.append(f"{key} = {json.dumps(value)}\n")
    return "".join(lines) + "\n".join(tables)


def test_ppo_from_a_multitask_checkpoint_starts_from_its_adapter(multi_run, tmp_path):
    """finetune --policy MULTI --task grasp: at step 0 PPO's deterministic action is the grasp adapter's."""
    import numpy as np

    from lam_robot.config import FinetuneConfig
    from lam_robot.policy.bc_policy import TransformerPolicy
    from lam_robot.train.finetune import FinetuneRun

    config = FinetuneConfig(policy=str(multi_run), out=str(tmp_path / "ft"), task="grasp", steps=64, n_envs=2,
                            n_steps=32, batch_size=32, n_epochs=1, eval_every=64, eval_episodes=1)
    run = FinetuneRun(config, progress=False)
    assert run.bc_task.name == "grasp"
    bc = TransformerPolicy.load(multi_run, task=load_task("grasp"))
    venv = run.model.get_env()
    history = venv.reset()
    state, start = None, np.ones(2, bool)
    for _ in range(5):
        ppo_action, _ = run.model.predict(history, deterministic=True)
        newest = history[:, -1, :-1]
        bc_action, state = bc.predict({"observation": newest[:, :25], "desired_goal": newest[:, 25:28]}, state, start)
        np.testing.assert_allclose(ppo_action, bc_action, atol=1e-5)
        history, _, done, _ = venv.step(ppo_action)
        start = done.copy()
    venv.close()
