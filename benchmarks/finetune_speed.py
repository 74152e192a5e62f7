"""Fine-tuning speed: env steps/s of PPO with the Transformer actor against SB3 PPO with its
default MLP policy, on the same task and number of envs, in one run.

    python benchmarks/finetune_speed.py [--task grasp] [--n-envs 8] [--steps 8192] [--repeats 2]

Both use the same PPO settings (n_steps, batch size, epochs) and one torch thread; the two
variants alternate so machine noise hits both. Target: ratio >= 0.9. Where the time goes:
``finetune_profile.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from gymnasium.wrappers import FilterObservation, FlattenObservation  # noqa: E402

from lam_robot.config import BCConfig, FinetuneConfig  # noqa: E402
from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402
from lam_robot.train.finetune import FinetuneRun  # noqa: E402

PPO_SETTINGS = dict(n_steps=128, batch_size=256, n_epochs=5)
TARGET = 0.9


def bc_checkpoint(task_name: str, workdir: Path) -> Path:
    data = workdir / "demos.hdf5"
    record_expert(load_task(task_name), data, 10)
    train_bc(BCConfig(data=str(data), out=str(workdir / "bc"), epochs=2), progress=False)
    return workdir / "bc"


def mlp_ppo(task_name: str, n_envs: int) -> PPO:
    """The peer: SB3 PPO with its MLP policy on the task's flattened policy observation."""
    task = load_task(task_name)
    venv = make_vec_env(lambda: FlattenObservation(FilterObservation(task.make_env(), list(task.policy_obs_keys))),
                        n_envs=n_envs, seed=0)
    return PPO("MlpPolicy", venv, seed=0, device="cpu", **PPO_SETTINGS)


def time_mlp(task_name: str, n_envs: int, steps: int) -> float:
    model = mlp_ppo(task_name, n_envs)
    start = time.perf_counter()
    model.learn(steps)
    elapsed = time.perf_counter() - start
    model.get_env().close()
    return model.num_timesteps / elapsed


def time_transformer(bc: Path, out: Path, n_envs: int, steps: int) -> float:
    config = FinetuneConfig(policy=str(bc), out=str(out), steps=steps, n_envs=n_envs, critic_warmup=0,
                            eval_every=10**9, overwrite=True, **PPO_SETTINGS)
    run = FinetuneRun(config, progress=False)
    start = time.perf_counter()
    run.model.learn(steps)
    elapsed = time.perf_counter() - start
    run.model.get_env().close()
    return run.model.num_timesteps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="grasp")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "finetune_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mlp, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        bc = bc_checkpoint(args.task, Path(tmp))
        for r in range(args.repeats):
            mlp.append(time_mlp(args.task, args.n_envs, args.steps))
            ours.append(time_transformer(bc, Path(tmp) / f"ft{r}", args.n_envs, args.steps))
    ratio = statistics.median(ours) / statistics.median(mlp)
    report = {"task": args.task, "n_envs": args.n_envs, "steps": args.steps, "ppo_settings": PPO_SETTINGS,
              "mlp_steps_per_s": mlp, "transformer_steps_per_s": ours, "ratio": round(ratio, 3), "target": TARGET,
              "meets_target": ratio >= TARGET, "load_avg_1min": os.getloadavg()[0]}
    print(f"{args.task}, {args.n_envs} envs: SB3 MLP {statistics.median(mlp):.0f} steps/s, Transformer "
          f"{statistics.median(ours):.0f} steps/s, ratio {ratio:.2f} (target >= {TARGET}), load {os.getloadavg()[0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
