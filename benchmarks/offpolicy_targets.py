"""Off-policy targets (issue 18): BC then SAC (demos in the buffer, HER) against its peers.

    python benchmarks/offpolicy_targets.py                          # the full grid (days on 2 CPU cores)
    python benchmarks/offpolicy_targets.py --tasks nav-medium --seeds 0 --variants bc+sac --steps 15000   # a probe

Per task: expert demos with --noise 0.3 (10 for grasp, 5 for nav-medium, as finetune_targets.py),
BC per seed (400 epochs on all demos, no validation split, so the last epoch is kept), then per variant:
- bc+sac: `finetune --algo sac --demos DEMOS` with today's defaults;
- sac+her-scratch: plain SB3 SAC + HerReplayBuffer (future, 4 goals), SB3 defaults but learning_starts
  = horizon + 1 (HER samples only finished episodes), MultiInputPolicy
  (MLP) on the env's own observation: the peer a new user would try;
- bc+ppo: `finetune --demos DEMOS` (PPO) with today's defaults;
- sac-scratch: `finetune --algo sac --from-scratch` without demos and with SB3's SAC defaults (initial
  entropy coefficient 1, log-std 0, no critic warm-up, actor at the critic's learning rate, SB3's actor
  update): the same Transformer actor and critics as bc+sac, to separate what the demos add from what the network does.
`--sac KEY=VALUE ...` makes a variant of bc+sac and sac-scratch (FinetuneConfig overrides, e.g. utd=0.25
actor_update=sac): its own run directories, table rows and dashed curves.
Success on 50 unseen episodes (seeds 10_000 + 1000 x seed) every 10% of the budget, with env steps and
wall-clock seconds. Budgets: nav-medium 200k, grasp 100k env steps (--steps overrides both).
Targets: bc+sac >= 95% within the budget; above sac+her-scratch at every evaluation point.
Finished runs are cached in benchmarks/results/offpolicy_targets.json; an unfinished finetune run
resumes from its OUT/last/ (its replay buffer is refilled, see the README); an unfinished
sac+her-scratch run resumes from its last evaluation (model, replay buffer and curve saved in the workdir).
Writes offpolicy_targets.{json,md} and offpolicy_curves.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from overrides import parse_settings, settings_tag  # noqa: E402
from run_cache import append_run, finetune_curve, load_runs, made_once  # noqa: E402

from lam_robot.config import BCConfig, FinetuneConfig, RecordConfig  # noqa: E402
from lam_robot.evaluation import evaluate_policy, wilson_interval  # noqa: E402
from lam_robot.recording import record  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402
from lam_robot.train.finetune import finetune  # noqa: E402

RESULTS = Path(__file__).parent / "results"
DEMOS = {"grasp": 10, "nav-medium": 5}
BUDGET = {"grasp": 100_000, "nav-medium": 200_000}
VARIANTS = ("bc+sac", "sac+her-scratch", "bc+ppo", "sac-scratch")
SCRATCH = {"from_scratch": True, "demos": None, "init_log_std": 0.0, "init_ent_coef": 1.0, "actor_lr_scale": 1.0,
           "critic_warmup": 0, "learning_starts": 100, "actor_update": "sac"}
"""sac-scratch: our finetune --algo sac with a random Transformer actor, no demos, SB3's SAC defaults otherwise."""
EPISODES = 50


def prepare_demos_and_bc(task: str, seed: int, workdir: Path) -> tuple[Path, Path]:
    """The noisy demos (every one in mask/train, as goal_targets.py records them) and this seed's BC."""
    data = made_once(workdir / f"{task}.hdf5", lambda p: record(RecordConfig(
        task=task, out=p, episodes=DEMOS[task], noise=0.3, seed=0, valid_fraction=0.0, n_envs=2), progress=False))
    bc = workdir / f"{task}-bc-{seed}"
    if not (bc / "config.json").exists():
        train_bc(BCConfig(data=str(data), out=str(bc), epochs=400, seed=seed), progress=False)
    return data, bc


