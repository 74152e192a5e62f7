"""LeRobot itself opens our export: LeRobotDataset (lerobot==0.4.4, in a venv of its own) against the HDF5.

    make check-lerobot        # = python benchmarks/lerobot_check.py

lerobot 0.4.4 (its last release for Python 3.11, already dataset format v3.0) needs torch < 2.11, so it
cannot live in the project's environment. This script builds benchmarks/.work/lerobot-venv once
(pip install lerobot==0.4.4: a few GB, minutes), records tiny real files (grasp from the recorder; nav-umaze
rewritten with teleop sources, input events, interventions and a per-step `states` array), exports each
with `lam-robot export --to lerobot`, opens it offline with ``LeRobotDataset(repo_id, root=DIR)`` in that
venv, iterates every frame and compares it array for array with the HDF5 file: observation.state,
action, next.reward, next.done, next.terminated, next.truncated, interventions, states, episode_index,
frame_index, index, timestamp, task, fps and lengths. Writes benchmarks/results/lerobot_check.json;
exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.data.dataset import DemoFile  # noqa: E402
from lam_robot.data.writer import DemoWriter  # noqa: E402
from lam_robot.interop import export_lerobot  # noqa: E402
from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.rollout import Episode  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.teleop.events import InputEvent, events_to_array  # noqa: E402

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work"
VENV = WORK / "lerobot-venv"
LEROBOT = "lerobot==0.4.4"

# Runs inside the lerobot venv: every frame of each dataset as LeRobotDataset serves it, saved as .npz.
READER = r"""
import json, sys
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
import lerobot, torch
out = {"lerobot": lerobot.__version__, "torch": torch.__version__, "datasets": {}}
for name, root in json.loads(sys.argv[1]).items():
    ds = LeRobotDataset(repo_id=f"lamrobot/{name}", root=root)
    frames = [ds[i] for i in range(len(ds))]
    arrays, dtypes = {}, {}
    for key, value in frames[0].items():
        if isinstance(value, torch.Tensor):
            arrays[key] = np.stack([f[key].numpy() for f in frames])
            dtypes[key] = str(value.dtype)
    np.savez(f"{root}/frames.npz", **arrays)
    out["datasets"][name] = {"len": len(ds), "num_episodes": ds.num_episodes, "fps": ds.fps,
                             "tasks": sorted({f["task"] for f in frames}), "dtypes": dtypes}
