"""The `lam-robot` command line, and the only module that parses arguments. Each command is
parse (tyro, from the config dataclasses and their field docstrings) -> config -> one API call -> print."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from lam_robot import __version__
from lam_robot.config import (
    BaselineConfig,
    BCConfig,
    DaggerConfig,
    EvaluateConfig,
    FinetuneConfig,
    PipelineConfig,
    PretrainConfig,
    RecordConfig,
)
from lam_robot.errors import LamRobotError

EXIT_USER_ERROR = 2


@dataclasses.dataclass
class TasksArgs:
    """List the built-in tasks with their sizes."""

    json: bool = False
    """Print JSON instead of a table."""


@dataclasses.dataclass
class InspectArgs:
    """Validate a demo file (layout and values) and summarise it."""

    file: tyro.conf.Positional[Path]
    """HDF5 demo file."""
    json: bool = False
    """Print JSON instead of text."""
    task: str | None = None
    """Task to read a file written by another program as (robomimic's layout without a task spec); also
    checks that its obs/ has the task's observation keys."""


@dataclasses.dataclass
class ReplayArgs:
    """Replay recorded demos exactly: reset to the first MuJoCo state, re-apply the actions and report
    the largest observation difference from the recording (fails above 1e-6)."""

    file: tyro.conf.Positional[Path]
    """HDF5 demo file recorded with MuJoCo states."""
    demo: int | None = None
    """Replay only demo_N (default: every demo)."""
    video: Path | None = None
    """Write the replay to this MP4."""
    task: str | None = None
    """Task to read a file written by another program as (one without a task spec)."""


@dataclasses.dataclass
class ExportArgs:
    """Export a demo file to imitation trajectories, a local Minari dataset or a LeRobot v3.0 dataset."""

    file: tyro.conf.Positional[Path]
    """HDF5 demo file."""
    to: Literal["imitation", "minari", "lerobot"]
    """Target format."""
    out: str
    """imitation, lerobot: a new directory; minari: a dataset id such as lamrobot/grasp-expert-v0 (stored
    under MINARI_DATASETS_PATH or ~/.minari/datasets)."""
    overwrite: bool = False
    """Replace an earlier export at --out (a Minari dataset of that id, or an imitation/LeRobot directory)."""


@dataclasses.dataclass
class ImportArgs:
    """Import imitation trajectories, a Minari dataset or a LeRobot v3.0 dataset into a new demo file."""

    source: tyro.conf.Positional[str]
    """imitation: a directory saved by imitation; minari: a dataset id; lerobot: a dataset's root directory."""
    source_format: Annotated[Literal["imitation", "minari", "lerobot"], tyro.conf.arg(name="from")]
    """Format of the source."""
    task: str
    """Task the data was recorded in (name or path to a .toml spec)."""
    out: Path
    """New HDF5 demo file."""


COMMANDS: dict[str, Callable[..., Any]] = {
    "tasks": TasksArgs,
    "record": RecordConfig,
    "train-bc": BCConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "dagger": DaggerConfig,
    "pipeline": PipelineConfig,
    "baseline": BaselineConfig,
    "export": ExportArgs,
    "import": ImportArgs,
    "inspect": InspectArgs,
    "replay": ReplayArgs,
    "evaluate": EvaluateConfig,
}
DESCRIPTION = (
    "Record robot demonstrations to HDF5, behaviour-clone a Transformer policy, fine-tune it with PPO "
    "and evaluate any policy in MuJoCo. `lam-robot COMMAND --help` lists a command's options."
)


def run_tasks(args: TasksArgs) -> None:
    """`lam-robot tasks`: the built-in tasks as a table or JSON."""
    from lam_robot.tasks import list_tasks

    rows = list_tasks()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = ("task", "env id", "obs", "act", "horizon", "expert", "variant", "description")
    _print_table(
        header,
        [
            (
                r["name"],
                r["env_id"],
                str(r["policy_obs_size"]),
                str(r["action_size"]),
                str(r["horizon"]),
                r["expert"] or "-",
                r["variant"] or "-",
                r["description"],
            )
            for r in rows
        ],
    )


def run_record(config: RecordConfig) -> None:
    """`lam-robot record`: one call to ``recording.record``, then its summary line."""
    from lam_robot.recording import is_device, record

    stats = record(config)
    if config.intervene or is_device(config.source):
        extra = f", {stats.interventions} intervention steps" if config.intervene else ""
        print(
            f"saved {stats.kept} episodes ({stats.successes} successful, {stats.discarded} discarded{extra}) "
            f"to {config.out}"
        )
    elif config.source == "play":
        print(f"saved {stats.kept} unlabelled play episodes ({stats.steps} steps) to {config.out}")
    else:
        print(f"saved {stats.kept} episodes ({stats.successes} successful of {stats.run} run) to {config.out}")


def run_train_bc(config: BCConfig) -> None:
    """`lam-robot train-bc`: one call to ``train_bc``, then the best checkpoint."""
    from lam_robot.train.bc import train_bc

    result = train_bc(config)
    print(
        f"best checkpoint: {_bc_summary(result, 'demos')}; "
        f"{result.samples_per_second:.0f} samples/s; curves: {result.out / 'curves.png'}"
    )


def _bc_summary(result: Any, held_out: str) -> str:
    """'OUT (epoch E, valid loss L)', after a line saying where a resumed run picked up."""
    if result.resumed_from:
        print(f"resumed from epoch {result.resumed_from}")
    loss = f"n/a (no validation {held_out})" if result.best_valid_loss is None else f"{result.best_valid_loss:.4f}"
    return f"{result.out} (epoch {result.best_epoch}, valid loss {loss})"


def run_pretrain(config: PretrainConfig) -> None:
    """`lam-robot pretrain`: one call to ``pretrain``, then the checkpoint to start from."""
    from lam_robot.train.pretrain import pretrain

    result = pretrain(config)
    print(
        f"pretrained checkpoint: {_bc_summary(result, 'episodes')}; "
        f"start from it with `train-bc --init-from {result.out}` or `finetune --policy {result.out}`"
    )


def run_finetune(config: FinetuneConfig) -> None:
    """`lam-robot finetune`: one call to ``finetune``, then success before and after."""
    from lam_robot.train.finetune import finetune

    result = finetune(config)
    if result.resumed_from:
        buffer = f" ({result.restored_transitions} replay transitions restored)" if config.algo == "sac" else ""
        print(f"resumed from env step {result.resumed_from}{buffer}")
    else:
        print(f"success at the start: {100 * result.start_success:.1f}%")
    print(
        f"success after {result.env_steps} env steps: {100 * result.final_success:.1f}%; "
        f"{result.steps_per_second:.0f} env steps/s"
    )
    model = result.out / ("sac.zip" if config.algo == "sac" else "ppo.zip")
    print(f"checkpoint: {result.out} (BC format), {model} (SB3); curve: {result.out / 'curves.png'}")


def run_dagger(config: DaggerConfig) -> None:
    """`lam-robot dagger`: one call to ``dagger``, then a row per round."""
    from lam_robot.train.dagger import dagger

    rows = dagger(config)
    _print_table(
        ("round", "success", "95% CI", "episodes in data", "intervention steps"),
        [
            (
                str(r["round"]),
                f"{100 * r['success_rate']:.0f}%",
                f"{100 * r['ci_low']:.0f}-{100 * r['ci_high']:.0f}%",
                str(r["episodes_in_data"]),
                str(r["intervention_steps"]),
            )
            for r in rows
        ],
    )
    print(f"plot: {config.out / 'rounds.png'}")


def run_pipeline(config: PipelineConfig) -> None:
    """`lam-robot pipeline`: the whole product on one task."""
    from lam_robot.pipeline import run_pipeline as pipeline

    pipeline(config)  # prints its own stages and final table


def run_baseline(config: BaselineConfig) -> None:
    """`lam-robot baseline`: one call to ``baseline``, then where its checkpoint is."""
    from lam_robot.baselines import baseline

    result = baseline(config)
    print(
        f"{config.algo}: trained ({result.env_steps} env steps, {result.gradient_steps} gradient steps); "
        f"checkpoint {result.out} — evaluate it with `lam-robot evaluate --policy {result.out} --task {config.task}`"
    )


def run_export(args: ExportArgs) -> None:
    """`lam-robot export`: a demo file to imitation, Minari or LeRobot."""
    from lam_robot import interop

    export: dict[str, Callable[..., interop.Exported]] = {
        "imitation": interop.export_imitation,
        "minari": interop.export_minari,
        "lerobot": interop.export_lerobot,
    }
    result = export[args.to](args.file, args.out, overwrite=args.overwrite)
    print(f"exported {result.demos} demos of {args.file} to {args.to} {args.out}")
    if result.dropped:
        print(f"dropped (not kept by {args.to}): {'; '.join(result.dropped)}")


def run_import(args: ImportArgs) -> None:
    """`lam-robot import`: imitation, Minari or LeRobot data into a new demo file."""
    from lam_robot import interop
    from lam_robot.tasks import load_task

    importer: dict[str, Callable[..., int]] = {
        "imitation": interop.import_imitation,
        "minari": interop.import_minari,
        "lerobot": interop.import_lerobot,
    }
    count = importer[args.source_format](args.source, load_task(args.task), args.out)
    print(f"imported {count} episodes from {args.source_format} {args.source} into {args.out}")


def run_inspect(args: InspectArgs) -> None:
    """`lam-robot inspect`: validate a demo file and print its summary."""
    from lam_robot.data.dataset import DemoFile
    from lam_robot.tasks import load_task

    task = load_task(args.task) if args.task is not None else None
    with DemoFile(args.file, check_values=True, task=task) as demos:
        s = demos.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return
    task_text = s["task"] or "unknown (pass --task to read it as one)"
    layout = "robomimic layout written by another program" if s["foreign"] else f"format v{s['format_version']}"
    print(f"{s['file']}: task {task_text} ({s['env_id']}), {layout}")
    outcome = "unlabelled play data (no goal, reward or success)" if s["unlabelled"] else "success"
    success = "" if s["unlabelled"] else f" {100 * s['success_rate']:.1f}%"
    print(
        f"  demos {s['demos']}, steps {s['steps']}, length mean {s['length_mean']:.1f} "
        f"[{s['length_min']}, {s['length_max']}], {outcome}{success}"
    )
    print(
        f"  sources: {', '.join(f'{k} {v}' for k, v in s['sources'].items())}; "
        f"splits: {', '.join(f'{k} {v}' for k, v in s['splits'].items())}; "
        f"intervention steps: {s['interventions']}"
    )
    print("  observations: " + ", ".join(f"{k} {tuple(v)}" for k, v in s["obs"].items()))
    if s["action_min"] is None:
        print("  actions: none (observation-only; `pretrain --demos` labels them)")
    else:
        print(f"  actions ({s['action_dim']}): min {s['action_min']} max {s['action_max']}")
    if s["states"]:
        freq = f" at {s['control_freq']:g} Hz" if s["control_freq"] else ""
        print(f"  MuJoCo states (replayable with `lam-robot replay`): {s['states']} demos{freq}")
    if s["input_devices"]:
        print("  input events (replayable): " + ", ".join(f"{k} {v}" for k, v in s["input_devices"].items()))


def run_replay(args: ReplayArgs) -> None:
    """`lam-robot replay`: one call to ``replay_demos``, a line per demo, an error above the tolerance."""
    from lam_robot.replay import replay_demos

    r = replay_demos(args.file, demo=args.demo, video=args.video, task=args.task)
    for d in r.demos:
        print(
            f"{d.name}: {d.steps} steps, max observation difference {d.max_obs_diff:.3g} (state {d.max_state_diff:.3g})"
        )
    verdict = "reproduced" if r.passed else "NOT reproduced"
    print(
        f"{r.task}: {len(r.demos)} demos replayed, max observation difference {r.max_obs_diff:.3g} "
        f"(tolerance {r.tolerance:g}): {verdict}"
    )
    if r.video is not None:
        print(f"video: {r.video}")
    r.require_pass()


def run_evaluate(config: EvaluateConfig) -> None:
    """`lam-robot evaluate`: one call to ``evaluate``, then success with its interval."""
    from lam_robot.evaluation import evaluate

    r = evaluate(config)
    print(
        f"{r.task} / {config.policy}: success {100 * r.success_rate:.1f}% "
        f"[95% CI {100 * r.ci_low:.1f}-{100 * r.ci_high:.1f}] over {r.episodes} episodes, "
        f"return {r.mean_return:.2f} ± {r.std_return:.2f}, length {r.mean_length:.1f}, "
        f"{r.steps_per_second:.0f} env steps/s"
    )
    if config.video is not None:
        print(f"video: {config.video}")
    if config.json is not None:
        print(f"results: {config.json}")


HANDLERS: dict[type, Callable[[Any], None]] = {
    TasksArgs: run_tasks,
    RecordConfig: run_record,
    BCConfig: run_train_bc,
    PretrainConfig: run_pretrain,
    FinetuneConfig: run_finetune,
    DaggerConfig: run_dagger,
    PipelineConfig: run_pipeline,
    BaselineConfig: run_baseline,
    ExportArgs: run_export,
    ImportArgs: run_import,
    InspectArgs: run_inspect,
    ReplayArgs: run_replay,
    EvaluateConfig: run_evaluate,
}


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's), run the command; 2 for an expected error, 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:
        print(f"lam-robot {__version__}")
        return 0
    command = next((a for a in argv if a in COMMANDS), "lam-robot")
    try:
        args = tyro.extras.subcommand_cli_from_dict(
            COMMANDS, prog="lam-robot", description=DESCRIPTION, args=argv, config=(tyro.conf.FlagCreatePairsOff,)
        )
        HANDLERS[type(args)](args)
    except LamRobotError as exc:
        print(f"lam-robot {command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"lam-robot {command}: interrupted", file=sys.stderr)
        return 130
    return 0