def run_finetune(task: str, seed: int, variant: str, steps: int, workdir: Path,
                 overrides: dict | None = None) -> list[tuple[int, float, float]]:
    """`finetune` (SAC or PPO) from this seed's BC with the demos, with ``overrides`` of its FinetuneConfig; the
    curve (env steps, success, seconds)."""
    data, bc = prepare_demos_and_bc(task, seed, workdir)
    out = workdir / f"{task}-{variant}-{seed}{settings_tag(overrides, prefix='-')}-{steps}"
    settings = {"demos": str(data), "algo": "ppo" if variant == "bc+ppo" else "sac",
                **(SCRATCH if variant == "sac-scratch" else {}), **(overrides or {})}
    config = FinetuneConfig(policy=str(bc), out=str(out), steps=steps, seed=seed,
                            eval_every=max(1, steps // 10), eval_episodes=EPISODES, **settings)
    finetune(config, progress=False)
    return finetune_curve(out, "success_rate", "wall_seconds")


def run_peer(task_name: str, seed: int, steps: int, workdir: Path | None = None) -> list[tuple[int, float, float]]:
    """SB3 SAC + HER from scratch, SB3 defaults, evaluated like the finetune runs. With a ``workdir``, the model,
    its replay buffer and the curve so far are saved at every evaluation, and a killed run resumes from them."""
    from stable_baselines3 import SAC, HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback

    task = load_task(task_name)
    state = workdir / f"{task_name}-sac+her-scratch-{seed}-{steps}" if workdir is not None else None
    saved = json.loads((state / "curve.json").read_text()) if state and (state / "curve.json").exists() else None
    if saved is not None:
        assert state is not None
        model = SAC.load(state / saved["model"], env=task.make_env(), device="cpu")  # HER needs the env
        model.load_replay_buffer(state / saved["replay"])  # its unfinished episode is closed as truncated
        curve: list[tuple[int, float, float]] = [tuple(p) for p in saved["curve"]]  # type: ignore[misc]
        print(f"peer: resumed {state.name} at {model.num_timesteps} env steps", flush=True)
    else:
        model = SAC("MultiInputPolicy", task.make_env(), replay_buffer_class=HerReplayBuffer,
                    replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
                    learning_starts=task.horizon + 1,  # HER cannot sample before an episode ends (SB3's: 100)
                    seed=seed, device="cpu", verbose=0)
        curve = []
    start = time.perf_counter() - (curve[-1][2] if curve else 0.0)
    points = [p for p in range(0, steps + 1, max(1, steps // 10)) if not curve or p > curve[-1][0]]

    def evaluate(env_steps: int) -> None:
        result = evaluate_policy(task, model, "peer", EPISODES, seed=10_000 + seed * 1000, n_envs=4)
        curve.append((env_steps, result.success_rate, round(time.perf_counter() - start, 1)))
        if state is not None and env_steps < steps:
            save_peer(model, state, curve)

    class Every(BaseCallback):
        def _on_step(self) -> bool:
            if points and self.num_timesteps >= points[0]:
                points.pop(0)
                evaluate(self.num_timesteps)
            return True

    if not curve:
        evaluate(points.pop(0))
    model.learn(steps - model.num_timesteps, callback=Every(), reset_num_timesteps=False)
    if curve[-1][0] != steps:
        evaluate(steps)
    if state is not None:
        shutil.rmtree(state, ignore_errors=True)  # finished: the curve goes to the results cache
    return curve


def save_peer(model, state: Path, curve: list[tuple[int, float, float]]) -> None:
    """Model and replay buffer under names of their step, then the curve naming them (written last, atomically),
    then the older files: a kill at any point leaves a complete snapshot that curve.json names."""
    state.mkdir(parents=True, exist_ok=True)
    names = {"model": f"model-{model.num_timesteps}.zip", "replay": f"replay-{model.num_timesteps}.pkl"}
    model.save(state / names["model"])
    model.save_replay_buffer(state / names["replay"])
    tmp = state / "curve.json.tmp"
    tmp.write_text(json.dumps({**names, "curve": curve}))
    os.replace(tmp, state / "curve.json")
    for old in state.iterdir():
        if old.name not in (*names.values(), "curve.json"):
            old.unlink()


def _name(run: dict) -> str:
    """A run's variant, with its ``--sac`` overrides if it has any: ``bc+sac (utd=0.25)``."""
    tag = settings_tag(run.get("settings"))
    return f"{run['variant']} ({tag})" if tag else run["variant"]


def summarise(runs: list[dict]) -> str:
    """The markdown table: per task and variant, success at the start and end, when 95% was reached, time."""
    lines = ["| task | variant | seeds | start | final (pooled) | 95% CI (pooled final) | first at >= 95% | "
             "env steps | wall seconds | env steps/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["task"], _name(r), r["steps"]), []).append(r)
    for (task, variant, steps), rs in sorted(groups.items()):
        wins = sum(round(r["curve"][-1][1] * EPISODES) for r in rs)
        low, high = wilson_interval(wins, EPISODES * len(rs))
        starts = ", ".join(f"{100 * r['curve'][0][1]:.0f}%" for r in rs)
        pooled = 100 * wins / (EPISODES * len(rs))
        finals = ", ".join(f"{100 * r['curve'][-1][1]:.0f}%" for r in rs) + f" ({pooled:.1f}%)"
        reached = ", ".join(next((f"{t // 1000}k" for t, s, _ in r["curve"] if s >= 0.95), "-") for r in rs)
        seconds = ", ".join(f"{r['curve'][-1][2]:.0f}" for r in rs)
        speed = ", ".join(f"{steps / max(r['curve'][-1][2], 1e-9):.0f}" for r in rs)
        lines.append(f"| {task} | {variant} | {len(rs)} | {starts} | {finals} | {100 * low:.0f}-{100 * high:.0f}% | "
                     f"{reached} | {steps} | {seconds} | {speed} |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], png: Path) -> None:
    """Success against env steps (top) and wall-clock seconds (bottom), one column per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in runs})
    fig, axes = plt.subplots(2, len(tasks), figsize=(7 * len(tasks), 9), squeeze=False)
    for col, task in enumerate(tasks):
        for row, (index, xlabel) in enumerate([(0, "env steps"), (2, "wall-clock seconds")]):
            ax = axes[row][col]
            labelled: set[str] = set()
            for r in (r for r in runs if r["task"] == task):
                label = f"{_name(r)} ({r['steps'] // 1000}k)"
                color = f"C{VARIANTS.index(r['variant']) if r['variant'] in VARIANTS else 9}"
                ax.plot([p[index] for p in r["curve"]], [p[1] for p in r["curve"]], "--" if r.get("settings") else "-",
                        color=color,
                        marker="os^v"[r["seed"] % 4], markersize=3, alpha=0.85,
                        label=None if label in labelled else label)
                labelled.add(label)
            ax.set_title(f"{task} (marker: seed 0 o, 1 s, 2 ^)")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"success rate ({EPISODES} episodes)")
            ax.set_ylim(0, 1.02)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)



def main() -> None:
    """Run the missing (task, seed, variant, steps) combinations, then write the table and the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["nav-medium", "grasp"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="env steps of every run (default: per task budget)")
    parser.add_argument("--sac", nargs="+", default=[], metavar="KEY=VALUE",
                        help="a variant of bc+sac and sac-scratch: FinetuneConfig overrides (e.g. utd=0.25 "
                             "actor_update=sac); its runs get their own directories and table rows")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "offpolicy_targets",
                        help="demos, BC checkpoints and unfinished runs (kept so a killed benchmark resumes)")
    args = parser.parse_args()
    sac = parse_settings(args.sac, FinetuneConfig, "--sac", "utd=0.25")
    torch.set_num_threads(1)
    args.results.mkdir(parents=True, exist_ok=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache_path = args.results / "offpolicy_targets.json"
    for task in args.tasks:
        steps = args.steps or BUDGET[task]
        for seed in args.seeds:
            for variant in args.variants:
                overrides = sac if variant in ("bc+sac", "sac-scratch") else {}
                key = (task, seed, variant, steps, settings_tag(overrides))
                if key in {(r["task"], r["seed"], r["variant"], r["steps"], settings_tag(r.get("settings")))
                           for r in load_runs(cache_path)}:
                    continue
                curve = (run_peer(task, seed, steps, args.workdir) if variant == "sac+her-scratch"
                         else run_finetune(task, seed, variant, steps, args.workdir, overrides))
                run = {"task": task, "seed": seed, "variant": variant, "steps": steps, "demos": DEMOS[task],
                       **({"settings": overrides} if overrides else {}), "curve": curve}
                print(json.dumps(run), flush=True)
                append_run(cache_path, run)
    cache = {"runs": load_runs(cache_path)}
    if cache["runs"]:
        (args.results / "offpolicy_targets.md").write_text(summarise(cache["runs"]))
        plot(cache["runs"], args.results / "offpolicy_curves.png")
        print(summarise(cache["runs"]))


if __name__ == "__main__":
    main()
