"""`lam-robot inspect`: a summary of good files, one clean line for every kind of bad file."""

import json
import shutil

import h5py
import numpy as np
import pytest

from tests.conftest import assert_clean_error, file_digest, run_cli


def test_inspect_summarises_a_recording(umaze_demos):
    result = run_cli("inspect", str(umaze_demos), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["task"] == "nav-umaze" and summary["env_id"] == "PointMaze_UMaze-v3"
    assert summary["demos"] == 12 and summary["sources"] == {"expert": 12}
    assert summary["success_rate"] == 1.0
    assert summary["obs"] == {"achieved_goal": [2], "desired_goal": [2], "observation": [4]}
    assert summary["action_dim"] == 2 and all(-1 <= v <= 1 for v in summary["action_min"] + summary["action_max"])
    assert summary["splits"] == {"train": 10, "valid": 2}  # demo_1 and demo_11 (schema.is_valid_split)
    with h5py.File(umaze_demos) as f:
        assert summary["steps"] == f["data"].attrs["total"]
    text = run_cli("inspect", str(umaze_demos))
    assert text.returncode == 0 and "demos 12" in text.stdout and "success 100.0%" in text.stdout


def _copy(src, tmp_path, name="bad.hdf5"):
    dst = tmp_path / name
    shutil.copyfile(src, dst)
    return dst


def _nan_in_actions(path):
    with h5py.File(path, "a") as f:
        f["data/demo_3/actions"][5, 0] = np.nan


def _inf_in_obs(path):
    with h5py.File(path, "a") as f:
        f["data/demo_0/obs/observation"][2, 1] = np.inf


def _short_array(path):
    with h5py.File(path, "a") as f:
        actions = f["data/demo_1/actions"][()]
        del f["data/demo_1/actions"]
        f["data/demo_1/actions"] = actions[:-3]


def _no_demos(path):
    with h5py.File(path, "a") as f:
        for name in list(f["data"]):
            del f["data"][name]
        f["data"].attrs["total"] = 0


def _no_env_args(path):
    with h5py.File(path, "a") as f:
        del f["data"].attrs["env_args"]


def _missing_attr(path):
    with h5py.File(path, "a") as f:
        del f["data/demo_2"].attrs["num_samples"]


BAD_FILES = {
    "nan_actions": (_nan_in_actions, "demo_3/actions contains NaN or inf"),
    "inf_obs": (_inf_in_obs, "demo_0/obs/observation contains NaN or inf"),
    "length_mismatch": (_short_array, "demo_1/actions has"),
    "no_demos": (_no_demos, "no demos"),
    "no_env_args": (_no_env_args, "no 'env_args'"),
    "missing_attr": (_missing_attr, "demo_2 has no 'num_samples'"),
}




@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_content_is_one_clean_line_and_file_untouched(umaze_demos, tmp_path, case):
    damage, message = BAD_FILES[case]
    path = _copy(umaze_demos, tmp_path)
    damage(path)
    before = file_digest(path)
    assert_clean_error(run_cli("inspect", str(path)), message)
    assert file_digest(path) == before


def test_missing_path(tmp_path):
    assert_clean_error(run_cli("inspect", str(tmp_path / "nope.hdf5")), "no such file")


def test_directory(tmp_path):
    assert_clean_error(run_cli("inspect", str(tmp_path)), "is a directory")


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.hdf5"
    path.write_text("just some text\n")
    assert_clean_error(run_cli("inspect", str(path)), "is not an HDF5 file")
    assert path.read_text() == "just some text\n"


def test_truncated_file(umaze_demos, tmp_path):
    path = tmp_path / "truncated.hdf5"
    path.write_bytes(umaze_demos.read_bytes()[: umaze_demos.stat().st_size // 2])
    before = file_digest(path)
    assert_clean_error(run_cli("inspect", str(path)), "truncated or corrupt")
    assert file_digest(path) == before


def test_hdf5_of_another_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((4, 8, 8))
    before = file_digest(path)
    assert_clean_error(run_cli("inspect", str(path)), "not a lam-robot/robomimic demo file")
    assert file_digest(path) == before
