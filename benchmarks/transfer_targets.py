"""Transfer targets (issue 14, part 3, reduced): target-task demos needed for BC success, from scratch
against from a source checkpoint (`train-bc --init-from SOURCE`, layers mapped across tasks).

    python benchmarks/transfer_targets.py                                        # nav-medium -> nav-spiral
    python benchmarks/transfer_targets.py --pairs grasp:grasp-heavy --counts 5 10 20 --seeds 0
    python benchmarks/transfer_targets.py --pairs nav-umaze+nav-medium:nav-large --counts 2 5 10 20
    python benchmarks/transfer_targets.py --pairs --ppo grasp:grasp-heavy        # BC then PPO, both lines
    python benchmarks/transfer_targets.py --report                               # table and plot only

Source: `train-bc` on --source-demos clean expert demos of the source task (seed 0, kept for every seed and
count); a source "a+b" is multi-task BC on both tasks' demos (one shared trunk). Target: the first N clean
expert demos of the target task (reset seeds 0..N-1, all in mask/train: --valid-fraction 0, BC keeps its
last epoch), for each N in --counts. Each (pair, line, N, seed) is one real `train-bc` run: "scratch" (fresh
weights, statistics of the N demos) or "source" (`--init-from` the source run; the same epochs). Gradient
steps per run are kept about equal across N (epochs = max(--min-epochs, --steps / batches per epoch)); runs
of another --steps are a curve of their own. Success on 50 unseen episodes (reset seeds 10_000 + 1000 x
seed), pooled over seeds with a 95% Wilson interval.

Target (issue 14): from a source checkpoint, <= half the target demos for the same success. Per pair and
success level in --levels (default 50% and the issue's 90%), the table gives each line's fewest demos (of
--counts) whose pooled success reaches the level, and the verdict: met when source needs <= half of
scratch's count, missed when not, open when scratch never reaches the level in the counts run. On the
curve, each "source" point also gets the demos scratch needs for the same pooled success, interpolated
log-linearly between scratch's counts (the target asks for at least twice the source's count).

--ppo SOURCE:TARGET: BC then PPO on the target, from each line's BC run at --ppo-demos demos, with
`finetune`'s defaults (the same demos for its BC regulariser) for --ppo-steps env steps, 50-episode
evaluations every 10%; the table gives the env steps to 95% success (issue 14), the plot the curves
(transfer_ppo.png).

Finished runs are cached in benchmarks/results/transfer_targets.json (train-bc runs also resume from
their own OUT/last/). Writes transfer_targets.{json,md} and transfer_targets.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from run_cache import append_run, finetune_curve, load_runs, made_once  # noqa: E402

from lam_robot.config import BCConfig, FinetuneConfig, RecordConfig  # noqa: E402
from lam_robot.evaluation import evaluate_policy, wilson_interval  # noqa: E402
from lam_robot.recording import record  # noqa: E402
from lam_robot.sources import load_policy  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402
from lam_robot.train.finetune import finetune  # noqa: E402

RESULTS = Path(__file__).parent / "results"
EPISODES = 50
LINES = ("scratch", "source")
DEFAULT_STEPS = 400  # the BC budget of runs cached before the budget was part of their key
PPO_LEVEL = 0.95



def demos(task: str, n: int, workdir: Path) -> Path:
    """The first ``n`` clean expert demos of ``task``, all in mask/train."""
    return made_once(workdir / f"{task}-{n}-demos.hdf5", lambda p: record(RecordConfig(
        task=task, out=p, episodes=n, seed=0, valid_fraction=0.0, n_envs=2), progress=False))


def _windows(path: Path) -> int:
    from lam_robot.data.dataset import DemoFile

    with DemoFile(path) as f:
        return sum(len(e.obs) for e in f.policy_episodes("train"))


def epochs_for(paths: list[Path], args) -> int:
    """Epochs that give about ``args.steps`` gradient steps on these files (at least ``args.min_epochs``)."""
    per_epoch = math.ceil(sum(_windows(p) for p in paths) / args.batch_size)
    return max(args.min_epochs, math.ceil(args.steps / per_epoch))


def _unfinished(out: Path, epochs: int) -> bool:
    state = out / "last" / "state.json"
    return not state.exists() or json.loads(state.read_text())["epoch"] < epochs


def _budget_tag(steps: int) -> str:
    return "" if steps == DEFAULT_STEPS else f"-s{steps}"


def _steps(run: dict) -> int:
    return run.get("steps", DEFAULT_STEPS)


def source_run(source: str, args) -> Path:
    """The source checkpoint: BC on ``args.source_demos`` expert demos of each source task ("a+b": multi-task
    BC, the first file as --data and the others as --more-data)."""
    out = args.workdir / f"source-{source}-{args.source_demos}{_budget_tag(args.steps)}"
    files = [demos(task, args.source_demos, args.workdir) for task in source.split("+")]
    epochs = epochs_for(files, args)
    if _unfinished(out, epochs):
        train_bc(BCConfig(data=files[0], more_data=tuple(files[1:]), out=out, epochs=epochs, seed=0,
                          batch_size=args.batch_size), progress=False)
    return out


def bc_run(source: str, target: str, line: str, n: int, seed: int, args) -> tuple[Path, int]:
    """The BC run on ``n`` target demos, from scratch or from the source checkpoint (trained if unfinished),
    and its epochs."""
    data = demos(target, n, args.workdir)
    init = source_run(source, args) if line == "source" else None
    out = args.workdir / f"{source}-{target}-{line}-{n}-{seed}{_budget_tag(args.steps)}"
    epochs = epochs_for([data], args)
    if _unfinished(out, epochs):
        train_bc(BCConfig(data=data, out=out, epochs=epochs, seed=seed, init_from=init, batch_size=args.batch_size),
                 progress=False)
    return out, epochs


def run_one(source: str, target: str, line: str, n: int, seed: int, args) -> dict:
    """One BC run on ``n`` target demos, from scratch or from the source checkpoint, and its success."""
    start = time.perf_counter()
    out, epochs = bc_run(source, target, line, n, seed, args)
    policy = load_policy(str(out), target, seed=seed)
    result = evaluate_policy(load_task(target), policy, line, EPISODES, seed=10_000 + 1000 * seed, n_envs=4)
    return {"success": result.success_rate, "epochs": epochs, "seconds": round(time.perf_counter() - start)}


def ppo_one(source: str, target: str, line: str, seed: int, args) -> dict:
    """BC then PPO on the target: the BC run of this line on --ppo-demos target demos, fine-tuned by `finetune`
    (its defaults; the same demos feed its BC regulariser) for --ppo-steps env steps, with 50-episode evaluations
    every 10% of the budget; and the first env step whose success reaches 95%."""
    start = time.perf_counter()
    bc, _ = bc_run(source, target, line, args.ppo_demos, seed, args)
    name = f"ppo-{source}-{target}-{line}-{args.ppo_demos}-{seed}-{args.ppo_steps}{_budget_tag(args.steps)}"
    out = args.workdir / name
    result = finetune(FinetuneConfig(policy=bc, out=out, demos=demos(target, args.ppo_demos, args.workdir),
                                     steps=args.ppo_steps, seed=seed, eval_every=args.ppo_steps // 10,
                                     eval_episodes=EPISODES), progress=False)
    curve = finetune_curve(out, "success_rate")
    return {"source": source, "target": target, "line": line, "demos": args.ppo_demos, "seed": seed,
            "steps": args.ppo_steps, "bc_steps": args.steps, "curve": curve, "final_success": result.final_success,
            "first_at_level": min((s for s, p in curve if p >= PPO_LEVEL), default=None),
            "seconds": round(time.perf_counter() - start), "steps_per_second": round(result.steps_per_second, 1)}


def summarise_ppo(runs: list[dict]) -> str:
    """Markdown: per pair, line and seed the BC start, the final success and the env steps to 95%."""
    rows = ["| pair | line | target demos | seed | BC start | final | env steps to 95% | budget | env steps/s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["source"], r["target"], LINES.index(r["line"]), r["seed"])):
        first = f"{r['first_at_level'] / 1000:.0f}k" if r["first_at_level"] is not None else "not reached"
        rows.append(f"| {r['source']} -> {r['target']} | {r['line']} | {r['demos']} | {r['seed']} | "
                    f"{100 * r['curve'][0][1]:.0f}% | {100 * r['final_success']:.0f}% | {first} | "
                    f"{r['steps'] // 1000}k | {r['steps_per_second']:g} |")
    rows += ["", "| pair | line | seeds | final, pooled | 95% CI | seeds at >= 95% within the budget |",
             "|---|---|---|---|---|---|"]
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["source"], r["target"], r["line"]), []).append(r)
    for (source, target, line), rs in sorted(groups.items(), key=lambda g: (g[0][:2], LINES.index(g[0][2]))):
        wins = sum(round(r["final_success"] * EPISODES) for r in rs)
        low, high = wilson_interval(wins, EPISODES * len(rs))
        reached = sum(r["first_at_level"] is not None for r in rs)
        rows.append(f"| {source} -> {target} | {line} | {len(rs)} | {100 * wins / (EPISODES * len(rs)):.1f}% | "
                    f"{100 * low:.0f}-{100 * high:.0f}% | {reached} of {len(rs)} |")
    return "\n".join(rows) + "\n"


def plot_ppo(runs: list[dict], png: Path) -> None:
    """Success against env steps, one line per (line, seed), one panel per pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted({(r["source"], r["target"]) for r in runs})
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, (source, target) in zip(axes[0], pairs):
        for r in sorted(runs, key=lambda r: (r["line"], r["seed"])):
            if (r["source"], r["target"]) == (source, target):
                xs, ys = zip(*r["curve"])
                ax.plot(xs, ys, marker=".", color=f"C{LINES.index(r['line'])}", alpha=0.5 + 0.2 * (r["seed"] % 3),
                        label=f"BC {'from source' if r['line'] == 'source' else 'from scratch'}, seed {r['seed']}")
        ax.axhline(PPO_LEVEL, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("PPO env steps")
        ax.set_ylabel(f"success ({EPISODES} episodes)")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"BC then PPO on {target} ({source} as source)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def pooled(runs: list[dict]) -> tuple[float, float, float]:
    """Pooled success over seeds and its 95% Wilson interval."""
    wins = sum(round(r["success"] * EPISODES) for r in runs)
    low, high = wilson_interval(wins, EPISODES * len(runs))
    return wins / (EPISODES * len(runs)), low, high


def curves(runs: list[dict]) -> dict[tuple[str, str, int], dict[str, dict[int, list[dict]]]]:
    """(source, target, BC steps) -> line -> demos -> runs."""
    out: dict = {}
    for r in runs:
        key = (r["source"], r["target"], _steps(r))
        out.setdefault(key, {}).setdefault(r["line"], {}).setdefault(r["demos"], []).append(r)
    return out


def pair_label(source: str, target: str, steps: int) -> str:
    """The pair's name in tables and plots (with its BC budget where it is not the default)."""
    return f"{source} -> {target}" + ("" if steps == DEFAULT_STEPS else f" ({steps} BC steps)")


def needed(by_n: dict[int, list[dict]], level: float) -> int | None:
    """Fewest demos whose pooled success reaches ``level`` (None if no count run does)."""
    return min((n for n, rs in by_n.items() if pooled(rs)[0] >= level), default=None)


def scratch_equivalent(by_n: dict[int, list[dict]], success: float) -> str:
    """Demos scratch needs for ``success``, interpolated log-linearly between its counts ("> N" beyond them)."""
    points = sorted((n, pooled(rs)[0]) for n, rs in by_n.items())
    if not points:
        return "-"
    if success <= points[0][1]:
        return f"<= {points[0][0]}"
    for (n0, p0), (n1, p1) in zip(points, points[1:]):
        if p0 < success <= p1:
            return f"{n0 * (n1 / n0) ** ((success - p0) / (p1 - p0)):.1f}"
    return f"> {points[-1][0]}"


def saving(scratch_demos: str, n: int) -> str:
    """Scratch's demos for a source point's success, with the saving (scratch's demos / the source's; the
    target asks for >= 2x)."""
    if scratch_demos == "-":
        return "-"
    bound, _, count = scratch_demos.rpartition(" ")
    return f"{scratch_demos} ({bound + ' ' if bound else ''}{float(count) / n:.1f}x)"


def summarise(runs: list[dict], levels: list[float]) -> str:
    """Markdown: the curve per pair and line, then per pair and success level the demos each line needed
    and the verdict."""
    lines = ["| pair | line | demos | seeds | success per seed | pooled | 95% CI | scratch demos for this success "
             "(saving) |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = ["", "| pair | success level | scratch: fewest demos | source: fewest demos | target (source <= half) "
                "| verdict |", "|---|---|---|---|---|---|"]
    for (source, target, steps), by_line in sorted(curves(runs).items()):
        pair = pair_label(source, target, steps)
        for line in LINES:
            for n, rs in sorted(by_line.get(line, {}).items()):
                p, low, high = pooled(rs)
                per_seed = ", ".join(f"{100 * r['success']:.0f}%" for r in sorted(rs, key=lambda r: r["seed"]))
                same = saving(scratch_equivalent(by_line.get("scratch", {}), p), n) if line == "source" else "-"
                lines.append(f"| {pair} | {line} | {n} | {len(rs)} | {per_seed} | {100 * p:.1f}% | "
                             f"{100 * low:.0f}-{100 * high:.0f}% | {same} |")
        for level in levels:
            scratch, src = needed(by_line.get("scratch", {}), level), needed(by_line.get("source", {}), level)
            if scratch is None:
                verdict = "open: scratch never reached it" if src is None else "met: only source reached it"
            else:
                verdict = "met" if src is not None and src <= scratch / 2 else "missed"
            wanted = f"<= {scratch / 2:g}" if scratch else "-"
            verdicts.append(f"| {pair} | {100 * level:.0f}% | {scratch or 'not reached'} | "
                            f"{src or 'not reached'} | {wanted} | {verdict} |")
    return "\n".join(lines + verdicts) + "\n"


def plot(runs: list[dict], png: Path) -> None:
    """Demos vs pooled success with Wilson intervals, one panel per pair, both lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = sorted(curves(runs).items())
    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.5), squeeze=False)
    for ax, ((source, target, steps), by_line) in zip(axes[0], pairs):
        for i, line in enumerate(LINES):
            points = sorted(by_line.get(line, {}).items())
            if not points:
                continue
            stats = [pooled(rs) for _, rs in points]
            xs = [n for n, _ in points]
            ys = [s[0] for s in stats]
            ax.errorbar(xs, ys, yerr=[[y - s[1] for y, s in zip(ys, stats)], [s[2] - y for y, s in zip(ys, stats)]],
                        marker="o", capsize=4, color=f"C{i}",
                        label="from scratch" if line == "scratch" else f"from source ({source})")
        ax.set_xscale("log", base=2)
        counts = sorted({n for by_n in by_line.values() for n in by_n})
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.set_xlabel(f"{target} demos")
        ax.set_ylabel(f"BC success (pooled over seeds, {EPISODES} episodes each)")
        ax.set_ylim(0, 1.02)
        ax.set_title(pair_label(source, target, steps))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    """Run the missing (pair, line, demos, seed) combinations, then write the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="*", default=["nav-medium:nav-spiral"],
                        help="SOURCE:TARGET task pairs (SOURCE may be several tasks joined by +: multi-task BC)")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 5, 10], help="target demo counts")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lines", nargs="+", choices=LINES, default=list(LINES))
    parser.add_argument("--source-demos", type=int, default=30)
    parser.add_argument("--steps", type=int, default=400, help="about this many gradient steps per BC run")
    parser.add_argument("--min-epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.9],
                        help="success levels the demo counts are compared at (the issue's is 0.9)")
    parser.add_argument("--ppo", nargs="*", default=[], metavar="SOURCE:TARGET",
                        help="also BC then PPO on TARGET from --ppo-demos demos, for each line and seed")
    parser.add_argument("--ppo-demos", type=int, default=10)
    parser.add_argument("--ppo-steps", type=int, default=300_000)
    parser.add_argument("--report", action="store_true", help="only write the table and plot from the cache")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "transfer_targets",
                        help="demos and runs (kept so that a killed benchmark resumes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache_path = args.results / "transfer_targets.json"
    for pair in [] if args.report else args.pairs:
        source, target = pair.split(":")
        for n in args.counts:
            for seed in args.seeds:
                for line in args.lines:
                    key = (source, target, line, n, seed, args.steps)
                    done = {(r["source"], r["target"], r["line"], r["demos"], r["seed"], _steps(r))
                            for r in load_runs(cache_path)}
                    if key in done:
                        continue
                    run = {"source": source, "target": target, "line": line, "demos": n, "seed": seed,
                           "source_demos": args.source_demos, "steps": args.steps,
                           **run_one(source, target, line, n, seed, args)}
                    print(json.dumps(run), flush=True)
                    append_run(cache_path, run)
    for pair in [] if args.report else args.ppo:
        source, target = pair.split(":")
        for seed in args.seeds:
            for line in args.lines:
                done = {(r["source"], r["target"], r["line"], r["demos"], r["seed"], r["steps"],
                         r.get("bc_steps", DEFAULT_STEPS)) for r in load_runs(cache_path, "ppo")}
                if (source, target, line, args.ppo_demos, seed, args.ppo_steps, args.steps) not in done:
                    run = ppo_one(source, target, line, seed, args)
                    print(json.dumps(run), flush=True)
                    append_run(cache_path, run, "ppo")
    runs, ppo = load_runs(cache_path), load_runs(cache_path, "ppo")
    report = summarise(runs, args.levels) if runs else ""
    if ppo:
        report += "\nBC then PPO on the target (BC from the curve's runs at that demo count):\n\n"
        report += summarise_ppo(ppo)
        plot_ppo(ppo, args.results / "transfer_ppo.png")
    if runs:
        plot(runs, args.results / "transfer_targets.png")
    if report:
        (args.results / "transfer_targets.md").write_text(report)
        print(report)


if __name__ == "__main__":
    main()
