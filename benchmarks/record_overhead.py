"""Recording overhead: wall time of env + expert with the recorder against without it, in one run.

The recorded variant is what ``lam-robot record`` runs (``record_episodes``: state capture and the
writer); ``--background`` adds a third variant with the writer in a child process whose HDF5 writes
overlap the simulation (``record_episodes(background_writer=True)``).

    python benchmarks/record_overhead.py [--repeats 3] [--out benchmarks/results/record_overhead.json]

The two variants alternate (A B A B ...) so machine noise hits both; the ratio of medians is
the number to read. Target: recorded / plain <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.recording import record_episodes  # noqa: E402
from lam_robot.sources import resolve_policy  # noqa: E402
from lam_robot.rollout import run_episodes  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402

SETTINGS = {"nav-umaze": 300, "grasp": 100}
TARGET = 1.05


def timed_run(task, expert, episodes: int, out: Path | None, background: bool = False) -> float:
    start = time.perf_counter()
    if out is None:  # env + expert alone: no MuJoCo state capture either
        for _ in run_episodes(task, expert, episodes, seed=0, states=False):
            pass
    else:
        record_episodes(task, expert, out, episodes, "expert", seed=0, background_writer=background)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--background", action="store_true", help="also time the writer in a child process")
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "record_overhead.json")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.tasks:
            episodes = SETTINGS[name]
            task = load_task(name)
            env = task.make_env()
            expert = resolve_policy("expert", task, env)
            env.close()
            timed_run(task, expert, 5, None)  # warm-up: imports, env construction caches
            plain, recorded, background = [], [], []
            for r in range(args.repeats):
                plain.append(timed_run(task, expert, episodes, None))
                recorded.append(timed_run(task, expert, episodes, Path(tmp) / f"{name}-{r}.hdf5"))
                if args.background:
                    path = Path(tmp) / f"{name}-background-{r}.hdf5"
                    background.append(timed_run(task, expert, episodes, path, background=True))
            size = (Path(tmp) / f"{name}-0.hdf5").stat().st_size
            ratio = statistics.median(recorded) / statistics.median(plain)
            results[name] = {"episodes": episodes, "plain_s": plain, "recorded_s": recorded,
                             "file_mb": round(size / 1e6, 2), "ratio": round(ratio, 4), "target": TARGET,
                             "meets_target": ratio <= TARGET, "load_avg_1min": os.getloadavg()[0]}
            line = (f"{name}: {episodes} episodes, plain {statistics.median(plain):.2f}s, recorded "
                    f"{statistics.median(recorded):.2f}s, ratio {ratio:.3f} (target <= {TARGET})")
            if background:
                results[name]["background_s"] = background
                results[name]["background_ratio"] = round(statistics.median(background) / statistics.median(plain), 4)
                line += f", writer in a child process {results[name]['background_ratio']:.3f}"
            print(f"{line}, file {size / 1e6:.1f} MB, load {os.getloadavg()[0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
