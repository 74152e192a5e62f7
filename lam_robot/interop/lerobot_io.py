"""Demo files to and from LeRobot datasets (format v3.0), written and read directly with pyarrow.

    DIR/meta/info.json                          codebase_version v3.0, fps, features, paths; "lam_robot": ours
    DIR/meta/stats.json                         min, max, mean, std, count, q01..q99 per feature
    DIR/meta/tasks.parquet                      the task's description -> task_index 0
    DIR/meta/episodes/chunk-000/file-000.parquet   one row per episode: episode_index, tasks, length,
                                                data/chunk_index, data/file_index, dataset_from_index,
                                                dataset_to_index, meta/episodes/*; "lam_robot": ours (JSON)
    DIR/data/chunk-000/file-000.parquet         one row per frame (step)

Frame t holds observation.state (every observation key flattened in gymnasium's FlattenObservation
order, dtype as recorded) and action at step t, then next.reward, next.done, next.terminated and
next.truncated after it, and episode_index, frame_index, timestamp (frame_index / fps), index,
task_index. Every other per-step array is a feature of its own (interventions, states, ... with "/"
written "."; zeros in episodes that lack it). The final next observation, the demo's attributes,
masks and input events are in the episode's "lam_robot" JSON; env_args and the observation layout in
info.json's. fps is env_args' control_freq, else 1 / the env's step time. Nothing is dropped.

Videos (observation.images.<camera>, mp4 under videos/) are not written yet: no task observes
images. An observation key with more than one dimension per step is a feature observation.<key>
of its own, where a camera would become observation.images.<camera> with dtype "video".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np

from lam_robot.errors import LamRobotError
from lam_robot.interop import carry
from lam_robot.interop.carry import META
from lam_robot.tasks import TaskSpec

CODEBASE_VERSION = "v3.0"
CHUNK_SIZE = 1000  # files per chunk directory, as LeRobot
DATA_FILE_MB = 100  # LeRobot's default size of one data file
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
STATE = "observation.state"
FEATURES = {
    "actions": "action",
    "rewards": "next.reward",
    "dones": "next.done",
    "terminated": "next.terminated",
    "truncated": "next.truncated",
}
"""Our per-step arrays -> LeRobot's feature names; any other array keeps its path, "/" written "."."""
INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


def feature_name(path: str) -> str:
    """The LeRobot feature of one of our per-step arrays."""
    return FEATURES.get(path, path.replace("/", "."))


def fps_of(env_args: dict[str, Any], task: TaskSpec) -> int | float:
    """Frames per second: env_args' control_freq when the file has it, else 1 / the env's step time."""
    freq = env_args.get("control_freq")
    if freq is None:
        from lam_robot.teleop.session import control_period

        env = task.make_env()
        try:
            freq = 1.0 / control_period(env)
        finally:
            env.close()
    freq = round(float(freq), 6)
    return int(freq) if freq.is_integer() else freq


# --- export ---------------------------------------------------------------------------------------


