"""Our Transformer BC and BC -> PPO against imitation's BC-MLP, DAgger and GAIL, on the same demos
and the same evaluation seeds.

    python benchmarks/baselines_compare.py                                  # the issue's grid (hours)
    python benchmarks/baselines_compare.py --tasks grasp --demos 10 100 --ppo-steps 20000 --adv-steps 50000

For each task and demo count: expert demos (seed 0), then each method once per seed; every
policy is evaluated on the same 50 episodes (seeds 1000+). Each run is cached in the JSON,
so an interrupted benchmark resumes. Writes benchmarks/results/baselines_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.baselines import train_baseline  # noqa: E402
from lam_robot.config import BCConfig, FinetuneConfig  # noqa: E402
from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.evaluation import evaluate_policy, wilson_interval  # noqa: E402
from lam_robot.sources import resolve_policy  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402
from lam_robot.train.finetune import finetune  # noqa: E402

from bc_targets import epochs_for  # noqa: E402  (this directory is on sys.path when run as a script)
from finetune_targets import OLD_SETTINGS  # noqa: E402

RESULTS = Path(__file__).parent / "results"
METHODS = ("transformer-bc", "bc+ppo", "bc-mlp", "dagger", "gail")
# bc+ppo results also depend on the fine-tuning defaults (OLD_SETTINGS: those of runs cached before they were recorded).
FINETUNE = {k: getattr(FinetuneConfig, k) for k in OLD_SETTINGS}


def train(method: str, task_name: str, data: Path, workdir: Path, seed: int, args) -> tuple[Path, int]:
    """Returns the checkpoint and the env steps the method used beyond the demos."""
    bc_dir = workdir / f"transformer-bc-{seed}"
    if method in ("transformer-bc", "bc+ppo") and not (bc_dir / "config.json").exists():
        config = BCConfig(data=str(data), out=str(bc_dir), seed=seed)
        config.epochs = epochs_for(data, args.bc_steps, config.batch_size, config.context)
        train_bc(config, progress=False)
    if method == "transformer-bc":
        return bc_dir, 0
    out = workdir / f"{method}-{seed}"
    if method == "bc+ppo":
        finetune(FinetuneConfig(policy=str(bc_dir), out=str(out), steps=args.ppo_steps, seed=seed,
                                demos=str(data), eval_every=args.ppo_steps, eval_episodes=10, overwrite=True),
                 progress=False)
        return out, args.ppo_steps
    steps = {"bc-mlp": args.bc_mlp_steps, "dagger": args.dagger_steps, "gail": args.adv_steps}[method]
    result = train_baseline(method, data, load_task(task_name), out, steps, seed=seed)
    return out, result.env_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["grasp", "nav-medium"])
    parser.add_argument("--demos", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--bc-steps", type=int, default=2000,
                        help="gradient steps of Transformer BC (as in bc_targets.py), whatever the demo count")
    parser.add_argument("--ppo-steps", type=int, default=300_000)
    parser.add_argument("--bc-mlp-steps", type=int, default=20_000)
    parser.add_argument("--dagger-steps", type=int, default=20_000)
    parser.add_argument("--adv-steps", type=int, default=300_000)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    cache_path = args.results / "baselines_compare.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {"runs": []}
    # Results depend on the budgets, so they are part of the cache key and the table shows only these.
    budgets = {k: getattr(args, k) for k in ("bc_steps", "ppo_steps", "bc_mlp_steps", "dagger_steps", "adv_steps")}

    def current(r: dict) -> bool:
        return r.get("budgets") == budgets and (r["method"] != "bc+ppo" or r.get("finetune", OLD_SETTINGS) == FINETUNE)

    done = {(r["task"], r["demos"], r["method"], r["seed"]) for r in cache["runs"] if current(r)}
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in args.tasks:
            task = load_task(task_name)
            for n in args.demos:
                todo = [(m, s) for m in args.methods for s in args.seeds if (task_name, n, m, s) not in done]
                if not todo:
                    continue
                workdir = Path(tmp) / f"{task_name}-{n}"
                workdir.mkdir()
                data = workdir / "demos.hdf5"
                record_expert(task, data, n, seed=0)
                for method, seed in todo:
                    start = time.perf_counter()
                    checkpoint, env_steps = train(method, task_name, data, workdir, seed, args)
                    env = task.make_env()
                    policy = resolve_policy(str(checkpoint), task, env, seed=seed)
                    env.close()
                    result = evaluate_policy(task, policy, method, args.episodes, seed=1000, n_envs=5)
                    run = {"task": task_name, "demos": n, "method": method, "seed": seed, "budgets": budgets,
                           "success_rate": result.success_rate, "successes": result.successes,
                           "episodes": result.episodes, "env_steps": env_steps,
                           "seconds": round(time.perf_counter() - start, 1)}
                    if method == "bc+ppo":
                        run["finetune"] = FINETUNE
                    print(json.dumps(run), flush=True)
                    cache["runs"].append(run)
                    cache_path.write_text(json.dumps(cache, indent=1) + "\n")
    lines = ["| task | demos | method | seeds | success | 95% Wilson CI | env steps beyond demos |",
             "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in filter(current, cache["runs"]):
        groups.setdefault((r["task"], r["demos"], METHODS.index(r["method"]), r["method"]), []).append(r)
    for (task_name, n, _, method), rs in sorted(groups.items()):
        wins, total = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        low, high = wilson_interval(wins, total)
        lines.append(f"| {task_name} | {n} | {method} | {len(rs)} | {100 * wins / total:.0f}% | "
                     f"{100 * low:.0f}-{100 * high:.0f}% | {rs[0]['env_steps']} |")
    (args.results / "baselines_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
