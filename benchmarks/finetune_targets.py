"""BC then RL targets: PPO fine-tuning from a BC policy trained on a few noisy demos, against PPO
from scratch with the same network and budget.

    python benchmarks/finetune_targets.py                       # the full issue grid (hours on 2 CPU cores)
    python benchmarks/finetune_targets.py --tasks grasp --seeds 0 --steps 60000   # a reduced run

Per task: expert demos with --noise 0.3 (10 for grasp, 5 for nav-medium), BC per seed, then
`finetune` (defaults) and `finetune --from-scratch` (actor at the critic's learning rate: the slow
actor only guards a BC start) for --steps env steps. Runs are cached by task, seed, variant, steps
and these settings, so runs with earlier defaults stay in the table under their own label. Success is evaluated
on 50 episodes every 1% of the budget during the first 10% (the forgetting window) and every
10% after. Each finished run is cached in the JSON and unfinished ones resume from their last
evaluation point (work files in --workdir), so an interrupted benchmark loses little. Writes
benchmarks/results/finetune_targets.{json,md} and finetune_curves.png.
Targets: grasp >= 95% within 300k steps; in the first 10% never more than 5 points below BC.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from run_cache import append_run, finetune_curve, load_runs  # noqa: E402

from lam_robot.config import BCConfig, FinetuneConfig  # noqa: E402
from lam_robot.evaluation import wilson_interval  # noqa: E402
from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402
from lam_robot.train.finetune import finetune  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEMOS = {"grasp": 10, "nav-medium": 5}


def _variant(scratch: bool, bc_weight: float) -> str:
    """The cache key and table label: a run's result depends on whether the BC regulariser was on."""
    return "scratch" if scratch else ("bc+ppo" if bc_weight > 0 else "bc+ppo, no BC regulariser")


# Runs cached before these settings were recorded used the defaults of that time.
OLD_SETTINGS = {"actor_lr_scale": 0.1, "bc_steps": 4}


def _settings(run: dict) -> dict:
    """The settings that differ between cached runs of one variant (the scratch runs have no demos)."""
    settings = run.get("settings", OLD_SETTINGS)
    return {"actor_lr_scale": settings["actor_lr_scale"]} if run["variant"] == "scratch" else settings


def _key(run: dict) -> tuple:
    return run["task"], run["seed"], run["variant"], run["steps"], tuple(sorted(_settings(run).items()))


def _label(run: dict) -> str:
    names = {"actor_lr_scale": "actor-lr", "bc_steps": "bc-steps"}
    return f"{run['variant']} ({', '.join(f'{names[k]} {v:g}' for k, v in _settings(run).items())})"


def run_one(task: str, seed: int, scratch: bool, args, workdir: Path) -> dict:
    data = workdir / f"{task}.hdf5"
    if not data.exists():
        partial = workdir / f"{task}.partial.hdf5"
        partial.unlink(missing_ok=True)
        record_expert(load_task(task), partial, DEMOS[task], noise=0.3)
        partial.rename(data)
    bc = workdir / f"{task}-bc-{seed}"
    if not (bc / "config.json").exists():
        train_bc(BCConfig(data=str(data), out=str(bc), epochs=400, seed=seed), progress=False)
    settings = _run_settings(scratch, args)
    tag = "".join(f"-{k}{v:g}" for k, v in settings.items())
    out = workdir / f"{task}-{_variant(scratch, args.bc_weight).replace(' ', '')}-{seed}-{args.steps}{tag}"
    config = FinetuneConfig(policy=str(bc), out=str(out), steps=args.steps, seed=seed, from_scratch=scratch,
                            demos=None if scratch else str(data), bc_weight=args.bc_weight,
                            eval_every=args.steps // 10, early_evals=10, eval_episodes=50,
                            **{"bc_steps": args.bc_steps} | settings)
    start = time.perf_counter()
    result = finetune(config, progress=False)
    curve = finetune_curve(out, "success_rate")
    return {"task": task, "seed": seed, "variant": _variant(scratch, args.bc_weight), "steps": args.steps,
            "settings": settings, "demos": DEMOS[task], "start_success": curve[0][1], "final_success": result.final_success,
            "curve": curve, "seconds": round(time.perf_counter() - start, 1),
            "steps_per_second": round(result.steps_per_second, 1)}


