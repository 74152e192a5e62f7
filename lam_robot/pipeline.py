"""The whole product on one task: record -> train-bc -> finetune -> evaluate, with a final table.

Every stage writes into one directory and picks up where it stopped, so re-running a killed
pipeline continues it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lam_robot.config import PipelineConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.evaluation import EvalResult, evaluate_policy
from lam_robot.recording import record_expert
from lam_robot.rollout import one_torch_thread
from lam_robot.sources import load_policy
from lam_robot.tasks import TaskSpec, load_task
from lam_robot.train.bc import train_bc
from lam_robot.train.finetune import finetune


def record_demos(task: TaskSpec, path: Path, episodes: int, noise: float, seed: int) -> None:
    """Top the demo file up to ``episodes`` noisy expert episodes (a re-run records only what is missing)."""
    have = 0
    if path.exists():
        with DemoFile(path) as demos:
            have = len(demos)
    if have >= episodes:
        return
    print(f"[1/4] recording {episodes - have} expert demos (noise {noise}) -> {path}")
    record_expert(task, path, episodes - have, seed=seed + have, noise=noise)


def run_pipeline(config: PipelineConfig | None = None, /, **fields: Any) -> dict[str, EvalResult]:
    """Record, behaviour-clone, fine-tune and evaluate on one task; keyword fields build the config."""
    config = PipelineConfig.build(config, fields)
    with one_torch_thread():  # every stage runs small batches
        return _run(config)


def _run(c: PipelineConfig) -> dict[str, EvalResult]:
    task = load_task(c.task)
    out = c.out
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demos.hdf5"
    record_demos(task, data, c.demos, c.noise, c.seed)
    print(f"[2/4] behaviour cloning -> {out / 'bc'}")
    train_bc(data=data, out=out / "bc", epochs=c.bc_epochs, seed=c.seed)
    print(f"[3/4] PPO fine-tuning for {c.finetune_steps} env steps -> {out / 'finetune'}")
    finetune(policy=out / "bc", out=out / "finetune", steps=c.finetune_steps, seed=c.seed, demos=data)
    print(f"[4/4] evaluating on {c.episodes} unseen seeded episodes")
    policies = {
        name: load_policy(source, task)
        for name, source in (("expert", "expert"), ("bc", str(out / "bc")), ("finetuned", str(out / "finetune")))
    }
    results = {
        name: evaluate_policy(task, policy, name, c.episodes, seed=1000, n_envs=4, video=out / f"{name}.mp4")
        for name, policy in policies.items()
    }
    (out / "results.json").write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2) + "\n")
    print(
        f"\n{task.name}: {c.demos} demos (noise {c.noise}), BC {c.bc_epochs} epochs, PPO {c.finetune_steps} env steps"
    )
    print(f"{'policy':<10} {'success':>8}  {'95% CI':>13}  {'return':>8}  {'length':>7}")
    for name, r in results.items():
        print(
            f"{name:<10} {100 * r.success_rate:7.1f}%  {100 * r.ci_low:5.1f}-{100 * r.ci_high:5.1f}%  "
            f"{r.mean_return:8.2f}  {r.mean_length:7.1f}"
        )
    print(f"learning curve: {out / 'finetune' / 'curves.png'}; videos and results.json in {out}")
    return results
