"""Where fine-tuning's time goes: one PPO run with the Transformer actor and one with SB3's MLP,
timers around each part, in one run (variants alternating).

    python benchmarks/finetune_profile.py [--task grasp] [--n-envs 8] [--steps 4096] [--repeats 2] [--demos]

Parts (seconds, summed over the run): env stepping (the VecEnv's step, history assembly excluded),
history assembly (``HistoryObservation``), rollout forward (the policy's forward without gradients),
PPO update (SB3's training epochs), BC regulariser (with ``--demos``), and the rest of ``learn``
(rollout buffer, callbacks, tensors to and from numpy). Timers cost a few microseconds per call.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.policies import ActorCriticPolicy  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from finetune_speed import PPO_SETTINGS, bc_checkpoint, mlp_ppo  # noqa: E402
from lam_robot.config import FinetuneConfig  # noqa: E402
from lam_robot.policy.sb3_bridge import HistoryObservation  # noqa: E402
from lam_robot.train.finetune import FinetunePPO, FinetuneRun  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)


def timed(owner, name: str, part: str, when=lambda *a, **k: True) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if not when(*args, **kwargs):
            return original(*args, **kwargs)
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMES[part] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def install_timers() -> None:
    timed(DummyVecEnv, "step_wait", "env")
    timed(HistoryObservation, "_push", "history")
    timed(ActorCriticPolicy, "forward", "rollout forward", when=lambda *a, **k: not torch.is_grad_enabled())
    timed(PPO, "train", "ppo update")  # FinetunePPO.train runs the BC regulariser after PPO's own
    timed(FinetunePPO, "_bc_regularise", "bc regulariser")


def run_mlp(task_name: str, n_envs: int, steps: int) -> None:
    model = mlp_ppo(task_name, n_envs)
    start = time.perf_counter()
    model.learn(steps)
    TIMES["total"] += time.perf_counter() - start
    model.get_env().close()


def run_transformer(bc: Path, out: Path, n_envs: int, steps: int, demos: Path | None) -> None:
    config = FinetuneConfig(policy=str(bc), out=str(out), steps=steps, n_envs=n_envs, critic_warmup=0,
                            eval_every=10**9, overwrite=True, demos=str(demos) if demos else None, **PPO_SETTINGS)
    run = FinetuneRun(config, progress=False)
    start = time.perf_counter()
    run.model.learn(steps)
    TIMES["total"] += time.perf_counter() - start
    run.model.get_env().close()


def breakdown(times: dict[str, float], steps: int) -> dict[str, float]:
    parts = dict(times)
    parts["env"] = parts.get("env", 0.0) - parts.get("history", 0.0)  # the wrapper runs inside step_wait
    parts["rest"] = parts["total"] - sum(v for k, v in parts.items() if k != "total")
    return {k: round(v, 3) for k, v in parts.items()} | {"steps_per_s": round(steps / parts["total"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="grasp")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--demos", action="store_true", help="also a run with the BC regulariser (its defaults)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "finetune_profile.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    install_timers()
    runs: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        bc = bc_checkpoint(args.task, Path(tmp))
        variants = {"mlp": lambda r: run_mlp(args.task, args.n_envs, args.steps),
                    "transformer": lambda r: run_transformer(bc, Path(tmp) / f"ft{r}", args.n_envs, args.steps, None)}
        if args.demos:
            variants["transformer+bc"] = lambda r: run_transformer(
                bc, Path(tmp) / f"ftd{r}", args.n_envs, args.steps, Path(tmp) / "demos.hdf5")
        for r in range(args.repeats):
            for name, fn in variants.items():
                TIMES.clear()
                fn(r)
                runs[name].append(breakdown(TIMES, args.steps))
    report = {"task": args.task, "n_envs": args.n_envs, "steps": args.steps, "ppo_settings": PPO_SETTINGS,
              "load_avg_1min": os.getloadavg()[0], "runs": runs,
              "median": {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}}
    for name, parts in report["median"].items():
        print(f"{name:15s} " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
