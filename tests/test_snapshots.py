"""Resume snapshots: weights and counters are one atomic file, so a kill between writes cannot mix them."""

from __future__ import annotations

import pytest
import torch

from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import LAST, LOG, RUN_STATE, load_training_state, prepare_run_dir, save_training_state
from lam_robot.train.finetune import OUR_FILES as FINETUNE_FILES


def _snapshot(out, step: int, value: float) -> None:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(value)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    save_training_state(out / LAST, model.state_dict(), optimizer, {"step": step, "config": {"lr": 1.0}})


def test_a_kill_between_the_weights_and_state_json_resumes_the_newer_snapshot(tmp_path):
    _snapshot(tmp_path, step=1, value=1.0)
    stale = (tmp_path / LAST / RUN_STATE).read_text()
    _snapshot(tmp_path, step=2, value=2.0)
    (tmp_path / LAST / RUN_STATE).write_text(stale)  # as if killed after the weights file was replaced
    state = prepare_run_dir(tmp_path, overwrite=False, our_files=(LAST,), config={"lr": 1.0}, may_change=set())
    model = torch.nn.Linear(2, 1)
    weights, _ = load_training_state(tmp_path / LAST, torch.optim.Adam(model.parameters()))
    assert state is not None and state["step"] == 2
    assert float(weights["weight"].flatten()[0]) < 2.0  # one Adam step from 2.0, not from 1.0
    assert float(weights["weight"].flatten()[0]) > 1.5


def _killed_before_first_snapshot(out) -> None:
    (out / LOG).write_text("env_steps,success_rate\n0,0.02\n")
    (out / "tensorboard" / "run_1").mkdir(parents=True)
    (out / "tensorboard" / "run_1" / "events.out").write_bytes(b"x")


def test_a_run_killed_before_its_first_snapshot_starts_afresh(tmp_path, capsys):
    _killed_before_first_snapshot(tmp_path)
    state = prepare_run_dir(tmp_path, overwrite=False, our_files=FINETUNE_FILES, config={}, may_change=set())
    assert state is None
    assert list(tmp_path.iterdir()) == []
    assert "before its first snapshot" in capsys.readouterr().out


@pytest.mark.parametrize("other", ["model.safetensors", "notes.txt"])
def test_weights_or_a_foreign_file_beside_the_logs_are_refused_and_kept(tmp_path, other):
    _killed_before_first_snapshot(tmp_path)
    (tmp_path / other).write_text("keep me")
    with pytest.raises(LamRobotError, match="not empty and holds no run to resume"):
        prepare_run_dir(tmp_path, overwrite=False, our_files=FINETUNE_FILES, config={}, may_change=set())
    assert (tmp_path / other).read_text() == "keep me"
    assert (tmp_path / LOG).exists()


@pytest.mark.parametrize(("saved", "now", "resumes"), [(8, None, True), (None, 8, True), (8, 4, False), (4, None, False)])
def test_a_setting_spelt_out_or_left_to_its_default_resumes_alike(tmp_path, saved, now, resumes):
    model = torch.nn.Linear(2, 1)
    save_training_state(tmp_path / LAST, model.state_dict(), torch.optim.Adam(model.parameters()),
                        {"step": 1, "config": {"n_envs": saved}})
    resume = lambda: prepare_run_dir(  # noqa: E731
        tmp_path, overwrite=False, our_files=(LAST,), config={"n_envs": now}, may_change=set(), defaults={"n_envs": 8}
    )
    if resumes:
        assert resume()["step"] == 1
    else:
        with pytest.raises(LamRobotError, match="other settings .n_envs"):
            resume()


def test_a_path_given_relative_or_absolute_resumes_alike(tmp_path, monkeypatch):
    (tmp_path / "demos.hdf5").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    model = torch.nn.Linear(2, 1)
    save_training_state(out / LAST, model.state_dict(), torch.optim.Adam(model.parameters()),
                        {"step": 1, "config": {"demos": "demos.hdf5"}})
    resume = lambda demos: prepare_run_dir(  # noqa: E731
        out, overwrite=False, our_files=(LAST,), config={"demos": demos}, may_change=set()
    )
    assert resume(str(tmp_path / "demos.hdf5"))["step"] == 1
    assert resume("./demos.hdf5")["step"] == 1
    (tmp_path / "other.hdf5").write_bytes(b"")
    with pytest.raises(LamRobotError, match="other settings .demos"):
        resume("other.hdf5")
