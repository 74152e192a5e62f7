"""Scaling with Ray workers on nav-umaze: env steps/s of recording and of fine-tuning's env stepping.

    python benchmarks/scaling.py [--repeats 2] [--episodes 200] [--steps 300]
        [--out benchmarks/results/scaling.json]   (also writes scaling.md)

record: the expert (noise 0.3) recorded with no workers (one process), then with 1 and 2 Ray workers; env
steps/s over the whole call (the workers' start-up included: a few seconds to import MuJoCo and build envs),
and "steady" from the first episode written to the end. Ray itself is started once beforehand (~4 s here,
once per command).
finetune env stepping: the fine-tuning envs (history wrapper, 8 envs) stepped with random actions through
SB3's DummyVecEnv (one process), SubprocVecEnv (one process per env) and RayVecEnv at 1, 2 and 8 workers;
no PPO update, which runs in the driver whatever the workers.
Variants alternate within each repeat so machine noise hits all; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

import lam_robot as lr  # noqa: E402
from lam_robot.recording import record_episodes  # noqa: E402
from lam_robot.scale.ray_workers import connect  # noqa: E402

TASK = "nav-umaze"
N_ENVS = 8
CONTEXT = 10


def record_rate(out: Path, episodes: int, workers: int | None) -> tuple[float, float]:
    """Env steps/s of the whole call, and from the first episode written on (without the workers' start)."""
    task = lr.load_task(TASK)
    policy = "expert" if workers else lr.load_policy("expert", task)
    marks: list[tuple[float, int]] = []
    start = time.perf_counter()
    stats = record_episodes(
        task,
        policy,
        out,
        episodes,
        "expert",
        noise=0.3,
        workers=workers,
        on_episode=lambda s: marks.append((time.perf_counter(), s.steps)),
    )
    end = time.perf_counter()
    return stats.steps / (end - start), (stats.steps - marks[0][1]) / (end - marks[0][0])


def make_venv(kind: str):
    """Eight fine-tuning envs of nav-umaze in the VecEnv ``kind`` names."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from lam_robot.scale.ray_vec_env import RayVecEnv
    from lam_robot.train.finetune import make_env_fn

    task = lr.load_task(TASK)
    fns = [make_env_fn(task, CONTEXT, 0, i) for i in range(N_ENVS)]
    if kind == "dummy":
        return DummyVecEnv(fns)
    if kind == "subproc":
        return SubprocVecEnv(fns, start_method="forkserver")
    return RayVecEnv(fns, workers=int(kind.removeprefix("ray-")))


def stepping_rate(kind: str, steps: int) -> float:
    """Env steps/s of ``steps`` vec-env steps with random actions (construction and reset not counted)."""
    venv = make_venv(kind)
    try:
        venv.reset()
        rng = np.random.default_rng(0)
        actions = rng.uniform(-1, 1, size=(steps, N_ENVS, 2)).astype(np.float32)
        start = time.perf_counter()
        for t in range(steps):
            venv.step(actions[t])
        return steps * N_ENVS / (time.perf_counter() - start)
    finally:
        venv.close()


def main() -> None:
    """Run every variant ``--repeats`` times, alternating; write the JSON and Markdown results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=200, help="episodes recorded per variant")
    parser.add_argument("--steps", type=int, default=300, help="vec-env steps (x 8 envs) per variant")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaling.json")
    args = parser.parse_args()
    connect(None, N_ENVS)  # one local Ray for every variant, with a CPU slot per actor of the 8-worker one
    record_variants: dict[str, int | None] = {"one process": None, "ray 1 worker": 1, "ray 2 workers": 2}
    step_variants = {
        "DummyVecEnv": "dummy",
        "SubprocVecEnv": "subproc",
        "ray 1 worker": "ray-1",
        "ray 2 workers": "ray-2",
        "ray 8 workers": "ray-8",
    }
    record: dict[str, list[float]] = {k: [] for k in record_variants}
    steady: dict[str, list[float]] = {k: [] for k in record_variants}
    stepping: dict[str, list[float]] = {k: [] for k in step_variants}
    with tempfile.TemporaryDirectory() as tmp:
        record_rate(Path(tmp) / "warm.hdf5", 4, 2)  # warm-up: imports, env caches, Ray's worker pool
        stepping_rate("ray-2", 10)
        for r in range(args.repeats):
            for name, workers in record_variants.items():
                whole, after_start = record_rate(Path(tmp) / f"{r}-{workers}.hdf5", args.episodes, workers)
                record[name].append(whole)
                steady[name].append(after_start)
                print(f"record {name}: {whole:.0f} env steps/s ({after_start:.0f} steady)", flush=True)
            for name, kind in step_variants.items():
                stepping[name].append(stepping_rate(kind, args.steps))
                print(f"finetune env stepping {name}: {stepping[name][-1]:.0f} env steps/s", flush=True)

    def summary(runs: dict[str, list[float]], base: str) -> dict:
        ref = statistics.median(runs[base])
        return {
            k: {
                "steps_per_s": [round(x) for x in v],
                "median": round(statistics.median(v)),
                "vs_" + base.replace(" ", "_"): round(statistics.median(v) / ref, 2),
            }
            for k, v in runs.items()
        }

    results = {
        "cpu_count": os.cpu_count(),
        "task": TASK,
        "repeats": args.repeats,
        "record": {"episodes": args.episodes, "noise": 0.3, **summary(record, "one process")},
        "record_steady": summary(steady, "one process"),
        "finetune_env_stepping": {"n_envs": N_ENVS, "steps": args.steps, **summary(stepping, "DummyVecEnv")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# Scaling with Ray workers ({TASK}, {os.cpu_count()} CPUs, median of {args.repeats})",
        "",
        "| job | variant | env steps/s | ratio |",
        "|---|---|---|---|",
    ]
    jobs = (
        ("record", record, "one process"),
        ("record, steady (from the first episode)", steady, "one process"),
        ("finetune env stepping", stepping, "DummyVecEnv"),
    )
    for job, runs, base in jobs:
        ref = statistics.median(runs[base])
        for name, v in runs.items():
            lines.append(f"| {job} | {name} | {statistics.median(v):,.0f} | {statistics.median(v) / ref:.2f}× |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