print(json.dumps(out))
"""


def ensure_venv() -> float:
    """Create the lerobot venv if it lacks lerobot; returns the seconds spent."""
    start = time.perf_counter()
    python = VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import lerobot.datasets.lerobot_dataset"],
                                          capture_output=True).returncode == 0:
        return 0.0
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(["python3.11", "-m", "venv", VENV], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", LEROBOT], check=True)
    return time.perf_counter() - start


def make_files(work: Path) -> dict[str, Path]:
    """Tiny real files: grasp as recorded, and nav-umaze rewritten with what teleop adds."""
    grasp = work / "grasp.hdf5"
    record_expert(load_task("grasp"), grasp, 2)
    task = load_task("nav-umaze")
    plain = work / "umaze-expert.hdf5"
    record_expert(task, plain, 3)
    with DemoFile(plain) as demos:
        episodes = [demos.episode(n) for n in demos.demo_names]
    teleop = work / "umaze-teleop.hdf5"
    rng = np.random.default_rng(0)
    with DemoWriter(teleop, task) as writer:
        for i, ep in enumerate(episodes):
            n = len(ep["actions"])
            episode = Episode(ep["obs"], ep["next_obs"], ep["actions"], ep["rewards"], ep["terminated"],
                              ep["truncated"], bool(ep["attrs"]["success"]), int(ep["attrs"]["seed"]), i)
            events = events_to_array([InputEvent(0, 0.0, "w", 1.0), InputEvent(2, 0.02, "w", 0.0)])
            writer.add(episode, ["teleop", "policy", "expert"][i], interventions=rng.random(n) < 0.3,
                       input_events=events, input_device={"device": "keyboard", "gain": 1.0, "dead_zone": 0.1},
                       extras={"states": rng.normal(size=(n, 4))})
    return {"grasp": grasp, "umaze-teleop": teleop}


def expected(path: Path) -> dict[str, np.ndarray]:
    """The frames the HDF5 file says LeRobot must serve, feature by feature."""
    columns: dict[str, list[np.ndarray]] = {}
    with DemoFile(path) as demos:
        fps = json.loads((path.parent / path.stem / "meta/info.json").read_text())["fps"]
        start = 0
        for e, name in enumerate(demos.demo_names):
            demo = demos.demo(name)
            n = int(demo.attrs["num_samples"])
            parts = {
                "observation.state": np.concatenate([demo["obs"][k][()].reshape(n, -1) for k in sorted(demo["obs"])],
                                                    axis=1),
                "action": demo["actions"][()],
                "next.reward": demo["rewards"][()],
                "next.done": demo["dones"][()],
                "next.terminated": demo["terminated"][()],
                "next.truncated": demo["truncated"][()],
                "episode_index": np.full(n, e),
                "frame_index": np.arange(n),
                "index": np.arange(start, start + n),
                "timestamp": (np.arange(n) / fps).astype(np.float32),
            }
            for key in ("interventions", "states"):
                if key in demo:
                    parts[key] = demo[key][()]
            for key, values in parts.items():
                columns.setdefault(key, []).append(values)
            start += n
    return {k: np.concatenate(v) for k, v in columns.items()}


def same(served: np.ndarray, recorded: np.ndarray) -> bool:
    """Equal element for element, after the cast LeRobotDataset makes: it builds each float tensor with
    torch.tensor() from the Python lists `datasets` returns, so float64 features come out float32."""
    return served.dtype == recorded.astype(served.dtype).dtype and np.array_equal(
        served.reshape(recorded.shape), recorded.astype(served.dtype)
    )


def main() -> int:
    """Build the venv if needed, export, load with LeRobotDataset, compare; 0 when every frame matches."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "lerobot_check.json")
    args = parser.parse_args()
    started = time.perf_counter()
    install_s = ensure_venv()
    work = WORK / "lerobot-check"
    subprocess.run(["rm", "-rf", work], check=True)
    work.mkdir(parents=True)
    files = make_files(work)
    roots = {}
    for name, path in files.items():
        root = path.parent / path.stem  # expected() reads its fps from there
        export_lerobot(path, root)
        roots[name] = str(root)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(WORK / "hf-home"))
    read = subprocess.run([VENV / "bin" / "python", "-c", READER, json.dumps(roots)], capture_output=True,
                          text=True, env=env)
    if read.returncode != 0:
        print(read.stderr[-4000:], file=sys.stderr)
        result = {"passed": False, "error": read.stderr.strip().splitlines()[-1] if read.stderr else "no output"}
    else:
        served = json.loads(read.stdout.strip().splitlines()[-1])
        result = {
            "lerobot": served["lerobot"],
            "torch": served["torch"],
            "note": "LeRobotDataset serves float64 features (observation.state, next.reward, states) as float32 "
            "tensors; they are compared with the HDF5 arrays cast to float32. The parquet keeps float64, and "
            "`lam-robot import --from lerobot` gives back the exact file (tests/test_interop.py).",
            "datasets": {},
            "passed": True,
        }
        for name, path in files.items():
            want = expected(path)
            got = dict(np.load(Path(roots[name]) / "frames.npz"))
            meta = served["datasets"][name]
            with DemoFile(path) as demos:
                task_text = demos.task.description or demos.task.name
                episodes = len(demos)
            mismatches = [k for k in want if k not in got or not same(got[k], want[k])]
            mismatches += [f"{k} (served, not in the file)" for k in got if k not in want and k != "task_index"]
            if meta["len"] != len(want["action"]) or meta["num_episodes"] != episodes:
                mismatches.append("length or episode count")
            if meta["tasks"] != [task_text]:
                mismatches.append("task")
            result["datasets"][name] = {
                "frames": meta["len"],
                "episodes": meta["num_episodes"],
                "fps": meta["fps"],
                "compared": sorted(want) + ["task", "fps", "len", "num_episodes"],
                "served_dtypes": meta["dtypes"],
                "file_dtypes": {k: str(v.dtype) for k, v in want.items()},
                "mismatches": mismatches,
            }
            result["passed"] = result["passed"] and not mismatches
    result["venv_install_s"] = round(install_s, 1)
    result["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
