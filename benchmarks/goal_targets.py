"""Goal-reaching targets (issue 13): hindsight relabelling, pretraining on play data, self-imitation.

    python benchmarks/goal_targets.py                                   # the BC grid, 3 seeds (hours on 2 cores)
    python benchmarks/goal_targets.py --tasks nav-medium --seeds 0 --rows bc bc+relabel     # a probe
    python benchmarks/goal_targets.py --tasks nav-medium --rows bc+relabel+ppo+si --steps 500000

Demos: the task's expert with --noise 0.3, seeds 0.., all in mask/train (--valid-fraction 0; BC keeps
its last epoch): 5 for nav-medium, 10 for nav-large and grasp. Play data: 200 episodes of
`record --source play` (seeds from 100000), shared by the seeds. Rows, each a real run per seed:
- bc: `train-bc` (400 epochs), the plain baseline (ablation: without relabelling, without pretraining);
- bc+relabel: `train-bc --relabel hindsight` (ablation: without pretraining);
- bc+relabel+route: the same run evaluated with `evaluate --route-over DEMOS` (waypoints over the goals the demos
  reached); pretrain+bc+relabel+route: pretrain+bc+relabel's run with `--route-over DEMOS PLAY`;
- pretrain: `pretrain` on the play data (10 epochs) alone, no demos;
- pretrain-idm: the same on the play data with its actions removed, labelled by an inverse-dynamics model
  fit on the demos (`pretrain --demos`): what observation-only logs lose against logged actions;
- pretrain+bc: then `train-bc --init-from PRETRAIN --lr 3e-4 --epochs 100` on the demos (ablation:
  without relabelling, hence without the play windows);
- pretrain+bc+relabel: the same with `--relabel hindsight --play PLAY` (the whole BC pipeline);
- bc+relabel+ppo, bc+relabel+ppo+si: `finetune --demos` (PPO) from bc+relabel, without and with
  `--self-imitation hindsight` (ablation: without self-imitation), learning curve every 10% of --steps;
- bc+ppo+si: the same fine-tuning with self-imitation from plain bc (ablation: without relabelling in BC);
- bc+relabel+ppo+si+route: the same run of bc+relabel+ppo+si (trained once for both rows), evaluated with
  `evaluate --route`: waypoints found over the goals its training episodes and demos reached (no map);
  `--route route_ahead=40 route_sight=0.45` evaluates the same runs routed otherwise, in their own table rows
  (and, for +distill, records them routed so);
- bc+relabel+ppo+si+distill: the same run recorded routed on 200 fresh episodes (`record --route`, reset seeds
  200_000 + 1000 x seed), then `train-bc --init-from RUN --relabel hindsight --lr 3e-4 --epochs 100` on that
  file: the network alone, unrouted; its env steps are the run's plus the recording's;
- sac+her-scratch: the peer, SB3 SAC + HerReplayBuffer from scratch (benchmarks/offpolicy_targets.py).
Success on 50 unseen episodes (reset seeds 10_000 + 1000 x seed), pooled over seeds with a 95% Wilson
interval. Finished runs are cached in benchmarks/results/goal_targets.json (train-bc, pretrain and
finetune runs also resume from their own OUT/last/). Writes goal_targets.{json,md} and goal_targets.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import h5py
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from overrides import parse_settings, settings_tag  # noqa: E402
from run_cache import append_run, finetune_curve, load_runs, made_once  # noqa: E402

from lam_robot.config import BCConfig, EvaluateConfig, FinetuneConfig, PretrainConfig, RecordConfig  # noqa: E402
from lam_robot.evaluation import evaluate_policy, wilson_interval  # noqa: E402
from lam_robot.policy.routing import paths_in_files, routed_policy  # noqa: E402
from lam_robot.recording import record  # noqa: E402
from lam_robot.sources import load_policy  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402
from lam_robot.train.finetune import finetune  # noqa: E402
from lam_robot.train.pretrain import pretrain  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEMOS = {"nav-medium": 5, "nav-large": 10, "grasp": 10}
PLAY_EPISODES = 200
ROWS = ("bc", "bc+relabel", "bc+relabel+route", "pretrain", "pretrain-idm", "pretrain+bc", "pretrain+bc+relabel",
        "pretrain+bc+relabel+route", "bc+relabel+ppo", "bc+relabel+ppo+si", "bc+relabel+ppo+si+route",
        "bc+relabel+ppo+si+distill", "sac+her-scratch", "bc+ppo+si")
BUDGET = {"nav-medium": 500_000, "nav-large": 1_000_000, "grasp": 300_000}
TARGETS = {  # (task, row): the target for pooled success
    ("nav-medium", "bc+relabel"): 0.60,
    ("nav-medium", "bc+relabel+route"): 0.60,
    ("nav-medium", "pretrain+bc+relabel"): 0.90,
    ("nav-medium", "pretrain+bc+relabel+route"): 0.90,
    ("nav-medium", "bc+relabel+ppo+si"): 0.90,
    ("nav-medium", "bc+relabel+ppo+si+route"): 0.90,
    ("nav-medium", "bc+relabel+ppo+si+distill"): 0.90,
    ("nav-large", "bc+relabel+ppo+si"): 0.80,
    ("nav-large", "bc+relabel+ppo+si+route"): 0.80,
    ("grasp", "bc+relabel"): 0.31,  # above today's plain BC
    ("grasp", "bc+relabel+ppo+si"): 0.95,
}
EPISODES = 50
BC_EPOCHS = 400
PRETRAIN_EPOCHS = 10
FROM_PRETRAIN_EPOCHS = 100
DISTILL_EPISODES = 200



def demos(task: str, workdir: Path) -> Path:
    """The task's noisy expert demos, every one in mask/train."""
    return made_once(workdir / f"{task}-demos.hdf5", lambda p: record(RecordConfig(
        task=task, out=p, episodes=DEMOS[task], noise=0.3, seed=0, valid_fraction=0.0, n_envs=2), progress=False))


