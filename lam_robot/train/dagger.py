"""HG-DAgger with the scripted expert standing in for the human.

Each round the current policy drives; the expert watches every step and takes over where the
policy's action strays from its own by more than ``threshold`` (and hands back once they agree
within half of it). Those episodes, with their ``interventions`` flags, are appended to the
demo file, BC is retrained on demos plus intervention segments, and success is measured.
The run directory resumes: finished rounds are kept in ``rounds.json``, and a round killed midway
keeps the episodes it had recorded (each is recorded once).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lam_robot.config import BCConfig, DaggerConfig
from lam_robot.data.dataset import DemoFile
from lam_robot.errors import LamRobotError
from lam_robot.evaluation import EvalResult, evaluate_policy
from lam_robot.plots import plot_dagger_rounds
from lam_robot.policy.checkpoint import load_checkpoint, write_json
from lam_robot.recording import record_episodes
from lam_robot.rollout import Obs, Policy, one_torch_thread
from lam_robot.sources import load_policy
from lam_robot.tasks import TaskSpec, load_task, require_same_task


class ExpertGate:
    """Predict protocol: the policy acts unless the expert disagrees; ``intervened`` says who acted."""

    def __init__(self, policy: Policy, expert: Policy, threshold: float) -> None:
        self.policy, self.expert, self.threshold = policy, expert, threshold
        self.intervened = np.zeros(0, dtype=bool)

    def predict(
        self, obs: Obs, state: Any = None, episode_start: np.ndarray | None = None, deterministic: bool = True
    ) -> tuple[np.ndarray, Any]:
        """The policy's actions, replaced by the expert's in the envs where the two disagree."""
        robot, state = self.policy.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        expert, _ = self.expert.predict(obs, deterministic=True)
        robot, expert = np.atleast_2d(robot), np.atleast_2d(expert)
        gap = np.linalg.norm(robot - expert, axis=-1)
        if len(self.intervened) != len(gap):
            self.intervened = np.zeros(len(gap), dtype=bool)
        if episode_start is not None:
            self.intervened[np.asarray(episode_start, dtype=bool)] = False
        self.intervened = np.where(self.intervened, gap > self.threshold / 2, gap > self.threshold)
        return np.where(self.intervened[:, None], expert, robot), state


def dagger(
    config: DaggerConfig | None = None, /, *, progress: Callable[[str], None] = print, **fields: Any
) -> list[dict[str, Any]]:
    """HG-DAgger rounds 0 (the start) .. R in ``config.out`` (resumable); one row per round: success ± CI,
    data used. Keyword fields build the config."""
    config = DaggerConfig.build(config, fields)
    with one_torch_thread():  # small-batch rollouts and retraining, as the rest of the toolkit
        return _rounds(config, progress)


def _rounds(config: DaggerConfig, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from lam_robot.policy.bc_policy import TransformerPolicy
    from lam_robot.train.bc import train_bc

    start = load_checkpoint(config.policy)
    task = start.task
    if config.task is not None:
        require_same_task(
            task,
            load_task(config.task),
            f"{config.policy} was trained on task",
            "give a checkpoint trained on that task",
        )
    training = start.meta.get("training")
    if training is None:
        raise LamRobotError(f"{config.policy} has no BC training settings (not from train-bc); give a train-bc run")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data.hdf5"
    rows_path = out / "rounds.json"
    rows: list[dict[str, Any]] = json.loads(rows_path.read_text()) if rows_path.exists() else []
    if not rows:
        _start_data(config, training, task, data)
        write_json(out / "dagger.json", config.to_dict())
    expert = load_policy(config.expert, task)

    def measure(round_: int, checkpoint: str, policy: Policy) -> None:
        result = evaluate_policy(
            task, policy, checkpoint, config.eval_episodes, seed=config.eval_seed, n_envs=config.n_envs
        )
        with DemoFile(data) as demos:
            summary = demos.summary()
        rows.append(_row(round_, checkpoint, result, summary))
        write_json(rows_path, rows)  # type: ignore[arg-type]
        progress(
            f"round {round_}: success {100 * result.success_rate:.0f}% "
            f"({100 * result.ci_low:.0f}-{100 * result.ci_high:.0f}%), {summary['interventions']} "
            f"intervention steps in {summary['demos']} episodes"
        )

    if not rows:
        measure(0, str(config.policy), TransformerPolicy.load(config.policy))
    for round_ in range(len(rows), config.rounds + 1):
        current = TransformerPolicy.load(rows[-1]["checkpoint"])
        gate = ExpertGate(current, expert, config.threshold)
        # A run killed during this round may have recorded some of its episodes (the file holds whole
        # episodes only; rounds.json gains the round after them): record only the rest, on new seeds.
        with DemoFile(data) as demos:
            recorded = demos.demo_names[rows[-1]["episodes_in_data"] :]
            seeds = [int(demos.demo(name).attrs["seed"]) for name in recorded]
        if len(recorded) < config.episodes_per_round:
            first_seed = max(seeds, default=10_000 * round_ - 1) + 1
            missing = config.episodes_per_round - len(recorded)
            record_episodes(task, gate, data, missing, "policy", seed=first_seed, n_envs=config.n_envs)
        round_dir = out / f"round_{round_}"
        bc = BCConfig.from_dict(
            {
                **training,
                "data": data,
                "more_data": [],  # a multi-task start retrains on this task's aggregated data only
                "out": round_dir,
                "epochs": config.epochs or training["epochs"],
                "eval_every": None,
            }
        )
        train_bc(bc, overwrite=True, progress=False)
        measure(round_, str(round_dir), TransformerPolicy.load(round_dir))
    plot_dagger_rounds(rows, out / "rounds.png", task.name)
    return rows


def _start_data(config: DaggerConfig, training: dict[str, Any], task: TaskSpec, data: Path) -> None:
    source = Path(config.demos or training["data"])
    with DemoFile(source) as demos:
        require_same_task(
            demos.task,
            task,
            f"{source} holds demos of task",
            "give demos of the task the policy was trained on with --demos",
        )
    tmp = data.with_name(f".{data.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(data)


def _row(round_: int, checkpoint: str, result: EvalResult, summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "round": round_,
        "checkpoint": checkpoint,
        "success_rate": result.success_rate,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "episodes_in_data": summary["demos"],
        "steps_in_data": summary["steps"],
        "intervention_steps": summary["interventions"],
        "mean_return": result.mean_return,
    }
