"""The whole product on one task: record -> train-bc -> finetune -> evaluate, with a final table.

Every stage writes into one directory and picks up where it stopped, so re-running a killed
pipeline continues it.
"""

from __future__ import annotations

import json
from pathlib import Path

from lam_robot.config import BCConfig, FinetuneConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.evaluation import EvalResult, evaluate_policy
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.recording import record_expert
from lam_robot.sources import resolve_policy
from lam_robot.tasks import TaskSpec, load_task
from lam_robot.train.bc import train_bc
from lam_robot.train.finetune import FinetuneRun


def record_demos(task: TaskSpec, path: Path, episodes: int, noise: float, seed: int) -> None:
    have = 0
    if path.exists():
        with DemoFile(path) as demos:
            have = len(demos)
    if have >= episodes:
        return
    print(f"[1/4] recording {episodes - have} expert demos (noise {noise}) -> {path}")
    record_expert(task, path, episodes - have, seed=seed + have, noise=noise)


def run_pipeline(
    task_name: str,
    out: Path,
    demos: int = 20,
    noise: float = 0.3,
    bc_epochs: int = 30,
    finetune_steps: int = 20_000,
    episodes: int = 50,
    seed: int = 0,
) -> dict[str, EvalResult]:
    task = load_task(task_name)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "demos.hdf5"
    record_demos(task, data, demos, noise, seed)
    print(f"[2/4] behaviour cloning -> {out / 'bc'}")
    train_bc(BCConfig(data=str(data), out=str(out / "bc"), epochs=bc_epochs, seed=seed))
    print(f"[3/4] PPO fine-tuning for {finetune_steps} env steps -> {out / 'finetune'}")
    FinetuneRun(
        FinetuneConfig(
            policy=str(out / "bc"), out=str(out / "finetune"), steps=finetune_steps, seed=seed, demos=str(data)
        )
    ).train()
    print(f"[4/4] evaluating on {episodes} unseen seeded episodes")
    env = task.make_env()
    policies = {
        "expert": resolve_policy("expert", task, env),
        "bc": TransformerPolicy.load(out / "bc"),
        "finetuned": TransformerPolicy.load(out / "finetune"),
    }
    env.close()
    results = {
        name: evaluate_policy(task, policy, name, episodes, seed=1000, n_envs=4, video=out / f"{name}.mp4")
        for name, policy in policies.items()
    }
    (out / "results.json").write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2) + "\n")
    print(f"\n{task.name}: {demos} demos (noise {noise}), BC {bc_epochs} epochs, PPO {finetune_steps} env steps")
    print(f"{'policy':<10} {'success':>8}  {'95% CI':>13}  {'return':>8}  {'length':>7}")
    for name, r in results.items():
        print(
            f"{name:<10} {100 * r.success_rate:7.1f}%  {100 * r.ci_low:5.1f}-{100 * r.ci_high:5.1f}%  "
            f"{r.mean_return:8.2f}  {r.mean_length:7.1f}"
        )
    print(f"learning curve: {out / 'finetune' / 'curves.png'}; videos and results.json in {out}")
    return results