def _run_settings(scratch: bool, args) -> dict:
    if scratch:
        return {"actor_lr_scale": args.scratch_actor_lr_scale}
    return {"actor_lr_scale": args.actor_lr_scale, "bc_steps": args.bc_steps}


def summarise(runs: list[dict]) -> str:
    lines = ["| task | variant | seeds | start | final (pooled) | 95% CI (pooled final) | first at >= 95% | "
             "min in first 10% vs start | env steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], _label(r), r["steps"]), []).append(r)
    for (task, variant, steps), rs in sorted(groups.items()):
        wins = sum(round(r["final_success"] * 50) for r in rs)
        low, high = wilson_interval(wins, 50 * len(rs))
        drops = [min(s for t, s in r["curve"] if t <= steps // 10) - r["start_success"] for r in rs]
        starts = ", ".join(f"{100 * r['start_success']:.0f}%" for r in rs)
        finals = ", ".join(f"{100 * r['final_success']:.0f}%" for r in rs) + f" ({100 * wins / (50 * len(rs)):.1f}%)"
        reached = ", ".join(next((f"{t // 1000}k" for t, s in r["curve"] if s >= 0.95), "-") for r in rs)
        dips = ", ".join(f"{100 * d:+.0f}" for d in drops)
        lines.append(f"| {task} | {variant} | {len(rs)} | {starts} | {finals} | {100 * low:.0f}-{100 * high:.0f}% | "
                     f"{reached} | {dips} pts | {steps} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    colors: dict[str, str] = {}
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 6.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        longest = max(r["steps"] for r in runs if r["task"] == task)
        labelled: set[str] = set()
        for r in (r for r in runs if r["task"] == task):
            steps, success = zip(*r["curve"])
            label = _label(r) + ("" if r["steps"] == longest else f", {r['steps'] // 1000}k steps")
            style = {"bc+ppo": "-", "scratch": "--"}.get(r["variant"], ":")
            ax.plot(steps, success, style, color=colors.setdefault(label, f"C{len(colors) % 10}"),
                    marker="os^v"[r["seed"] % 4], markersize=3, alpha=0.85,
                    label=None if label in labelled else label)  # one legend entry per setting
            labelled.add(label)
        ax.set_title(f"{task}: BC then PPO vs PPO from scratch (marker: seed 0 o, 1 s, 2 ^)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success rate (50 episodes)")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["grasp", "nav-medium"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--no-scratch", action="store_true", help="skip the PPO-from-scratch baseline")
    parser.add_argument("--scratch-only", action="store_true", help="run only the PPO-from-scratch baseline")
    parser.add_argument("--bc-weight", type=float, default=FinetuneConfig.bc_weight,
                        help="BC regulariser weight of the bc+ppo runs (0: off)")
    parser.add_argument("--actor-lr-scale", type=float, default=FinetuneConfig.actor_lr_scale,
                        help="actor learning-rate scale of the bc+ppo runs")
    parser.add_argument("--bc-steps", type=int, default=FinetuneConfig.bc_steps,
                        help="BC regulariser steps per update of the bc+ppo runs")
    parser.add_argument("--scratch-actor-lr-scale", type=float, default=1.0,
                        help="actor learning-rate scale of the scratch runs (the slow actor only guards a BC start)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "finetune_targets",
                        help="demos, BC checkpoints and unfinished runs (kept so a killed benchmark resumes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    cache_path = args.results / "finetune_targets.json"
    args.workdir.mkdir(parents=True, exist_ok=True)
    variants = ([] if args.scratch_only else [False]) + ([] if args.no_scratch else [True])  # scratch or not
    for task in args.tasks:
        for seed in args.seeds:
            for scratch in variants:
                wanted = {"task": task, "seed": seed, "variant": _variant(scratch, args.bc_weight),
                          "steps": args.steps, "settings": _run_settings(scratch, args)}
                if _key(wanted) in {_key(r) for r in load_runs(cache_path)}:
                    continue
                run = run_one(task, seed, scratch, args, args.workdir)
                print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
                append_run(cache_path, run)
    cache = {"runs": load_runs(cache_path)}
    table = summarise(cache["runs"])
    (args.results / "finetune_targets.md").write_text(table)
    plot(cache["runs"], args.results / "finetune_curves.png")
    print(table)


if __name__ == "__main__":
    main()