def play(task: str, workdir: Path) -> Path:
    """The task's unlabelled play data."""
    return made_once(workdir / f"{task}-play.hdf5", lambda p: record(RecordConfig(
        task=task, out=p, source="play", episodes=PLAY_EPISODES, seed=100_000, n_envs=4), progress=False))


def play_without_actions(task: str, workdir: Path) -> Path:
    """The play data as observation-only logs (its actions dataset removed), for the inverse-dynamics row."""

    def strip(path: Path) -> None:
        shutil.copy(play(task, workdir), path)
        with h5py.File(path, "r+") as f:
            for name in f["data"]:
                del f["data"][name]["actions"]

    return made_once(workdir / f"{task}-play-no-actions.hdf5", strip)


def bc_run(task: str, row: str, seed: int, workdir: Path, bc: dict | None = None) -> Path:
    """The BC checkpoint of a BC row (trained or resumed here); ``bc`` overrides settings of its demo stage."""
    bc = bc or {}
    out = workdir / f"{task}-{row}-{seed}{settings_tag(bc, prefix='-')}"
    if not row.startswith("pretrain"):
        settings = {"epochs": BC_EPOCHS} | bc
        if _unfinished(out, settings["epochs"]):
            train_bc(BCConfig(data=demos(task, workdir), out=out, seed=seed,
                              relabel="hindsight" if "relabel" in row else "none", **settings), progress=False)
        return out
    if row == "pretrain-idm":  # actions labelled by an inverse-dynamics model fit on the demos
        init = workdir / f"{task}-pretrain-idm-{seed}"
        if _unfinished(init, PRETRAIN_EPOCHS):
            pretrain(PretrainConfig(data=play_without_actions(task, workdir), demos=demos(task, workdir), out=init,
                                    epochs=PRETRAIN_EPOCHS, seed=seed), progress=False)
        return init
    init = workdir / f"{task}-pretrain-{seed}"
    if _unfinished(init, PRETRAIN_EPOCHS):
        pretrain(PretrainConfig(data=play(task, workdir), out=init, epochs=PRETRAIN_EPOCHS, seed=seed), progress=False)
    if row == "pretrain":
        return init
    relabel = "relabel" in row
    settings = {"epochs": FROM_PRETRAIN_EPOCHS, "lr": 3e-4} | bc
    if _unfinished(out, settings["epochs"]):
        train_bc(BCConfig(data=demos(task, workdir), out=out, seed=seed, init_from=init,
                          relabel="hindsight" if relabel else "none", play=play(task, workdir) if relabel else None,
                          **settings), progress=False)
    return out


