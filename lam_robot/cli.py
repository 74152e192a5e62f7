"""The `lam-robot` command line; the only module that parses arguments."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lam_robot import __version__
from lam_robot.errors import LamRobotError

EXIT_USER_ERROR = 2


TELEOP_DEFAULTS = {"gain": 1.0, "dead_zone": 0.1}


def build_parser() -> argparse.ArgumentParser:
    from lam_robot.config import LOSSES, BCConfig, DaggerConfig, FinetuneConfig

    parser = argparse.ArgumentParser(
        prog="lam-robot",
        description="Record robot demonstrations to HDF5, behaviour-clone a Transformer policy, fine-tune it "
        "with PPO and evaluate any policy in MuJoCo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lam-robot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "tasks", help="list the built-in tasks with their sizes", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_tasks)

    task_help = "task name (see `lam-robot tasks`) or path to a .toml task spec"
    p = sub.add_parser(
        "record",
        help="record episodes of a policy, an expert or a human into an HDF5 demo file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Record episodes into an HDF5 demo file. With a teleoperation device "
        "(--source keyboard|gamepad|spacemouse) a human drives the robot in real time; "
        "with --intervene a human corrects a running policy. Input events are saved "
        "with each episode, and --source replay:FILE plays them back exactly.",
    )
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument(
        "--source", default="expert", help="who acts: " + _policy_help() + "; or a teleop device: " + _device_help()
    )
    p.add_argument("--episodes", type=int, default=10, help="episodes to keep")
    p.add_argument("--out", required=True, type=Path, help="demo file; appended to if it exists")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="episode i is reset with seed SEED+i (default: 0, or one past the file's last seed)",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="Gaussian action noise, clipped to the action bounds (imitates imperfect teleoperation)",
    )
    p.add_argument("--only-success", action="store_true", help="keep only successful episodes")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="with --only-success, give up after this many episodes (default 10x --episodes)",
    )
    p.add_argument("--n-envs", type=int, default=1, help="envs stepped in lockstep, batching the policy")
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of demos in mask/valid")
    teleop = p.add_argument_group("teleoperation")
    teleop.add_argument(
        "--intervene",
        default=None,
        metavar="DEVICE",
        help="let a human take over the --source policy at any step and hand back (HG-DAgger); "
        "DEVICE: " + _device_help(),
    )
    teleop.add_argument("--gain", type=float, default=TELEOP_DEFAULTS["gain"], help="device input to action scale")
    teleop.add_argument(
        "--dead-zone", type=float, default=TELEOP_DEFAULTS["dead_zone"], help="analog stick / SpaceMouse travel ignored"
    )
    teleop.add_argument(
        "--viewer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a live MuJoCo viewer (default: when a display exists and a device is live)",
    )
    teleop.add_argument(
        "--realtime",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pace at the task's control frequency (default: live devices yes, replay no)",
    )
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "train-bc",
        help="behaviour-clone a Transformer policy on a demo file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a causal Transformer policy on mask/train of a demo file by maximum "
        "likelihood (nll) or least squares (mse). Re-running with the same --out "
        "resumes a killed run.",
    )
    p.add_argument("--data", required=True, type=Path, help="HDF5 demo file from `lam-robot record`")
    p.add_argument("--out", required=True, type=Path, help="run directory; the best checkpoint is written here")
    p.add_argument("--task", default=None, help="refuse --data unless it was recorded in this task")
    _add_config_arguments(p, BCConfig, skip={"data", "out"}, choices={"loss": list(LOSSES)})
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in --out instead of resuming")
    p.add_argument("--eval-seed", type=int, default=1000, help="first seed of the sim evaluations (--eval-every)")
    p.set_defaults(func=cmd_train_bc)

    p = sub.add_parser(
        "finetune",
        help="fine-tune a BC checkpoint with PPO in the sim (BC then RL)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Stable-Baselines3 PPO whose actor is the BC Transformer, with critic warm-up, "
        "a slower actor and an optional decaying BC regulariser against early "
        "forgetting. Re-running with the same --out resumes a killed run.",
    )
    p.add_argument("--policy", required=True, help="BC checkpoint directory from train-bc")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    _add_config_arguments(p, FinetuneConfig, skip={"policy", "out"}, choices={"vec_env": ["dummy", "subproc"]})
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in --out instead of resuming")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser(
        "dagger",
        help="HG-DAgger: the scripted expert corrects the policy, BC retrains, per round",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="The loop of `record --intervene` with the task's scripted expert standing in "
        "for the human: the policy drives, the expert takes over where their actions "
        "differ by more than --threshold, and BC retrains on demos plus intervention "
        "segments. Prints success per round; re-running with the same --out resumes.",
    )
    p.add_argument("--policy", required=True, help="BC checkpoint directory from train-bc (round 0)")
    p.add_argument("--task", default=None, help="refuse --policy unless it was trained on this task")
    p.add_argument("--expert", default="expert", help="who intervenes: expert, or py:module:attr")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    _add_config_arguments(p, DaggerConfig, skip={"policy", "out"})
    p.set_defaults(func=cmd_dagger)

    p = sub.add_parser(
        "pipeline",
        help="record -> train-bc -> finetune -> evaluate, with a final table",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", default="nav-umaze", help=task_help)
    p.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="directory for every artefact")
    p.add_argument("--demos", type=int, default=20, help="expert demos to record")
    p.add_argument("--noise", type=float, default=0.3, help="action noise of the recorded demos")
    p.add_argument("--bc-epochs", type=int, default=30)
    p.add_argument("--finetune-steps", type=int, default=20_000)
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per policy")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser(
        "baseline",
        help="train an `imitation` baseline (BC-MLP, DAgger, GAIL, AIRL) on a demo file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--algo", required=True, choices=["bc-mlp", "dagger", "gail", "airl"])
    p.add_argument("--data", required=True, type=Path, help="HDF5 demo file")
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--out", required=True, type=Path, help="new run directory (an MLP checkpoint `evaluate` takes)")
    p.add_argument(
        "--steps",
        type=int,
        default=20_000,
        help="gradient steps for bc-mlp; environment steps for dagger, gail and airl",
    )
    p.add_argument("--n-envs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser(
        "export",
        help="export a demo file to imitation trajectories or a local Minari dataset",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("file", type=Path, help="HDF5 demo file")
    p.add_argument("--to", required=True, choices=["imitation", "minari"])
    p.add_argument(
        "--out",
        required=True,
        help="imitation: a new directory; minari: a dataset id such as lamrobot/grasp-expert-v0 "
        "(stored under MINARI_DATASETS_PATH or ~/.minari/datasets)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="import imitation trajectories or a Minari dataset into a new demo file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("source", help="imitation: a directory saved by imitation; minari: a dataset id")
    p.add_argument("--from", dest="source_format", required=True, choices=["imitation", "minari"])
    p.add_argument("--task", required=True, help=task_help + " (the task the data was recorded in)")
    p.add_argument("--out", required=True, type=Path, help="new HDF5 demo file")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "inspect", help="validate a demo file and summarise it", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("file", type=Path, help="HDF5 demo file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "evaluate",
        help="roll a policy out in simulation: success rate with 95%% CI, return, video",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--policy", default="expert", help=_policy_help())
    p.add_argument("--task", required=True, help=task_help)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument(
        "--seed",
        type=int,
        default=1000,
        help="episode i is reset with seed SEED+i (default differs from record's, to test unseen starts)",
    )
    p.add_argument("--n-envs", type=int, default=4, help="envs stepped in lockstep, batching the policy")
    p.add_argument("--video", type=Path, default=None, metavar="FILE.mp4", help="write the first episodes as mp4")
    p.add_argument("--video-episodes", type=int, default=3, help="episodes in the video")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_evaluate)
    return parser


def _add_config_arguments(
    parser: argparse.ArgumentParser, config_cls: type, skip: set[str], choices: dict[str, list[str]] | None = None
) -> None:
    """One option per field of a config dataclass, with the field's docstring as help."""
    import dataclasses

    docs = {k: v.replace("%", "%%") for k, v in _field_docs(config_cls).items()}  # argparse formats help with %
    for field in dataclasses.fields(config_cls):
        if field.name in skip:
            continue
        option = "--" + field.name.replace("_", "-")
        if str(field.type) == "bool":
            parser.add_argument(option, action="store_true", help=docs.get(field.name, ""))
            continue
        kind = {"int": int, "float": float}.get(str(field.type), str)
        kwargs: dict = {"type": kind, "default": field.default, "help": docs.get(field.name, "")}
        if choices and field.name in choices:
            kwargs["choices"] = choices[field.name]
        parser.add_argument(option, **kwargs)