def export_lerobot(path: str | Path, out: str | Path, overwrite: bool = False) -> carry.Exported:
    """Write a LeRobot v3.0 dataset directory that ``LeRobotDataset(repo_id, root=out)`` opens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    contents = carry.read(path)
    out = Path(out)
    carry.clear_target(out, overwrite, marker=INFO_PATH)
    fps = fps_of(contents.env_args, contents.task)
    layout, features, paths = _features(contents.demos)
    columns: dict[str, list[np.ndarray]] = {name: [] for name in features}
    episodes: list[dict[str, Any]] = []
    files: list[list[int]] = [[]]  # demos per data file, a new file past DATA_FILE_MB
    file_bytes, start = 0, 0
    for i, demo in enumerate(contents.demos):
        frames = _frames(demo, i, start, fps, layout, features, paths)
        size = sum(v.nbytes for v in frames.values())
        if files[-1] and file_bytes + size > DATA_FILE_MB * 2**20:
            files.append([])
            file_bytes = 0
        files[-1].append(i)
        file_bytes += size
        for name, values in frames.items():
            columns[name].append(values)
        meta = {**demo.meta(), "final_observation": {k: carry.pack(v[-1:]) for k, v in demo.obs.items()}}
        chunk, file = divmod(len(files) - 1, CHUNK_SIZE)
        episodes.append(
            {
                "episode_index": i,
                "tasks": [_task_text(contents.task)],
                "length": demo.length,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": start,
                "dataset_to_index": start + demo.length,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                META: json.dumps(meta),
            }
        )
        start += demo.length
    for number, members in enumerate(files):
        chunk, file = divmod(number, CHUNK_SIZE)
        target = out / DATA_PATH.format(chunk_index=chunk, file_index=file)
        target.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({name: _arrow(np.concatenate([columns[name][i] for i in members])) for name in features})
        pq.write_table(table, target)
    episodes_file = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes), episodes_file)
    _write_tasks(out / TASKS_PATH, _task_text(contents.task))
    all_columns = {name: np.concatenate(parts) for name, parts in columns.items()}
    _write_json(out / STATS_PATH, {name: _stats(values) for name, values in all_columns.items()})
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": contents.task.env_id,
        "total_episodes": len(contents.demos),
        "total_frames": start,
        "total_tasks": 1,
        "chunks_size": CHUNK_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(contents.demos)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
        META: {**contents.file_meta(), "observation_layout": layout, "arrays": paths},
    }
    _write_json(out / INFO_PATH, info)
    return carry.Exported(len(contents.demos), contents.dropped())


def _task_text(task: TaskSpec) -> str:
    return task.description or task.name


def _features(demos: list[carry.Demo]) -> tuple[list[list[Any]], dict[str, dict[str, Any]], dict[str, str]]:
    """observation.state's layout [[key, start, stop], ...], the features, and feature -> our array path."""
    first = demos[0]
    vector_keys = [k for k in sorted(first.obs) if first.obs[k].ndim <= 2]
    layout: list[list[Any]] = []
    offset = 0
    for key in vector_keys:
        size = int(np.prod(first.obs[key].shape[1:]))
        layout.append([key, offset, offset + size])
        offset += size
    features: dict[str, dict[str, Any]] = {}
    if vector_keys:
        dtype = np.result_type(*[first.obs[k].dtype for k in vector_keys])
        names = [f"{key}.{i}" for key, lo, hi in layout for i in range(hi - lo)]
        features[STATE] = {"dtype": dtype.name, "shape": [offset], "names": names}
    for key in sorted(first.obs):
        if key not in vector_keys:
            features[f"observation.{key}"] = _feature(first.obs[key])
    paths: dict[str, str] = {}
    for demo in demos:  # arrays that only some demos have (interventions) are features too
        for path, values in demo.steps.items():
            name = feature_name(path)
            if name not in features:
                features[name] = _feature(values)
                paths[name] = path
    for name, index_dtype in INDEX_FEATURES.items():
        features[name] = {"dtype": index_dtype, "shape": [1], "names": None}
    return layout, features, paths


def _feature(values: np.ndarray) -> dict[str, Any]:
    return {"dtype": values.dtype.name, "shape": list(values.shape[1:]) or [1], "names": None}


def _frames(
    demo: carry.Demo,
    episode: int,
    start: int,
    fps: float,
    layout: list[list[Any]],
    features: dict[str, dict[str, Any]],
    paths: dict[str, str],
) -> dict[str, np.ndarray]:
    n = demo.length
    frames: dict[str, np.ndarray] = {}
    if layout:
        dtype = np.dtype(features[STATE]["dtype"])
        frames[STATE] = np.concatenate([demo.obs[k][:-1].reshape(n, -1).astype(dtype) for k, _, _ in layout], axis=1)
    for key in demo.obs:
        if f"observation.{key}" in features:
            frames[f"observation.{key}"] = demo.obs[key][:-1]
    for name, path in paths.items():
        shape = [] if features[name]["shape"] == [1] else features[name]["shape"]
        values = demo.steps.get(path)
        frames[name] = np.zeros((n, *shape), features[name]["dtype"]) if values is None else values
    frames["timestamp"] = (np.arange(n) / fps).astype(np.float32)
    frames["frame_index"] = np.arange(n, dtype=np.int64)
    frames["episode_index"] = np.full(n, episode, np.int64)
    frames["index"] = np.arange(start, start + n, dtype=np.int64)
    frames["task_index"] = np.zeros(n, np.int64)
    return frames


def _arrow(values: np.ndarray) -> Any:
    """A numpy column -> an arrow column: scalars as they are, each further dimension a fixed-size list."""
    import pyarrow as pa

    column = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        column = pa.FixedSizeListArray.from_arrays(column, size)
    return column


