"""Demo files to and from `imitation`, Minari and LeRobot v3.0: a round trip gives back every dataset
and attribute of the file (sources, interventions, input events, extra per-step arrays, masks, env_args)."""

import json
import re

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from lam_robot import interop
from lam_robot.data.dataset import DemoFile
from lam_robot.data.writer import DemoWriter, env_args_for
from lam_robot.errors import LamRobotError
from lam_robot.recording import record_expert
from lam_robot.rollout import Episode
from lam_robot.tasks import load_task
from lam_robot.teleop.events import InputEvent, events_to_array
from tests.conftest import assert_clean_error, file_digest, hdf5_contents, run_cli

FORMATS = ("imitation", "minari", "lerobot")
DROPPED = {"imitation": [], "minari": [], "lerobot": []}  # the README table: every format keeps every field


def file_contents(path):
    """Every dataset (values and dtype) and attribute of the whole file: data/ and mask/."""
    return hdf5_contents(path)


def assert_same_file(a, b):
    left, right = file_contents(a), file_contents(b)
    assert left.keys() == right.keys()
    for key in left:
        if key.endswith("@attrs"):
            assert left[key] == right[key], key
            assert [type(v) for v in left[key].values()] == [type(v) for v in right[key].values()], key
        else:
            assert left[key].dtype == right[key].dtype, key
            np.testing.assert_array_equal(left[key], right[key], err_msg=key)


@pytest.fixture(scope="module")
def teleop_like(tmp_path_factory):
    """Three real nav-umaze episodes rewritten with what teleop, interventions and a replay file add:
    sources teleop/policy/expert, input events with a device, interventions, a per-step `states`
    array, chosen masks (one custom), and env_args with a control frequency."""
    tmp = tmp_path_factory.mktemp("teleop_like")
    task = load_task("nav-umaze")
    record_expert(task, tmp / "expert.hdf5", 3)
    with DemoFile(tmp / "expert.hdf5") as demos:
        episodes = [demos.episode(name) for name in demos.demo_names]
    path = tmp / "teleop_like.hdf5"
    rng = np.random.default_rng(0)
    with DemoWriter(path, task, env_args={**env_args_for(task), "control_freq": 100.0}) as writer:
        for i, ep in enumerate(episodes):
            n = len(ep["actions"])
            episode = Episode(ep["obs"], ep["next_obs"], ep["actions"], ep["rewards"], ep["terminated"],
                              ep["truncated"], bool(ep["attrs"]["success"]), int(ep["attrs"]["seed"]), i)
            if i == 0:
                events = events_to_array([InputEvent(0, 0.0, "w", 1.0), InputEvent(3, 0.031, "w", 0.0),
                                          InputEvent(5, 0.052, "space", 1.0)])
                writer.add(episode, "teleop", input_events=events,
                           input_device={"device": "keyboard", "gain": 0.7, "dead_zone": 0.1}, splits=["train"])
            elif i == 1:
                writer.add(episode, "policy", interventions=rng.random(n) < 0.3,
                           extras={"states": rng.normal(size=(n, 5))}, splits=["valid"])
            else:
                writer.add(episode, "expert", splits=["train", "hard"])
    return path


def export_then_import(fmt, source, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    target = "lamrobot/roundtrip-v0" if fmt == "minari" else str(tmp_path / fmt)
    exported = getattr(interop, f"export_{fmt}")(source, target)
    back = tmp_path / "back.hdf5"
    imported = getattr(interop, f"import_{fmt}")(target, load_task("nav-umaze"), back)
    return exported, imported, back


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_every_dataset_and_attribute(fmt, teleop_like, tmp_path, monkeypatch):
    exported, imported, back = export_then_import(fmt, teleop_like, tmp_path, monkeypatch)
    assert exported == (3, DROPPED[fmt]) and imported == 3
    assert_same_file(teleop_like, back)
    with h5py.File(back) as f:  # the fixture's fields are there to be compared
        assert f["data/demo_0"].attrs["source"] == "teleop" and len(f["data/demo_0/input_events"]) == 3
        assert f["data/demo_1/interventions"][()].any() and f["data/demo_1/states"].shape[1] == 5
        assert json.loads(f["data"].attrs["env_args"])["control_freq"] == 100.0
        assert [n.decode() for n in f["mask/hard"][()]] == ["demo_2"]


def test_round_trip_of_a_recorded_file_through_the_cli(grasp_demos, tmp_path):
    """The plain recorder's file (grasp: no control_freq, fps from the env) through the CLI, twice."""
    saved, back = tmp_path / "lerobot", tmp_path / "back.hdf5"
    exported = run_cli("export", str(grasp_demos), "--to", "lerobot", "--out", str(saved))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip().splitlines() == [f"exported 3 demos of {grasp_demos} to lerobot {saved}"]
    assert json.loads((saved / "meta/info.json").read_text())["fps"] == 25  # FetchPickAndPlace: 0.04 s a step
    assert_clean_error(run_cli("export", str(grasp_demos), "--to", "lerobot", "--out", str(saved)),
                       "exists; export into a new directory or pass --overwrite")
    again = run_cli("export", str(grasp_demos), "--to", "lerobot", "--out", str(saved), "--overwrite")
    assert again.returncode == 0, again.stderr
    imported = run_cli("import", str(saved), "--from", "lerobot", "--task", "grasp", "--out", str(back))
    assert imported.returncode == 0, imported.stderr
    assert_same_file(grasp_demos, back)


def test_lerobot_layout_is_v3(teleop_like, tmp_path):
    out = tmp_path / "ds"
    interop.export_lerobot(teleop_like, out)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 100 and info["total_episodes"] == 3
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert {"observation.state", "action", "next.reward", "next.done", "next.terminated", "next.truncated",
            "interventions", "states", "episode_index", "frame_index", "timestamp", "index",
            "task_index"} == set(info["features"])
    assert info["features"]["observation.state"]["shape"] == [8]  # achieved_goal, desired_goal, observation
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.num_rows == info["total_frames"] and set(data.column_names) == set(info["features"])
    np.testing.assert_allclose(data.column("timestamp").to_numpy()[1], 0.01)
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["dataset_from_index"] for e in episodes] == [0, episodes[0]["length"],
                                                         episodes[0]["length"] + episodes[1]["length"]]
    assert episodes[0]["tasks"] == [load_task("nav-umaze").description]
    assert {"data/chunk_index", "data/file_index", "dataset_to_index", "meta/episodes/file_index"} <= set(episodes[0])
    import pandas as pd

    tasks = pd.read_parquet(out / "meta/tasks.parquet")  # as LeRobot reads it: the task text is the index
    assert tasks.iloc[0].name == load_task("nav-umaze").description and tasks.iloc[0]["task_index"] == 0
    stats = json.loads((out / "meta/stats.json").read_text())
    assert len(stats["observation.state"]["mean"]) == 8 and stats["action"]["count"] == [info["total_frames"]]
    assert {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"} == set(stats["action"])


def test_lerobot_dataset_lam_robot_did_not_write(umaze_demos, tmp_path):
    """Without our metadata: observation.state split by the task's layout, the last observation repeated."""
    out = tmp_path / "ds"
    interop.export_lerobot(umaze_demos, out)
    info = json.loads((out / "meta/info.json").read_text())
    del info["lam_robot"]
    (out / "meta/info.json").write_text(json.dumps(info))
    back = tmp_path / "back.hdf5"
    assert interop.import_lerobot(out, load_task("nav-umaze"), back) == 12
    with DemoFile(umaze_demos) as a, DemoFile(back) as b:
        first, again = a.episode("demo_0"), b.episode("demo_0")
        for key in ("actions", "rewards", "terminated"):
            np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first["obs"]["observation"], again["obs"]["observation"])
        assert again["attrs"]["source"] == "teleop"