def _torch_threads(threads: int) -> None:
    """Small-batch inference and PPO run fastest on one thread here: more threads spin against the sim."""
    import torch

    torch.set_num_threads(threads)


def _field_docs(config_cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (cleanrl style), read from the source."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _device_help() -> str:
    from lam_robot.teleop.devices import DEVICE_HELP

    return DEVICE_HELP


def _policy_help() -> str:
    from lam_robot.sources import POLICY_HELP

    return POLICY_HELP


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise LamRobotError(f"{name} must be positive, got {value}")


def cmd_tasks(args: argparse.Namespace) -> None:
    from lam_robot.tasks import builtin_task_names, describe_task, load_task

    rows = [describe_task(load_task(name)) for name in builtin_task_names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = ("task", "env id", "obs", "act", "horizon", "expert", "description")
    table = [
        (
            r["name"],
            r["env_id"],
            str(r["policy_obs_size"]),
            str(r["action_size"]),
            str(r["horizon"]),
            r["expert"],
            r["description"],
        )
        for r in rows
    ]
    _print_table(header, table)


def cmd_record(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from lam_robot.data.dataset import DemoFile
    from lam_robot.record import record
    from lam_robot.tasks import load_task

    _positive("--episodes", args.episodes)
    _positive("--n-envs", args.n_envs)
    if args.noise < 0:
        raise LamRobotError(f"--noise must be >= 0, got {args.noise}")
    task = load_task(args.task)
    seed = args.seed
    if seed is None:
        seed = 0
        if args.out.is_file():
            with DemoFile(args.out) as existing:
                seed = 1 + max(int(existing.demo(n).attrs["seed"]) for n in existing.demo_names)
    if args.intervene or _is_device(args.source):
        _record_teleop(args, task, seed)
        return
    for flag in ("gain", "dead_zone"):
        if getattr(args, flag) != TELEOP_DEFAULTS[flag]:
            raise LamRobotError(f"--{flag.replace('_', '-')} applies to teleoperation devices only")
    policy, source = _policy_and_source(args.source, task, seed=seed)
    start = time.perf_counter()
    with tqdm(total=args.episodes, unit="ep", desc=f"record {task.name}", dynamic_ncols=True) as bar:

        def progress(stats) -> None:
            bar.update(1)
            bar.set_postfix(
                success=f"{stats.successes}/{stats.run}",
                steps_s=f"{stats.steps / (time.perf_counter() - start):.0f}",
                refresh=False,
            )

        stats = record(
            task,
            policy,
            args.out,
            args.episodes,
            source,
            seed=seed,
            noise=args.noise,
            n_envs=args.n_envs,
            only_success=args.only_success,
            max_attempts=args.max_attempts,
            valid_fraction=args.valid_fraction,
            on_episode=progress,
        )
    print(f"saved {stats.kept} episodes ({stats.successes} successful of {stats.run} run) to {args.out}")
    if stats.kept < args.episodes:
        raise LamRobotError(
            f"only {stats.kept} of {args.episodes} episodes succeeded in {stats.run} attempts; "
            "lower --noise or raise --max-attempts"
        )


def _is_device(source: str) -> bool:
    from lam_robot.teleop.devices import LIVE_DEVICES

    return source in LIVE_DEVICES or source.startswith("replay:")


def _record_teleop(args: argparse.Namespace, task, seed: int) -> None:
    import os

    from lam_robot.data.writer import DemoWriter
    from lam_robot.teleop.devices import make_device
    from lam_robot.teleop.session import TeleopSession, control_period

    if args.noise or args.n_envs != 1 or args.only_success:
        raise LamRobotError("--noise, --n-envs and --only-success do not apply to teleoperation; drop them")
    if args.gain <= 0 or not 0 <= args.dead_zone < 1:
        raise LamRobotError(f"--gain must be positive and --dead-zone in [0, 1), got {args.gain}, {args.dead_zone}")
    policy = None
    if args.intervene:
        if _is_device(args.source) or args.source == "random":
            raise LamRobotError("--intervene needs a trained policy as --source (policy:DIR or DIR)")
        policy, _ = _policy_and_source(args.source, task, seed=seed)
    env = task.make_env()
    period = control_period(env)
    env.close()
    device = make_device(args.intervene or args.source, period)
    viewer = args.viewer if args.viewer is not None else (device.live and bool(os.environ.get("DISPLAY")))

    def status(text: str) -> None:  # live: one status line rewritten in place; saved episodes scroll
        end = "" if text.startswith("episode") else "\n"
        print(f"\r\x1b[K{text}", end=end, file=sys.stderr, flush=True)

    with DemoWriter(args.out, task, valid_fraction=args.valid_fraction) as writer, device:
        session = TeleopSession(
            task,
            device,
            writer,
            seed=seed,
            gain=args.gain,
            dead_zone=args.dead_zone,
            policy=policy,
            viewer=viewer,
            realtime=args.realtime,
            status=status if device.live else None,
        )
        try:
            stats = session.run(args.episodes)
        except KeyboardInterrupt:
            stats = session.stats
            print(file=sys.stderr)
    extra = f", {stats.interventions} intervention steps" if policy is not None else ""
    print(
        f"saved {stats.kept} episodes ({stats.successes} successful, {stats.discarded} discarded{extra}) to {args.out}"
    )


def _policy_and_source(name: str, task, seed: int):
    from lam_robot.sources import policy_source, resolve_policy

    env = task.make_env()
    try:
        policy = resolve_policy(name, task, env, seed=seed)
    finally:
        env.close()
    if "torch" in sys.modules:  # a trained policy: batched inference of a few rows per step
        _torch_threads(1)
    return policy, policy_source(name)


def cmd_train_bc(args: argparse.Namespace) -> None:
    import dataclasses

    from lam_robot.config import BCConfig
    from lam_robot.evaluate import evaluate
    from lam_robot.train.bc import train_bc

    fields = {f.name for f in dataclasses.fields(BCConfig)}
    config = BCConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in fields})
    if args.task is not None:
        from lam_robot.data.dataset import DemoFile
        from lam_robot.tasks import load_task

        expected = load_task(args.task)
        with DemoFile(args.data) as demos:
            if demos.task.name != expected.name:
                raise LamRobotError(
                    f"{args.data} holds demos of task {demos.task.name!r}, not {expected.name!r}; "
                    f"record {expected.name!r} demos first"
                )

    def success_rate(policy) -> float:
        result = evaluate(policy.task, policy, "bc", config.eval_episodes, seed=args.eval_seed, n_envs=4)
        return result.success_rate

    result = train_bc(config, overwrite=args.overwrite, evaluate_policy=success_rate)
    if result.resumed_from:
        print(f"resumed from epoch {result.resumed_from}")
    loss = "n/a (no validation demos)" if result.best_valid_loss is None else f"{result.best_valid_loss:.4f}"
    print(
        f"best checkpoint: {result.out} (epoch {result.best_epoch}, valid loss {loss}); "
        f"{result.samples_per_second:.0f} samples/s; curves: {result.out / 'curves.png'}"
    )


def cmd_finetune(args: argparse.Namespace) -> None:
    import dataclasses

    from lam_robot.config import FinetuneConfig
    from lam_robot.train.finetune import FinetuneRun

    _torch_threads(1)
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in fields})
    result = FinetuneRun(config, overwrite=args.overwrite).train()
    if result.resumed_from:
        print(f"resumed from env step {result.resumed_from}")
    else:
        print(f"success at the start: {100 * result.start_success:.1f}%")
    print(
        f"success after {result.env_steps} env steps: {100 * result.final_success:.1f}%; "
        f"{result.steps_per_second:.0f} env steps/s"
    )
    print(f"checkpoint: {result.out} (BC format), {result.out / 'ppo.zip'} (SB3); curve: {result.out / 'curves.png'}")