def _unfinished(out: Path, epochs: int) -> bool:
    """Whether the run in ``out`` has not yet trained all its epochs (or not started)."""
    state = out / "last" / "state.json"
    return not state.exists() or json.loads(state.read_text())["epoch"] < epochs


def continue_shorter_run(out: Path, steps: int) -> None:
    """Seed a new RL run directory (``...-SEED-STEPS``) with the longest shorter run of the same row and seed, so a
    larger budget extends its curve instead of training it again (finetune lets --steps change on resume; its
    resumed envs are reseeded from the resume step)."""
    prefix = out.name[: out.name.rindex("-") + 1]
    shorter = [(int(p.name[len(prefix):]), p) for p in out.parent.glob(f"{prefix}*")
               if p.name[len(prefix):].isdigit() and int(p.name[len(prefix):]) < steps and (p / "last").is_dir()]
    if not out.exists() and shorter:
        shutil.copytree(max(shorter)[1], out)
        print(f"{out.name}: continues {max(shorter)[1].name}", flush=True)


def evaluate(task: str, policy, seed: int) -> float:
    """Success on the row's unseen episodes."""
    return evaluate_policy(load_task(task), policy, "row", EPISODES, seed=10_000 + 1000 * seed, n_envs=4).success_rate


def routed(policy, run: Path | list[Path], task: str, route: dict):
    """``policy`` routed over the goals its fine-tuning run reached (``evaluate --route``), or over those of some
    demo or play files (``evaluate --route-over``); ``route``: overrides of its route_ahead and route_sight."""
    spec = load_task(task)
    env = spec.make_env()
    paths = paths_in_files(run, spec) if isinstance(run, list) else run
    try:
        return routed_policy(policy, paths, spec, env, **{k.removeprefix("route_"): v for k, v in route.items()})
    finally:
        env.close()


def distilled(task: str, run: Path, seed: int, route: dict) -> dict:
    """``run``'s policy recorded routed (``record --route``) on fresh episodes, then cloned back into its own
    weights with relabelling: success of that network alone, and the env steps the recording took."""
    how = settings_tag(route, prefix="-")  # each routing records (and distils) its own file
    data = made_once(run.parent / f"{run.name}-routed{how}.hdf5", lambda p: record(RecordConfig(
        task=task, out=p, source=str(run), route=True, episodes=DISTILL_EPISODES, seed=200_000 + 1000 * seed,
        n_envs=4, **route), progress=False))
    out = run.parent / f"{run.name}-distilled{how}"
    if _unfinished(out, FROM_PRETRAIN_EPOCHS):
        train_bc(BCConfig(data=data, out=out, seed=seed, init_from=run, relabel="hindsight",
                          epochs=FROM_PRETRAIN_EPOCHS, lr=3e-4), progress=False)
    with h5py.File(data) as f:
        recorded = int(f["data"].attrs["total"])
    return {"success": evaluate(task, load_policy(str(out), task, seed=seed), seed), "recorded_steps": recorded}


