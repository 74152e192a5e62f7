"""Seconds per SAC env step (one gradient step each) with ``--actor-update awac``, with and without a graph for
SB3's actor call, in one run, variants alternating: one is today's update; the other rebuilds the graph that
SB3's actor loss would need, as the update did before (that loss is computed but not applied under AWAC).

    python benchmarks/sac_update_speed.py [--task nav-medium] [--steps 150] [--repeats 2]

Both variants start from the same BC checkpoint, seed and demos (no HER, so training starts after 64 steps),
so their weights must come out identical: the benchmark checks it. Writes results/sac_update_speed.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
from offpolicy_targets import prepare_demos_and_bc

import lam_robot.train.sac as sac
from lam_robot.config import FinetuneConfig
from lam_robot.rollout import one_torch_thread
from lam_robot.train.finetune import FinetuneRun

RESULTS = Path(__file__).parent / "results"
GRAPHLESS = sac._without_graph


def one_run(task: str, graph: bool, steps: int, workdir: Path) -> tuple[dict[str, torch.Tensor], float]:
    """Weights after ``steps`` trained env steps, and the seconds they took (collection and warm-up excluded)."""
    data, bc = prepare_demos_and_bc(task, 0, workdir)
    sac._without_graph = (lambda f: f) if graph else GRAPHLESS  # type: ignore[assignment]
    config = FinetuneConfig(policy=str(bc), out=str(workdir / f"speed-{graph}"), steps=steps, seed=0, algo="sac",
                            demos=str(data), her=False, learning_starts=64, critic_warmup=20, overwrite=True,
                            eval_every=10**9, eval_episodes=1)
    run = FinetuneRun(config, progress=False)
    run.model.learn(64 + 20)
    start = time.perf_counter()
    run.model.learn(steps, reset_num_timesteps=False)
    seconds = time.perf_counter() - start
    run.venv.close()
    shutil.rmtree(config.out, ignore_errors=True)
    return {k: v.clone() for k, v in run.model.policy.state_dict().items()}, seconds


def main() -> None:
    """Alternate the two variants, check their weights agree, write the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="nav-medium")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "offpolicy_targets")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"today": [], "with_graph": []}
    weights = {}
    with one_torch_thread():
        for _ in range(args.repeats):
            for name, graph in (("with_graph", True), ("today", False)):
                weights[name], elapsed = one_run(args.task, graph, args.steps, args.workdir)
                seconds[name].append(round(elapsed, 2))
    sac._without_graph = GRAPHLESS  # type: ignore[assignment]
    same = all(torch.equal(weights["today"][k], weights["with_graph"][k]) for k in weights["today"])
    result = {
        "task": args.task, "env_steps": args.steps, "repeats": args.repeats, "seconds": seconds,
        "ms_per_step": {k: round(1000 * statistics.median(v) / args.steps, 1) for k, v in seconds.items()},
        "ratio_today_over_with_graph": round(statistics.median(seconds["today"]) / statistics.median(
            seconds["with_graph"]), 3),
        "identical_weights": same,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sac_update_speed.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
