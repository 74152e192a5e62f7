"""Behaviour-cloning learning targets: success against number of demos, NLL against MSE.

    python benchmarks/bc_targets.py                      # the full grid (about an hour on 2 CPU cores)
    python benchmarks/bc_targets.py --quick              # one seed, fewer demos: a smoke run

For each task and demo count, expert demos are recorded once (seed 0), the Transformer is
trained with each loss and training seed for a fixed number of gradient steps, and the
best checkpoint is evaluated on 50 unseen seeded episodes (seeds 1000+). Results are
cached per run in the JSON file, so an interrupted benchmark resumes where it stopped.
Writes benchmarks/results/bc_targets.{json,md} and bc_demos_sweep.png.
Targets: BC from 100 demos: grasp >= 90%, nav-medium >= 95%.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.data.dataset import DemoFile  # noqa: E402
from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.evaluation import evaluate_policy, wilson_interval  # noqa: E402
from lam_robot.policy.bc_policy import TransformerPolicy  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.config import BCConfig  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TARGETS = {"grasp": 0.90, "nav-medium": 0.95}


def epochs_for(data: Path, steps: int, batch_size: int, context: int) -> int:
    with DemoFile(data) as demos:
        windows = sum(len(e.obs) for e in demos.policy_episodes("train"))
    return max(1, math.ceil(steps / math.ceil(windows / batch_size)))


def run_one(task_name: str, demos: int, loss: str, seed: int, args, workdir: Path) -> dict:
    data = workdir / f"{task_name}-{demos}.hdf5"
    if not data.exists():
        record_expert(load_task(task_name), data, demos)
    base = BCConfig(data=str(data), out=str(workdir / f"{task_name}-{demos}-{loss}-{seed}"), loss=loss, seed=seed)
    epochs = epochs_for(data, args.steps, base.batch_size, base.context)
    config = BCConfig(**{**base.__dict__, "epochs": epochs})
    start = time.perf_counter()
    train_bc(config, overwrite=True, progress=False)
    train_s = time.perf_counter() - start
    policy = TransformerPolicy.load(config.out)
    result = evaluate_policy(load_task(task_name), policy, "bc", args.episodes, seed=1000, n_envs=5)
    return {"task": task_name, "demos": demos, "loss": loss, "seed": seed, "epochs": epochs, "steps": args.steps,
            "success_rate": result.success_rate, "successes": result.successes, "episodes": result.episodes,
            "ci_low": result.ci_low, "ci_high": result.ci_high, "train_seconds": round(train_s, 1)}


def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["demos"], r["loss"]), []).append(r)
    rows = []
    for (task, demos, loss), rs in sorted(groups.items()):
        successes, episodes = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        low, high = wilson_interval(successes, episodes)
        rows.append({"task": task, "demos": demos, "loss": loss, "seeds": len(rs),
                     "per_seed": [round(r["success_rate"], 3) for r in rs],
                     "success_rate": successes / episodes, "ci_low": low, "ci_high": high,
                     "target": TARGETS.get(task) if demos == 100 else None})
    return rows


def write_report(rows: list[dict], md: Path, png: Path) -> None:
    lines = ["| task | demos | loss | seeds | success (pooled) | 95% Wilson CI | per seed | target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = f">= {100 * r['target']:.0f}%" if r["target"] else ""
        lines.append(f"| {r['task']} | {r['demos']} | {r['loss']} | {r['seeds']} | {100 * r['success_rate']:.1f}% | "
                     f"{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}% | "
                     f"{', '.join(f'{100 * s:.0f}%' for s in r['per_seed'])} | {target} |")
    md.write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for loss, marker in (("nll", "o"), ("mse", "s")):
        pts = [r for r in rows if r["task"] == "grasp" and r["loss"] == loss]
        if not pts:
            continue
        x = [r["demos"] for r in pts]
        y = [r["success_rate"] for r in pts]
        err = [[r["success_rate"] - r["ci_low"] for r in pts], [r["ci_high"] - r["success_rate"] for r in pts]]
        ax.errorbar(x, y, yerr=err, marker=marker, capsize=3, label=f"Transformer BC, {loss}")
    ax.axhline(TARGETS["grasp"], color="grey", linestyle="--", label="target at 100 demos")
    ax.set_xscale("log")
    ax.set_xticks([10, 25, 50, 100], labels=["10", "25", "50", "100"])
    ax.set_xlabel("expert demos")
    ax.set_ylabel("success rate (50 episodes x seeds, 95% CI)")
    ax.set_ylim(0, 1.02)
    ax.set_title("grasp (FetchPickAndPlace): BC success vs demos")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demos", type=int, nargs="+", default=[10, 25, 50, 100], help="grasp sweep")
    parser.add_argument("--losses", nargs="+", default=["nll", "mse"])
    parser.add_argument("--steps", type=int, default=2000, help="gradient steps per training run")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="one seed, demos 10 and 100, nll only, 300 steps")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="summarise the cached runs, train nothing")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.demos, args.losses, args.steps = [0], [10, 100], ["nll"], 300
    args.results.mkdir(parents=True, exist_ok=True)
    cache_path = args.results / "bc_targets.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"runs": []}
    done = {(r["task"], r["demos"], r["loss"], r["seed"], r["steps"], r["episodes"]) for r in cache["runs"]}
    # The targets first (100 demos, nll), so an interrupted run has answered them.
    grid = [(task, 100, "nll", s) for task in ("grasp", "nav-medium") for s in args.seeds]
    grid += [("grasp", d, loss, s) for loss in args.losses for d in sorted(args.demos, reverse=True)
             for s in args.seeds if (d, loss) != (100, "nll")]
    grid += [("nav-medium", 100, loss, s) for loss in args.losses if loss != "nll" for s in args.seeds]
    if args.report_only:
        grid = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, demos, loss, seed in grid:
            if (task, demos, loss, seed, args.steps, args.episodes) in done:
                continue
            run = run_one(task, demos, loss, seed, args, Path(tmp))
            print(json.dumps(run), flush=True)
            cache["runs"].append(run)
            cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    wanted = [r for r in cache["runs"] if r["steps"] == args.steps and r["episodes"] == args.episodes]
    rows = summarise(wanted)
    cache["summary"] = rows
    cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    write_report(rows, args.results / "bc_targets.md", args.results / "bc_demos_sweep.png")
    print((args.results / "bc_targets.md").read_text())


if __name__ == "__main__":
    main()