def run_row(task: str, row: str, seed: int, steps: int, workdir: Path, bc: dict, ft: dict | None = None,
            route: dict | None = None) -> dict:
    """One (task, row, seed): final success, and the learning curve for the RL rows (``ft``: fine-tuning
    overrides; ``route``: routing overrides of the +route rows)."""
    start = time.perf_counter()
    if row == "sac+her-scratch":
        from offpolicy_targets import run_peer  # benchmarks/ is on sys.path when this file runs

        curve = run_peer(task, seed, steps, workdir)
        return {"success": curve[-1][1], "curve": curve, "seconds": round(time.perf_counter() - start)}
    if "ppo" in row:
        policy = bc_run(task, "bc+relabel" if "relabel" in row else "bc", seed, workdir, bc)
        trained = row.removesuffix("+route").removesuffix("+distill")
        out = workdir / f"{task}-{trained}-{seed}{settings_tag(bc, ft, prefix='-').replace('; ', '-')}-{steps}"
        continue_shorter_run(out, steps)
        extra = {"self_imitation": "hindsight"} if trained.endswith("+si") else {}
        finetune(FinetuneConfig(policy=policy, out=out, steps=steps, seed=seed, demos=demos(task, workdir),
                                eval_every=max(1, steps // 10), eval_episodes=EPISODES, **extra, **(ft or {})),
                 progress=False)
        final_policy = load_policy(str(out), task, seed=seed)
        if row.endswith("+distill"):
            return {**distilled(task, out, seed, route or {}), "unrouted": evaluate(task, final_policy, seed),
                    "seconds": round(time.perf_counter() - start)}
        if row.endswith("+route"):  # no curve: the run's log holds the unrouted success
            return {"success": evaluate(task, routed(final_policy, out, task, route or {}), seed),
                    "unrouted": evaluate(task, load_policy(str(out), task, seed=seed), seed),
                    "seconds": round(time.perf_counter() - start)}
        curve = finetune_curve(out, "success_rate", "wall_seconds")
        final = evaluate(task, final_policy, seed)
        return {"success": final, "curve": curve, "seconds": round(time.perf_counter() - start)}
    out = bc_run(task, row.removesuffix("+route"), seed, workdir, bc)
    if row.endswith("+route"):  # over the goals the row's own data reached: its demos, and its play data
        files = [demos(task, workdir), *([play(task, workdir)] if row.startswith("pretrain") else [])]
        policy = routed(load_policy(str(out), task, seed=seed), files, task, route or {})
        return {"success": evaluate(task, policy, seed),
                "unrouted": evaluate(task, load_policy(str(out), task, seed=seed), seed),
                "seconds": round(time.perf_counter() - start)}
    return {"success": evaluate(task, load_policy(str(out), task, seed=seed), seed),
            "seconds": round(time.perf_counter() - start)}


def summarise(runs: list[dict]) -> str:
    """Markdown: per task and row, per-seed and pooled success with its Wilson interval, target, verdict."""
    lines = ["| task | row | demos | env steps | seeds | success per seed | pooled | 95% CI | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], ROWS.index(r["row"]), r["row"],
                           settings_tag(r.get("bc"), r.get("ft"), r.get("route")),
                           r.get("steps", 0)),
                          []).append(r)
    for (task, _, row, tag, steps), rs in sorted(groups.items()):
        wins = sum(round(r["success"] * EPISODES) for r in rs)
        low, high = wilson_interval(wins, EPISODES * len(rs))
        pooled = wins / (EPISODES * len(rs))
        target = TARGETS.get((task, row))
        per_seed = ", ".join(f"{100 * r['success']:.0f}%" for r in sorted(rs, key=lambda r: r["seed"]))
        wanted = "-" if target is None else f">= {100 * target:.0f}%"
        verdict = "-" if target is None else ("met" if pooled >= target else "missed")
        if target is not None and pooled < target and steps and steps < BUDGET[task]:
            verdict = f"not reached in {steps // 1000}k of the {BUDGET[task] // 1000}k budget"
        recorded = max(r.get("recorded_steps", 0) for r in rs)  # the distill rows' recording
        if verdict == "met" and steps + recorded > BUDGET[task]:
            verdict = f"met in up to {(steps + recorded) // 1000}k env steps, over the {BUDGET[task] // 1000}k budget"
        shown = f"{steps} + {recorded // 1000}k recorded" if recorded else (steps or "-")
        lines.append(
            f"| {task} | {row}{f' ({tag})' if tag else ''} | {DEMOS[task]} | {shown} | {len(rs)} | "
            f"{per_seed} | {100 * pooled:.1f}% | {100 * low:.0f}-{100 * high:.0f}% | {wanted} | {verdict} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], png: Path) -> None:
    """Pooled success with its interval per row (left), learning curves of the RL rows (right): default
    settings, each RL row at its longest budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(14, 4.5 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        # variants are in the table only
        mine = [r for r in runs if r["task"] == task and not r.get("bc") and not r.get("ft") and not r.get("route")]
        longest = {r["row"]: max(q.get("steps", 0) for q in mine if q["row"] == r["row"]) for r in mine}
        mine = [r for r in mine if r.get("steps", 0) == longest[r["row"]]]
        rows = [row for row in ROWS if any(r["row"] == row for r in mine)]
        pooled, errors = [], [[], []]
        for row in rows:
            rs = [r for r in mine if r["row"] == row]
            wins = sum(round(r["success"] * EPISODES) for r in rs)
            low, high = wilson_interval(wins, EPISODES * len(rs))
            p = wins / (EPISODES * len(rs))
            pooled.append(p)
            errors[0].append(p - low)
            errors[1].append(high - p)
        ax = axes[i][0]
        ax.bar(range(len(rows)), pooled, yerr=errors, color=[f"C{ROWS.index(r)}" for r in rows], capsize=4)
        ax.set_xticks(range(len(rows)), rows, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"success, pooled over seeds ({EPISODES} episodes each)")
        ax.set_title(f"{task}: {DEMOS[task]} noisy demos")
        ax = axes[i][1]
        for r in (r for r in mine if "curve" in r):
            ax.plot([p[0] for p in r["curve"]], [p[1] for p in r["curve"]], color=f"C{ROWS.index(r['row'])}",
                    marker="os^v"[r["seed"] % 4], markersize=3, label=f"{r['row']} seed {r['seed']}")
        ax.set_xlabel("env steps")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{task}: learning curves")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)



def main() -> None:
    """Run the missing (task, row, seed, steps) combinations, then write the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["nav-medium", "grasp", "nav-large"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    bc_rows = [r for r in ROWS if "ppo" not in r and "sac" not in r]
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=bc_rows, help="default: the BC rows")
    parser.add_argument("--steps", type=int, default=None, help="env steps of the RL rows (default: per task)")
    parser.add_argument("--bc", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a row variant: BCConfig overrides of the BC stage (e.g. relabel_ratio=0.8 epochs=50); "
                             "its runs get their own directories and table rows")
    parser.add_argument("--ft", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a row variant of the RL rows: FinetuneConfig overrides (e.g. si_decay=0.99); "
                             "its runs get their own directories and table rows")
    parser.add_argument("--route", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a variant of the +route and +distill rows: EvaluateConfig's route_ahead or route_sight "
                             "(e.g. route_sight=0.45); the same runs routed (or recorded routed) otherwise, in "
                             "their own table rows")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "goal_targets",
                        help="demos, play data and runs (kept so that a killed benchmark resumes)")
    args = parser.parse_args()
    bc = parse_settings(args.bc, BCConfig, "--bc", "epochs=50")
    ft = parse_settings(args.ft, FinetuneConfig, "--ft", "si_decay=0.99")
    route = parse_settings(args.route, EvaluateConfig, "--route", "route_sight=0.45")
    other = sorted(set(route) - {"route_ahead", "route_sight"})
    if other:
        raise SystemExit(f"--route takes route_ahead and route_sight only, not {', '.join(other)}")
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache_path = args.results / "goal_targets.json"
    for task in args.tasks:
        for row in args.rows:
            steps = (args.steps or BUDGET[task]) if "ppo" in row or "sac" in row else 0
            for seed in args.seeds:
                rl = ft if steps else {}
                how = route if row.endswith(("+route", "+distill")) else {}
                key = (task, row, seed, steps, settings_tag(bc, rl, how))
                done = {(r["task"], r["row"], r["seed"], r.get("steps", 0),
                         settings_tag(r.get("bc"), r.get("ft"), r.get("route"))) for r in load_runs(cache_path)}
                if key in done:
                    continue
                run = {"task": task, "row": row, "seed": seed, "steps": steps, "demos": DEMOS[task],
                       **({"bc": bc} if bc else {}), **({"ft": rl} if rl else {}), **({"route": how} if how else {}),
                       **run_row(task, row, seed, steps, args.workdir, bc, rl, how)}
                print(json.dumps({k: v for k, v in run.items() if k != "curve"}), flush=True)
                append_run(cache_path, run)
    cache = {"runs": load_runs(cache_path)}
    if cache["runs"]:
        (args.results / "goal_targets.md").write_text(summarise(cache["runs"]))
        plot(cache["runs"], args.results / "goal_targets.png")
        print(summarise(cache["runs"]))


if __name__ == "__main__":
    main()
