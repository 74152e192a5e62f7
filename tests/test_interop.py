"""Demo files to and from `imitation` trajectories and Minari datasets: round trips keep every array."""

import re

import h5py
import numpy as np
import pytest

from lam_robot import interop
from lam_robot.errors import LamRobotError
from lam_robot.tasks import load_task
from tests.conftest import assert_clean_error, file_digest, run_cli


def assert_same_demos(a, b):
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert sorted(fa["data"]) == sorted(fb["data"])
        for name in fa["data"]:
            da, db = fa["data"][name], fb["data"][name]
            for key in ("actions", "rewards", "terminated", "truncated", "dones"):
                np.testing.assert_array_equal(da[key][()], db[key][()])
                assert da[key].dtype == db[key].dtype
            for group in ("obs", "next_obs"):
                assert sorted(da[group]) == sorted(db[group])
                for key in da[group]:
                    np.testing.assert_array_equal(da[group][key][()], db[group][key][()])
            for attr in ("num_samples", "seed", "success", "source"):
                assert da.attrs[attr] == db.attrs[attr]


def test_imitation_in_memory_trajectories(grasp_demos):
    trajectories = interop.to_imitation(grasp_demos)
    assert len(trajectories) == 3
    first = trajectories[0]
    assert first.obs.shape == (len(first.acts) + 1, 3 + 3 + 25)  # achieved_goal, desired_goal, observation
    assert first.rews.shape == (len(first.acts),)


def test_imitation_round_trip_through_the_cli(grasp_demos, tmp_path):
    saved, back = tmp_path / "trajectories", tmp_path / "back.hdf5"
    exported = run_cli("export", str(grasp_demos), "--to", "imitation", "--out", str(saved))
    assert exported.returncode == 0, exported.stderr
    imported = run_cli("import", str(saved), "--from", "imitation", "--task", "grasp", "--out", str(back))
    assert imported.returncode == 0, imported.stderr
    assert_same_demos(grasp_demos, back)


def test_minari_round_trip_and_load_dataset(umaze_demos, tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert interop.export_minari(umaze_demos, "lamrobot/umaze-test-v0") == 12
    dataset = minari.load_dataset("lamrobot/umaze-test-v0")
    assert dataset.total_episodes == 12
    episode = next(dataset.iterate_episodes())
    assert set(episode.observations) == {"observation", "achieved_goal", "desired_goal"}
    back = tmp_path / "back.hdf5"
    assert interop.import_minari("lamrobot/umaze-test-v0", load_task("nav-umaze"), back) == 12
    assert_same_demos(umaze_demos, back)


def test_import_refuses_an_existing_file(grasp_demos, umaze_demos, tmp_path):
    saved = tmp_path / "trajectories"
    assert interop.export_imitation(grasp_demos, saved) == 3
    before = file_digest(umaze_demos)
    assert_clean_error(
        run_cli("import", str(saved), "--from", "imitation", "--task", "grasp", "--out", str(umaze_demos)),
        "exists; import into a new file",
    )
    assert file_digest(umaze_demos) == before


def test_import_into_the_wrong_task_is_refused(grasp_demos, tmp_path):
    saved = tmp_path / "trajectories"
    interop.export_imitation(grasp_demos, saved)
    trajectories = interop.to_imitation(grasp_demos)
    for traj in trajectories:
        traj.infos[-1]["lam_robot"].pop("obs_layout")  # a foreign file: fall back to the task's layout
    message = (
        "trajectory 0 has observations of size 31, but task 'nav-umaze' has 8; import into the task it was recorded in"
    )
    with pytest.raises(LamRobotError, match=f"^{re.escape(message)}$"):
        interop.import_imitation(trajectories, load_task("nav-umaze"), tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()


def test_unknown_minari_dataset_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert_clean_error(
        run_cli(
            "import", "nobody/nothing-v0", "--from", "minari", "--task", "nav-umaze", "--out", str(tmp_path / "x.hdf5")
        ),
        "cannot open Minari dataset 'nobody/nothing-v0'",
    )