def cmd_dagger(args: argparse.Namespace) -> None:
    import dataclasses

    from lam_robot.config import DaggerConfig
    from lam_robot.policy.checkpoint import load_checkpoint
    from lam_robot.train.dagger import run_dagger

    _torch_threads(1)
    fields = {f.name for f in dataclasses.fields(DaggerConfig)}
    config = DaggerConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in fields})
    if args.task is not None:
        from lam_robot.tasks import load_task

        expected, trained = load_task(args.task), load_checkpoint(args.policy).task
        if trained.name != expected.name:
            raise LamRobotError(f"{args.policy} was trained on task {trained.name!r}, not {expected.name!r}")

    def resolve(name: str, task):
        return _policy_and_source(name, task, seed=0)[0]

    rows = run_dagger(config, args.expert, resolve)
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
    print(f"plot: {Path(config.out) / 'rounds.png'}")


def cmd_pipeline(args: argparse.Namespace) -> None:
    from lam_robot.pipeline import run_pipeline

    _torch_threads(1)
    run_pipeline(
        args.task,
        args.out,
        demos=args.demos,
        noise=args.noise,
        bc_epochs=args.bc_epochs,
        finetune_steps=args.finetune_steps,
        episodes=args.episodes,
        seed=args.seed,
    )


def cmd_baseline(args: argparse.Namespace) -> None:
    from lam_robot.baselines import train_baseline
    from lam_robot.tasks import load_task

    _positive("--n-envs", args.n_envs)
    _torch_threads(1)
    result = train_baseline(
        args.algo, args.data, load_task(args.task), args.out, args.steps, seed=args.seed, n_envs=args.n_envs
    )
    print(
        f"{args.algo}: trained ({result.env_steps} env steps, {result.gradient_steps} gradient steps); "
        f"checkpoint {result.out} — evaluate it with `lam-robot evaluate --policy {result.out} --task {args.task}`"
    )