def test_imitation_in_memory_trajectories(grasp_demos):
    trajectories = interop.to_imitation(grasp_demos)
    assert len(trajectories) == 3
    first = trajectories[0]
    assert first.obs.shape == (len(first.acts) + 1, 3 + 3 + 25)  # achieved_goal, desired_goal, observation
    assert first.rews.shape == (len(first.acts),)


def test_minari_overwrite_and_load_dataset(umaze_demos, tmp_path, monkeypatch):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert interop.export_minari(umaze_demos, "lamrobot/umaze-test-v0").demos == 12
    dataset = minari.load_dataset("lamrobot/umaze-test-v0")
    assert dataset.total_episodes == 12
    episode = next(dataset.iterate_episodes())
    assert set(episode.observations) == {"observation", "achieved_goal", "desired_goal"}
    assert_clean_error(run_cli("export", str(umaze_demos), "--to", "minari", "--out", "lamrobot/umaze-test-v0"),
                       "exists; choose another id or pass --overwrite")
    assert interop.export_minari(umaze_demos, "lamrobot/umaze-test-v0", overwrite=True).demos == 12


def test_import_refuses_an_existing_file(grasp_demos, umaze_demos, tmp_path):
    saved = tmp_path / "trajectories"
    assert interop.export_imitation(grasp_demos, saved).demos == 3
    before = file_digest(umaze_demos)
    assert_clean_error(
        run_cli("import", str(saved), "--from", "imitation", "--task", "grasp", "--out", str(umaze_demos)),
        "exists; import into a new file",
    )
    assert file_digest(umaze_demos) == before


def test_import_into_the_wrong_task_is_refused(grasp_demos, tmp_path):
    saved = tmp_path / "ds"
    interop.export_lerobot(grasp_demos, saved)
    with pytest.raises(LamRobotError, match="recorded in task 'grasp', not 'nav-umaze'; import it with --task grasp"):
        interop.import_lerobot(saved, load_task("nav-umaze"), tmp_path / "x.hdf5")
    trajectories = interop.to_imitation(grasp_demos)
    for traj in trajectories:
        traj.infos[-1].pop("lam_robot")  # a foreign file: fall back to the task's layout
    message = (
        "trajectory 0 has observations of size 31, but task 'nav-umaze' has 8; import into the task it was recorded in"
    )
    with pytest.raises(LamRobotError, match=f"^{re.escape(message)}$"):
        interop.import_imitation(trajectories, load_task("nav-umaze"), tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()


def test_unknown_sources_are_clean_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    assert_clean_error(run_cli("import", "nobody/nothing-v0", "--from", "minari", "--task", "nav-umaze",
                               "--out", str(tmp_path / "x.hdf5")), "cannot open Minari dataset 'nobody/nothing-v0'")
    assert_clean_error(run_cli("import", str(tmp_path), "--from", "lerobot", "--task", "nav-umaze",
                               "--out", str(tmp_path / "x.hdf5")), "no meta/info.json; give the root directory")


def test_the_exporter_names_what_it_drops_in_one_line(umaze_demos, tmp_path):
    """Demo names with a gap cannot come back (import numbers from demo_0): the export says so."""
    gappy = tmp_path / "gappy.hdf5"
    gappy.write_bytes(umaze_demos.read_bytes())
    with h5py.File(gappy, "a") as f:
        f["data"].attrs["total"] -= f["data/demo_1"].attrs["num_samples"]
        del f["data/demo_1"]
    saved = tmp_path / "trajectories"
    exported = run_cli("export", str(gappy), "--to", "imitation", "--out", str(saved))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip().splitlines()[1:] == [
        "dropped (not kept by imitation): demo names (import numbers them from demo_0)"]