def _stats(values: np.ndarray) -> dict[str, list[Any]]:
    """LeRobot's per-feature statistics over all frames (per element of a vector feature)."""
    x = values.reshape(len(values), -1).astype(np.float64)
    out = {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
        "count": np.array([len(x)]),
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(x, q, axis=0)
    return {k: v.tolist() for k, v in out.items()}


def _write_tasks(path: Path, text: str) -> None:
    """meta/tasks.parquet as pandas writes LeRobot's: task strings as the index, a task_index column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([text], pa.string())})
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4))


# --- import ---------------------------------------------------------------------------------------


def import_lerobot(source: str | Path, task: TaskSpec, out: str | Path) -> int:
    """A LeRobot v3.0 dataset directory -> a new demo file of ``task``; returns the number of episodes.
    A dataset lam-robot did not write is read by the task's observation layout (observation.state in
    FlattenObservation order); its last observation stands in for the final next observation."""
    import pyarrow.parquet as pq

    root = Path(source)
    if not (root / INFO_PATH).is_file():
        raise LamRobotError(f"{root}: no {INFO_PATH}; give the root directory of a LeRobot v3.0 dataset")
    info = json.loads((root / INFO_PATH).read_text())
    if not str(info.get("codebase_version", "")).startswith("v3."):
        raise LamRobotError(
            f"{root} is a LeRobot dataset of format {info.get('codebase_version')}; "
            "convert it to v3.0 with LeRobot's convert_dataset_v21_to_v30 first"
        )
    ours = info.get(META)
    env_args = carry.carried_env_args(ours, task, str(root))
    episodes = _read_parquet(pq, sorted((root / "meta" / "episodes").glob("*/*.parquet"))).to_pylist()
    data = _read_parquet(pq, sorted((root / "data").glob("*/*.parquet")))
    features = info["features"]
    columns = {name: _numpy(data.column(name), features[name]) for name in data.column_names if name in features}
    order = np.argsort(columns["index"], kind="stable")
    columns = {name: values[order] for name, values in columns.items()}
    position = {int(index): row for row, index in enumerate(columns["index"])}
    layout = ours["observation_layout"] if ours else _task_layout(task)
    demos = []
    for i, episode in enumerate(sorted(episodes, key=lambda e: e["episode_index"])):
        lo = position[int(episode["dataset_from_index"])]
        rows = slice(lo, lo + int(episode["length"]))
        demos.append(_demo(episode, i, {k: v[rows] for k, v in columns.items()}, layout, ours))
    return carry.write(demos, task, out, env_args)


def _read_parquet(pq: Any, files: list[Path]) -> Any:
    import pyarrow as pa

    if not files:
        raise LamRobotError(f"no parquet files where a LeRobot dataset keeps them ({files})")
    return pa.concat_tables([pq.read_table(f) for f in files])


def _numpy(column: Any, feature: dict[str, Any]) -> np.ndarray:
    """An arrow column (scalars, or nested lists of fixed length) -> (rows, *shape) numpy."""
    import pyarrow as pa

    array = column.combine_chunks()
    while pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        array = array.flatten()
    shape = [] if list(feature["shape"]) == [1] else list(feature["shape"])
    values = np.asarray(array.to_numpy(zero_copy_only=False))
    return values.reshape(len(column), *shape)


def _task_layout(task: TaskSpec) -> list[list[Any]]:
    env = task.make_env()
    space = cast(gym.spaces.Dict, env.observation_space)
    env.close()
    layout: list[list[Any]] = []
    offset = 0
    for key in sorted(space.spaces):
        size = int(np.prod(space[key].shape or ()))
        layout.append([key, offset, offset + size])
        offset += size
    return layout


def _demo(
    episode: dict[str, Any], index: int, frames: dict[str, np.ndarray], layout: list[list[Any]], ours: dict | None
) -> carry.Demo:
    n = int(episode["length"])
    state = frames.get(STATE)
    if state is None:
        raise LamRobotError(f"episode {index} has no {STATE}; lam-robot needs the observation vector")
    if state.shape[1] != layout[-1][2]:
        raise LamRobotError(
            f"episode {index}: {STATE} has size {state.shape[1]}, but the task's observations have "
            f"{layout[-1][2]}; import into the task it was recorded in"
        )
    obs = {key: state[:, lo:hi] for key, lo, hi in layout}
    obs.update(
        {
            name.removeprefix("observation."): v
            for name, v in frames.items()
            if name.startswith("observation.") and name != STATE
        }
    )
    if ours is None:
        return _foreign_demo(index, n, obs, frames)
    meta = json.loads(episode[META])
    final = {k: carry.unpack(v) for k, v in meta["final_observation"].items()}
    obs = {k: np.concatenate([v.reshape(n, *meta["obs"][k][1]), final[k].astype(v.dtype)]) for k, v in obs.items()}
    steps = {path: frames[feature_name(path)] for path in meta["steps"]}
    return carry.demo_from_meta(meta, index, obs, steps, {})


def _foreign_demo(index: int, n: int, obs: dict[str, np.ndarray], frames: dict[str, np.ndarray]) -> carry.Demo:
    """A dataset lam-robot did not write: done ends an episode as terminated unless told otherwise."""
    steps = {"actions": frames["action"], "rewards": frames.get("next.reward", np.zeros(n))}
    done = frames.get("next.done", np.zeros(n, bool)).astype(bool)
    steps["terminated"] = frames.get("next.terminated", done).astype(bool)
    steps["truncated"] = frames.get("next.truncated", np.zeros(n, bool)).astype(bool)
    if not (steps["terminated"][-1] or steps["truncated"][-1]):
        steps["truncated"][-1] = True
    success = bool(frames["next.success"][-1]) if "next.success" in frames else False
    obs = {k: np.concatenate([v, v[-1:]]) for k, v in obs.items()}
    return carry.demo_from_meta(None, index, obs, steps, {"source": "teleop", "seed": index, "success": success})