def cmd_export(args: argparse.Namespace) -> None:
    from lam_robot import interop

    if args.to == "imitation":
        count = interop.export_imitation(args.file, args.out)
    else:
        count = interop.export_minari(args.file, args.out)
    print(f"exported {count} demos of {args.file} to {args.to} {args.out}")


def cmd_import(args: argparse.Namespace) -> None:
    from lam_robot import interop
    from lam_robot.tasks import load_task

    task = load_task(args.task)
    if args.source_format == "imitation":
        count = interop.import_imitation(args.source, task, args.out)
    else:
        count = interop.import_minari(args.source, task, args.out)
    print(f"imported {count} episodes from {args.source_format} {args.source} into {args.out}")


def cmd_inspect(args: argparse.Namespace) -> None:
    from lam_robot.data.dataset import DemoFile

    with DemoFile(args.file, check_values=True) as demos:
        summary = demos.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['file']}: task {summary['task']} ({summary['env_id']}), format v{summary['format_version']}")
    print(
        f"  demos {summary['demos']}, steps {summary['steps']}, length mean {summary['length_mean']:.1f} "
        f"[{summary['length_min']}, {summary['length_max']}], success {100 * summary['success_rate']:.1f}%"
    )
    print(
        f"  sources: {', '.join(f'{k} {v}' for k, v in summary['sources'].items())}; "
        f"splits: {', '.join(f'{k} {v}' for k, v in summary['splits'].items())}; "
        f"intervention steps: {summary['interventions']}"
    )
    print("  observations: " + ", ".join(f"{k} {tuple(v)}" for k, v in summary["obs"].items()))
    print(f"  actions ({summary['action_dim']}): min {summary['action_min']} max {summary['action_max']}")
    if summary["input_devices"]:
        print("  input events (replayable): " + ", ".join(f"{k} {v}" for k, v in summary["input_devices"].items()))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from lam_robot.evaluate import evaluate
    from lam_robot.tasks import load_task

    _positive("--episodes", args.episodes)
    _positive("--n-envs", args.n_envs)
    if args.json is not None and not args.json.parent.is_dir():
        raise LamRobotError(f"directory {args.json.parent} for --json does not exist; create it first")
    task = load_task(args.task)
    policy, _ = _policy_and_source(args.policy, task, seed=args.seed)
    with tqdm(total=args.episodes, unit="ep", desc=f"evaluate {task.name}", dynamic_ncols=True) as bar:
        result = evaluate(
            task,
            policy,
            args.policy,
            args.episodes,
            seed=args.seed,
            n_envs=args.n_envs,
            video=args.video,
            video_episodes=args.video_episodes,
            on_episode=lambda ep: bar.update(1),
        )
    print(
        f"{task.name} / {args.policy}: success {100 * result.success_rate:.1f}% "
        f"[95% CI {100 * result.ci_low:.1f}-{100 * result.ci_high:.1f}] over {result.episodes} episodes, "
        f"return {result.mean_return:.2f} ± {result.std_return:.2f}, length {result.mean_length:.1f}, "
        f"{result.steps_per_second:.0f} env steps/s"
    )
    if args.video is not None:
        print(f"video: {args.video}")
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"results: {args.json}")


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LamRobotError as exc:
        print(f"lam-robot {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"lam-robot {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0
