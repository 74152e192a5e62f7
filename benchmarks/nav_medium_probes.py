"""Why BC then PPO does not solve nav-medium from 5 demos: two probes behind the README's diagnosis.

    python benchmarks/nav_medium_probes.py          # after finetune_targets.py has made its BC checkpoints

1. The 5-demo BC's success when the goal is near: episodes whose goal is at most R grid cells
   (shortest path) from the start, R = 2, 4, and the task's own goals; the task's 600-step limit.
2. SB3's PPO with its default MLP policy, from scratch, with the same shortest-path shaping as
   `finetune --dense`: does plain PPO learn this maze within the budget?
Writes benchmarks/results/nav_medium_probes.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from gymnasium.wrappers import FlattenObservation  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from lam_robot.policy.bc_policy import TransformerPolicy  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.curriculum import MazeGoalCurriculum  # noqa: E402
from lam_robot.train.shaping import MazePathShaping  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WORKDIR = Path(__file__).parent / ".work" / "finetune_targets"


def success_rate(env, act, episodes: int, seed: int) -> float:
    """``act(obs, episode_start)`` drives ``env`` for ``episodes`` seeded episodes."""
    wins = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        start = True
        while True:
            obs, _, terminated, truncated, info = env.step(act(obs, start))
            start = False
            if terminated or truncated:
                break
        wins += bool(info["success"])
    return wins / episodes


def bc_by_goal_radius(bc: Path, episodes: int) -> dict[str, float]:
    task = load_task("nav-medium")
    policy = TransformerPolicy.load(bc)
    history = None

    def act(obs, start):
        nonlocal history  # the policy's observation history; episode_start resets it
        action, history = policy.predict({k: v[None] for k, v in obs.items()}, history, np.array([start]))
        return action[0]

    rates = {}
    for radius in (2.0, 4.0):  # no promotion, no early cut: only the goals are nearer
        env = MazeGoalCurriculum(task.make_env(), task.is_success, radius=radius, window=10**9,
                                 steps_per_cell=10**9)
        rates[f"goal within {radius:g} cells"] = success_rate(env, act, episodes, seed=100)
        env.close()
    env = task.make_env()
    rates["task's own goals"] = success_rate(env, act, episodes, seed=100)
    env.close()
    return rates


def mlp_ppo_with_shaping(steps: int, eval_every: int, episodes: int) -> list[tuple[int, float]]:
    task = load_task("nav-medium")

    def make():
        return FlattenObservation(MazePathShaping(task.make_env(), 0.99))

    model = PPO("MlpPolicy", make_vec_env(make, n_envs=8, seed=0), n_steps=256, batch_size=256, gamma=0.99,
                seed=0, device="cpu", verbose=0)
    env = make()
    curve = []
    while model.num_timesteps < steps:
        model.learn(eval_every, reset_num_timesteps=False)
        curve.append((model.num_timesteps, success_rate(env, lambda o, _: model.predict(o, deterministic=True)[0],
                                                        episodes, seed=5000)))
        print(f"MLP PPO {curve[-1][0]} steps: {100 * curve[-1][1]:.0f}%", flush=True)
    env.close()
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bc", type=Path, default=WORKDIR / "nav-medium-bc-0", help="BC checkpoint from 5 demos")
    parser.add_argument("--bc-episodes", type=int, default=20)
    parser.add_argument("--ppo-steps", type=int, default=300_000)
    parser.add_argument("--eval-every", type=int, default=51_200)
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "nav_medium_probes.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    near = bc_by_goal_radius(args.bc, args.bc_episodes)
    print(f"BC ({args.bc}): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in near.items()), flush=True)
    curve = mlp_ppo_with_shaping(args.ppo_steps, args.eval_every, args.eval_episodes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bc": str(args.bc), "bc_episodes": args.bc_episodes, "bc_success": near,
                                    "mlp_ppo_shaped": {"n_envs": 8, "n_steps": 256, "gamma": 0.99,
                                                       "eval_episodes": args.eval_episodes, "curve": curve}},
                                   indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
