"""Behaviour cloning of the Transformer policy: Gaussian NLL (MLE) or MSE on the mean.

AdamW, linear warm-up then cosine decay, gradient clipping, validation loss on mask/valid
after every epoch, best checkpoint by validation loss, optional success-rate evaluation in
the sim. Deterministic for a seed on CPU, and a killed run resumes from ``OUT/last/``
exactly where it stopped (batches are drawn from a generator seeded per epoch, and the
global RNG that drives dropout is saved with the optimizer).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch

from lam_robot.config import BCConfig
from lam_robot.data.dataset import DemoFile, PolicyEpisode, Windows, build_windows
from lam_robot.errors import LamRobotError
from lam_robot.plots import plot_bc_curves
from lam_robot.policy.checkpoint import (
    LAST,
    LOG,
    Checkpoint,
    MultiTask,
    Normalizer,
    load_checkpoint,
    load_training_state,
    prepare_run_dir,
    save_checkpoint,
    save_multitask_checkpoint,
    save_training_state,
    snapshot_state,
)
from lam_robot.policy.network import (
    MultiTaskPolicyNet,
    TransformerConfig,
    TransformerPolicyNet,
    gaussian_nll,
    masked_mean,
)
from lam_robot.policy.transfer import map_weights, observation_statistics
from lam_robot.tasks import TaskSpec, load_task, require_same_task, space_size, task_family, task_layout
from lam_robot.train import distributed

OUR_FILES = ("model.safetensors", "config.json", LOG, "curves.png", LAST)


# Settings that may change when a run is resumed (more epochs, another evaluation cadence).
RESUMABLE_CHANGES = {"epochs", "eval_every", "eval_episodes", "eval_seed", "out", "overwrite", "task"}


@dataclasses.dataclass
class BCResult:
    """What a behaviour-cloning run did: best checkpoint, losses, speed."""

    out: Path
    best_epoch: int
    best_valid_loss: float | None
    epochs_run: int
    samples_per_second: float
    data_time_fraction: float
    """Share of training-step wall time spent outside forward/backward/optimizer (batching, logging)."""
    resumed_from: int
    model_seconds: float
    """Wall time inside forward, backward and optimizer steps."""


def bc_loss(
    net: TransformerPolicyNet | MultiTaskPolicyNet,
    loss: str,
    obs: torch.Tensor,
    actions: torch.Tensor,
    valid: torch.Tensor,
    labels: torch.Tensor,
    forward: Any = None,
    adapter: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss over every labelled position of a batch of windows; ``forward`` (default ``net``)
    runs the network (DistributedDataParallel around it under torchrun); a multi-task net takes each
    window's ``adapter``."""
    if isinstance(net, MultiTaskPolicyNet):
        assert adapter is not None
        mean, log_std, dims = (forward or net)(obs, valid, adapter)
        per_step = padded_loss(loss, mean, log_std[:, None], actions, dims[:, None])
    else:
        mean = (forward or net)(obs, valid)
        per_step = gaussian_nll(mean, net.log_std, actions) if loss == "nll" else (mean - actions).pow(2).sum(-1)
    return masked_mean(per_step, labels)


def padded_loss(
    loss: str, mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor, dims: torch.Tensor
) -> torch.Tensor:
    """Per-position NLL or squared error summed over each row's real action dims only (multi-task batches
    pad smaller actions with zeros)."""
    if loss == "nll":
        z = (target - mean) * torch.exp(-log_std)
        per_dim = 0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)
    else:
        per_dim = (mean - target).pow(2)
    return (per_dim * dims).sum(-1)


@dataclasses.dataclass
class Hindsight:
    """How windows get hindsight goals: the share relabelled, the mean steps ahead of the window's last step
    (geometric), and the desired goal's columns in the policy observation."""

    ratio: float
    horizon: float
    columns: slice


class _Batches:
    """Windows as torch tensors; gathers a batch by index arithmetic, without a DataLoader."""

    def __init__(
        self,
        windows: Windows,
        hindsight: Hindsight | dict[int, Hindsight] | None = None,
        adapter_rows: np.ndarray | None = None,
    ) -> None:
        self.obs = torch.from_numpy(windows.obs)
        self.actions = torch.from_numpy(windows.actions)
        self.valid = torch.from_numpy(windows.valid)
        self.labels = torch.from_numpy(windows.labels)
        self.starts = torch.from_numpy(windows.starts)
        self.ends = torch.from_numpy(windows.ends)
        self.offsets = torch.arange(windows.context)
        # Per adapter, because tasks of different families keep their goal in different columns.
        self.hindsight = {0: hindsight} if isinstance(hindsight, Hindsight) else (hindsight or {})
        self.achieved = torch.from_numpy(windows.achieved) if windows.achieved is not None else None
        rows = adapter_rows if adapter_rows is not None else np.zeros(len(windows.obs), np.int64)
        self.adapter_rows = torch.from_numpy(rows)

    def adapters(self, idx: torch.Tensor) -> torch.Tensor:
        """The adapter index (multi-task runs; 0 otherwise) of the windows ``idx``."""
        return self.adapter_rows[self.starts[idx]]

    def __len__(self) -> int:
        return len(self.starts)

    def get(
        self, idx: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Observations, actions, real-row mask and label mask of the windows ``idx``; with a ``generator``
        and hindsight settings, a share of the windows get a goal their episode reached later."""
        rows = self.starts[idx, None] + self.offsets
        obs = self.obs[rows]
        if generator is not None and self.hindsight and self.achieved is not None:
            shared = next(iter(self.hindsight.values()))  # every adapter has the same ratio and horizon
            goal_rows, chosen = hindsight_rows(
                self.starts[idx] + len(self.offsets) - 1, self.ends[idx], shared, generator
            )
            adapters = self.adapters(idx) if len(self.hindsight) > 1 else None
            for adapter, hindsight in self.hindsight.items():
                pick = chosen if adapters is None else chosen & (adapters == adapter)
                width = hindsight.columns.stop - hindsight.columns.start  # goals are zero-padded to the widest
                obs[pick, :, hindsight.columns] = self.achieved[goal_rows[pick], :width].unsqueeze(1)
        return obs, self.actions[rows], self.valid[rows], self.labels[rows]


def hindsight_rows(
    last: torch.Tensor, ends: torch.Tensor, hindsight: Hindsight, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For windows whose last step is row ``last``: the row whose reached goal each gets (a geometric number
    of steps ahead, at most the episode's last row ``ends``), and which windows are relabelled at all."""
    chosen = torch.rand(len(last), generator=generator) < hindsight.ratio
    u = torch.rand(len(last), generator=generator).clamp_min(1e-12)
    p = 1.0 / (1.0 + hindsight.horizon)
    ahead = torch.floor(torch.log(u) / math.log1p(-p)).long() if p < 1.0 else torch.zeros_like(last)
    return torch.minimum(last + ahead, ends), chosen


@dataclasses.dataclass
class TrainingData:
    """What a BC run trains on: the task, the normaliser and the windows of each split."""

    task: Any
    normalizer: Normalizer
    train: _Batches
    valid: _Batches | None
    demos: int
    play: _Batches | None = None
    """Play windows drawn alongside ``train`` (every one relabelled), if any."""
    multi: MultiTaskData | None = None
    """Multi-task runs (--more-data): the tasks, their adapters and normalisers (``task`` and ``normalizer``
    are then the first task's)."""


@dataclasses.dataclass
class MultiTaskData:
    """How the tasks of a multi-task run share adapters: each task's adapter, each adapter's sizes and normaliser."""

    tasks: dict[str, TaskSpec]
    adapter_of: dict[str, str]
    sizes: dict[str, tuple[int, int]]
    normalizers: dict[str, Normalizer]

    def checkpoint(self, net: MultiTaskPolicyNet) -> MultiTask:
        """What save_multitask_checkpoint writes for ``net``."""
        return MultiTask(net, self.tasks, self.adapter_of, self.normalizers)


def goal_columns(task: Any, env: gym.Env) -> slice:
    """Where the desired goal sits in the task's flat policy observation."""
    _, desired = task.require_goals("hindsight relabelling")
    space = cast(gym.spaces.Dict, env.observation_space)
    start = 0
    for key in task.policy_obs_keys:
        size = space_size(space[key])
        if key == desired:
            return slice(start, start + size)
        start += size
    raise AssertionError("TaskSpec guarantees the desired goal key is a policy key")


def _goal_columns(task: TaskSpec) -> slice:
    """goal_columns, with an env of the task opened for it."""
    env = task.make_env()
    try:
        return goal_columns(task, env)
    finally:
        env.close()


def _with_goal(episode: PolicyEpisode, columns: slice) -> np.ndarray:
    """The episode's observations with each step's desired goal replaced by the goal it reached (for the
    normaliser's statistics, which must cover the relabelled goals too)."""
    relabelled = episode.obs.copy()
    relabelled[:, columns] = episode.achieved
    return relabelled


def prepare_training_data(
    config: BCConfig,
    task: Any,
    train: list[PolicyEpisode],
    valid: list[PolicyEpisode],
    demos: int,
    normalizer: Normalizer | None = None,
    relabel_valid: bool = False,
    play: list[PolicyEpisode] | None = None,
) -> TrainingData:
    """Normalise the episodes (statistics fit on ``train`` unless ``normalizer`` is given) into windows;
    with hindsight relabelling the statistics of the goal columns also cover the goals reached, and
    ``relabel_valid`` relabels the validation windows too (play data has no goals of its own)."""
    env = task.make_env()
    try:
        action_space = cast(gym.spaces.Box, env.action_space)
        columns = goal_columns(task, env) if config.relabel == "hindsight" else None
    finally:
        env.close()
    if normalizer is None:
        rows = [e.obs for e in [*train, *(play or [])]]
        if columns is not None:
            rows += [_with_goal(e, columns) for e in [*train, *(play or [])]]
        normalizer = Normalizer.fit(np.concatenate(rows), action_space.low, action_space.high)
    hindsight = Hindsight(config.relabel_ratio, config.relabel_horizon, columns) if columns is not None else None

    def goal_units(achieved: np.ndarray | None) -> np.ndarray | None:
        if achieved is None or columns is None:
            return None
        return ((achieved - normalizer.obs_mean[columns]) / normalizer.obs_std[columns]).astype(np.float32)

    def prepare(episodes: list[PolicyEpisode], relabel: Hindsight | None) -> _Batches | None:
        if not episodes:
            return None
        windows = build_windows(
            [
                e._replace(
                    obs=normalizer.obs(e.obs),
                    actions=normalizer.action_to_unit(e.actions),
                    achieved=goal_units(e.achieved),
                )
                for e in episodes
            ],
            config.context,
        )
        return _Batches(windows, relabel) if len(windows) else None

    train_batches = prepare(train, hindsight)
    if train_batches is None:
        raise LamRobotError(
            f"{config.data}: mask/train has no labelled steps (only policy episodes without "
            "interventions); add expert or teleoperated demos"
        )
    valid_batches = prepare(valid, hindsight if relabel_valid else None)  # demos validate on their real goals
    play_batches = prepare(play, dataclasses.replace(hindsight, ratio=1.0)) if play and hindsight else None
    return TrainingData(task, normalizer, train_batches, valid_batches, demos, play_batches)


def load_training_data(config: BCConfig, source: Checkpoint | None = None) -> TrainingData:
    """Task, normaliser (fit on mask/train, or the --init-from source's where its input layer maps) and
    windows of the train and valid splits of the demo file (or files, for multi-task BC)."""
    if config.more_data:
        return load_multitask_data(config, source)
    given = load_task(config.task) if config.task is not None else None
    goals = config.relabel == "hindsight"
    with DemoFile(config.data, check_values=True, task=given) as demos:  # a foreign file is read as --task
        task = demos.task
        if given is not None:
            require_same_task(task, given, f"{config.data} holds demos of task", "record demos of that task first")
        demos.require_demos()
        train = demos.policy_episodes("train", goals=goals)
        valid = demos.policy_episodes("valid", goals=goals)
        n_demos = len(demos)
    if not train:
        raise LamRobotError(f"{config.data}: mask/train is empty; record more demos (every 10th goes to valid)")
    play = load_play(config, task) if config.play is not None else None
    normalizer = None
    if source is not None:
        layout = task_layout(task)
        probe = TransformerPolicyNet(TransformerConfig.for_bc(config, layout.obs_dim, layout.act_dim))
        mapping = map_weights(probe, source, {task.name: layout.family})
        normalizer = observation_statistics(mapping, source, layout.family)
        if normalizer is not None:
            normalizer = dataclasses.replace(
                normalizer, act_low=layout.act_low, act_high=layout.act_high, obs_keys=task.policy_obs_keys
            )
    return prepare_training_data(config, task, train, valid, n_demos, normalizer, play=play)


def load_multitask_data(config: BCConfig, source: Checkpoint | None) -> TrainingData:
    """The demo files of a multi-task run as one set of windows: each task's observations normalised by its
    adapter's statistics, then zero-padded to the largest sizes, each window tagged with its adapter."""
    given = load_task(config.task) if config.task is not None else None
    relabel = config.relabel == "hindsight"
    parts: list[tuple[TaskSpec, list[PolicyEpisode], list[PolicyEpisode]]] = []
    n_demos = 0
    for i, path in enumerate([config.data, *config.more_data]):
        with DemoFile(path, check_values=True, task=given if i == 0 else None) as demos:
            if i == 0 and given is not None:
                require_same_task(demos.task, given, f"{path} holds demos of task", "record demos of that task first")
            demos.require_demos()
            train = demos.policy_episodes("train", goals=relabel)
            if not train:
                raise LamRobotError(f"{path}: mask/train is empty; record more demos (every 10th goes to valid)")
            parts.append((demos.task, train, demos.policy_episodes("valid")))
            n_demos += len(demos)
    tasks: dict[str, TaskSpec] = {}
    for task, *_ in parts:
        tasks.setdefault(task.name, task)
    layouts = {name: task_layout(task) for name, task in tasks.items()}
    adapter_of = {name: layout.family for name, layout in layouts.items()}

    def first_task(adapter: str) -> str:
        return next(t for t, a in adapter_of.items() if a == adapter)

    sizes: dict[str, tuple[int, int]] = {}
    for name, layout in layouts.items():
        first = first_task(layout.family)
        if name != first and (
            not np.array_equal(layout.act_low, layouts[first].act_low)
            or not np.array_equal(layout.act_high, layouts[first].act_high)
            or tasks[name].policy_obs_keys != tasks[first].policy_obs_keys
        ):
            raise LamRobotError(
                f"tasks {first!r} and {name!r} share adapter {layout.family} but differ in observation keys or "
                "action bounds; train them in separate runs"
            )
        sizes.setdefault(layout.family, (layout.obs_dim, layout.act_dim))
    first_sizes = next(iter(sizes.values()))
    mapping = None
    if source is not None:
        probe = MultiTaskPolicyNet(TransformerConfig.for_bc(config, *first_sizes), sizes)
        mapping = map_weights(probe, source, adapter_of)
    columns = {adapter: _goal_columns(tasks[first_task(adapter)]) for adapter in sizes} if relabel else {}
    # Play data goes with the --data file's task, and its windows with that task's adapter.
    play = load_play(config, parts[0][0]) if config.play is not None else []
    play_adapter = adapter_of[parts[0][0].name]
    normalizers: dict[str, Normalizer] = {}
    for adapter in sizes:
        layout = layouts[first_task(adapter)]
        theirs = observation_statistics(mapping, source, adapter) if mapping is not None and source else None
        if theirs is not None:
            normalizers[adapter] = dataclasses.replace(theirs, act_low=layout.act_low, act_high=layout.act_high)
        else:
            episodes = [e for t, train, _ in parts if adapter_of[t.name] == adapter for e in train]
            episodes += play if adapter == play_adapter else []
            rows = [e.obs for e in episodes] + [_with_goal(e, columns[adapter]) for e in episodes if relabel]
            normalizers[adapter] = Normalizer.fit(np.concatenate(rows), layout.act_low, layout.act_high)
        normalizers[adapter].obs_keys = next(t.policy_obs_keys for n, t in tasks.items() if adapter_of[n] == adapter)
    order = list(sizes)
    max_obs = max(o for o, _ in sizes.values())
    max_act = max(a for _, a in sizes.values())

    def goal_units(e: PolicyEpisode, adapter: str) -> np.ndarray | None:
        if not relabel or e.achieved is None:
            return None
        normalizer = normalizers[adapter]
        mean, std = normalizer.obs_mean[columns[adapter]], normalizer.obs_std[columns[adapter]]
        return ((e.achieved - mean) / std).astype(np.float32)

    def piece(episodes: list[PolicyEpisode], adapter: str, goals: bool) -> tuple[Windows, int]:
        normalizer = normalizers[adapter]
        windows = build_windows(
            [
                e._replace(
                    obs=normalizer.obs(e.obs),
                    actions=normalizer.action_to_unit(e.actions),
                    achieved=goal_units(e, adapter) if goals else None,
                )
                for e in episodes
            ],
            config.context,
        )
        return windows, order.index(adapter)

    def batches(pieces: list[tuple[Windows, int]], hindsight: dict[int, Hindsight] | None) -> _Batches | None:
        pieces = [(w, adapter) for w, adapter in pieces if len(w)]
        if not pieces:
            return None
        windows, rows = merge_windows(pieces, max_obs, max_act)
        return _Batches(windows, hindsight, rows)

    hindsight = {order.index(a): Hindsight(config.relabel_ratio, config.relabel_horizon, c) for a, c in columns.items()}
    train_batches = batches([piece(train, adapter_of[t.name], True) for t, train, _ in parts], hindsight)
    if train_batches is None:
        raise LamRobotError(f"{config.data}: mask/train has no labelled steps; add expert or teleoperated demos")
    valid_batches = batches([piece(valid, adapter_of[t.name], False) for t, _, valid in parts if valid], None)
    play_index = order.index(play_adapter)
    play_batches = batches(
        [piece(play, play_adapter, True)] if play else [],
        {play_index: dataclasses.replace(hindsight[play_index], ratio=1.0)} if play else None,
    )
    multi = MultiTaskData(tasks, adapter_of, sizes, normalizers)
    first = next(iter(tasks))
    return TrainingData(
        tasks[first], normalizers[adapter_of[first]], train_batches, valid_batches, n_demos, play_batches, multi
    )


def merge_windows(pieces: list[tuple[Windows, int]], max_obs: int, max_act: int) -> tuple[Windows, np.ndarray]:
    """Windows of several tasks laid end to end, observations, actions and reached goals zero-padded on the right
    to the largest sizes; with the adapter index of every row."""
    obs, actions, valid, labels, starts, ends, rows = [], [], [], [], [], [], []
    goals = [w.achieved for w, _ in pieces if w.achieved is not None]
    widest = max(g.shape[1] for g in goals) if len(goals) == len(pieces) else 0
    offset = 0
    for w, adapter in pieces:
        obs.append(np.pad(w.obs, ((0, 0), (0, max_obs - w.obs.shape[1]))))
        actions.append(np.pad(w.actions, ((0, 0), (0, max_act - w.actions.shape[1]))))
        valid.append(w.valid)
        labels.append(w.labels)
        starts.append(w.starts + offset)
        ends.append(w.ends + offset)
        rows.append(np.full(len(w.obs), adapter, np.int64))
        offset += len(w.obs)
    merged = Windows(
        np.concatenate(obs),
        np.concatenate(actions),
        np.concatenate(valid),
        np.concatenate(labels),
        np.concatenate(starts),
        pieces[0][0].context,
        np.concatenate(ends),
        np.concatenate([np.pad(g, ((0, 0), (0, widest - g.shape[1]))) for g in goals]) if widest else None,
    )
    return merged, np.concatenate(rows)


def load_play(config: BCConfig, task: Any) -> list[PolicyEpisode]:
    """The --play file's episodes (both splits), with the goals they reached."""
    assert config.play is not None
    with DemoFile(config.play, check_values=True, task=task) as play:
        require_same_task(play.task, task, f"--play {config.play} holds trajectories of task", "give that task's")
        if not play.has_actions():
            raise LamRobotError(
                f"--play {config.play} has no actions; label it with `lam-robot pretrain --data FILE --demos DEMOS`"
            )
        return play.policy_episodes("train", task, goals=True) + play.policy_episodes("valid", task, goals=True)


def with_play(
    play: _Batches, batch: tuple[torch.Tensor, ...], config: BCConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A demo batch (observations, actions, masks, labels, adapters) with play windows added, so that they make up
    ``config.play_fraction`` of it."""
    count = max(1, round(len(batch[0]) * config.play_fraction / (1.0 - config.play_fraction)))
    idx = torch.randint(len(play), (count,), generator=generator)
    extra = (*play.get(idx, generator), play.adapters(idx))
    obs, actions, mask, labels, adapters = (torch.cat([a, b]) for a, b in zip(batch, extra))
    return obs, actions, mask, labels, adapters


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def validation_loss(
    net: TransformerPolicyNet | MultiTaskPolicyNet, loss: str, batches: _Batches, batch_size: int
) -> float:
    """Mean loss of the newest position over every window of ``batches``."""
    net.eval()
    total, count = 0.0, 0
    for start in range(0, len(batches), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(batches)))
        # Relabelled validation windows get the same goals every epoch.
        obs, actions, valid, _ = batches.get(idx, torch.Generator().manual_seed(start))
        # Validation scores only the newest position: what the policy acts on.
        target = actions[:, -1]
        if isinstance(net, MultiTaskPolicyNet):
            means, log_std, dims = net(obs, valid, batches.adapters(idx))
            per = padded_loss(loss, means[:, -1], log_std, target, dims)
        else:
            mean = net.last_mean(obs, valid)
            per = gaussian_nll(mean, net.log_std, target) if loss == "nll" else (mean - target).pow(2).sum(-1)
        total += float(per.sum())
        count += len(idx)
    net.train()
    return total / count


def train_bc(config: BCConfig | None = None, /, *, progress: bool = True, **fields: Any) -> BCResult:
    """Train (or resume) a behaviour-cloning run (or build the config from keyword fields); with
    ``eval_every`` the policy's success in the sim is measured and logged every N epochs."""
    config = BCConfig.build(config, fields)
    source = load_source(config)
    if source is not None:
        config = source_architecture(config, source)
    data = load_training_data(config, source)
    return run_bc(config, data, source, progress=progress)


def load_source(config: BCConfig) -> Checkpoint | None:
    """The checkpoint ``--init-from`` names (checked against the demos' task when training starts)."""
    return None if config.init_from is None else load_checkpoint(config.init_from)


# What a run started from another checkpoint takes from it, so that its weights fit.
ARCHITECTURE = ("context", "d_model", "n_layers", "n_heads")


def source_architecture(config: BCConfig, source: Checkpoint) -> BCConfig:
    """``config`` with the source checkpoint's architecture (saying so where it differs)."""
    theirs: dict[str, Any] = {name: int(source.meta["network"][name]) for name in ARCHITECTURE}
    changed = {k: v for k, v in theirs.items() if getattr(config, k) != v}
    if changed:
        listed = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in changed.items())
        print(f"note: --init-from {config.init_from} fixes the architecture: {listed}")
    return dataclasses.replace(config, **theirs)


def run_bc(config: BCConfig, data: TrainingData, source: Checkpoint | None = None, progress: bool = True) -> BCResult:
    """The training loop over prepared windows (train-bc and pretrain); data-parallel under torchrun."""
    ranks = distributed.start()
    try:
        return _run_bc(config, data, source, progress, ranks)
    finally:
        distributed.stop(ranks)


def _run_bc(
    config: BCConfig, data: TrainingData, source: Checkpoint | None, progress: bool, ranks: distributed.Ranks
) -> BCResult:
    from tqdm import tqdm

    task, normalizer, train, valid, n_demos = data.task, data.normalizer, data.train, data.valid, data.demos
    out = Path(config.out)
    resume = None
    if ranks.main:
        resume = prepare_run_dir(out, config.overwrite, OUR_FILES, config.to_dict(), RESUMABLE_CHANGES)
    ranks.barrier()  # the other ranks read the run directory only once rank 0 has prepared it
    if not ranks.main:
        resume = snapshot_state(out / LAST)
    torch.manual_seed(config.seed)
    multi = data.multi
    net: TransformerPolicyNet | MultiTaskPolicyNet
    if multi is not None:
        net = MultiTaskPolicyNet(TransformerConfig.for_bc(config, *next(iter(multi.sizes.values()))), multi.sizes)
        adapter_of = multi.adapter_of
    else:
        net = TransformerPolicyNet(TransformerConfig.for_bc(config, train.obs.shape[1], train.actions.shape[1]))
        adapter_of = {task.name: task_family(task.env_id, net.config.obs_dim, net.config.act_dim)}
    if source is not None:
        mapping = map_weights(net, source, adapter_of)
        if ranks.main and resume is None:
            print(mapping.line(f"--init-from {config.init_from}", source))
    forward = distributed.wrap(net, ranks)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_fraction * total_steps))
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_valid_loss": None, "best_epoch": 0}
    if resume is not None:
        weights, extra = load_training_state(out / LAST, optimizer)
        net.load_state_dict(weights)
        torch.set_rng_state(extra["rng"])
        state = {k: resume[k] for k in state}
    resumed_from = state["epoch"]
    if valid is None and resumed_from == 0 and ranks.main:
        print(f"note: {config.data} has no validation demos (mask/valid is empty); keeping the last epoch")
    meta: dict[str, Any] = {
        "training": config.to_dict(),
        "demos": n_demos,
        "train_windows": len(train),
        "play_windows": len(data.play) if data.play is not None else 0,
        "valid_windows": len(valid) if valid is not None else 0,
        "ranks": ranks.world,
    }
    if multi is not None:
        meta["task_demos"] = n_demos
    net.train()
    step_time = model_time = 0.0
    samples = 0
    log_path = out / LOG
    new_log = not log_path.exists() and ranks.main
    with (
        open(log_path if ranks.main else os.devnull, "a", newline="") as log_file,
        tqdm(
            total=total_steps,
            initial=state["step"],
            unit="step",
            desc=f"train-bc {task.name}",
            disable=not (progress and ranks.main),
            dynamic_ncols=True,
        ) as bar,
    ):
        log = csv.writer(log_file)
        if new_log:
            log.writerow(["epoch", "step", "train_loss", "valid_loss", "lr", "samples_per_s", "success_rate"])
        for epoch in range(state["epoch"], config.epochs):
            generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            order = torch.randperm(len(train), generator=generator)
            epoch_loss, epoch_start = 0.0, time.perf_counter()
            for b in range(steps_per_epoch):
                t0 = time.perf_counter()
                idx = order[b * config.batch_size : (b + 1) * config.batch_size]
                obs, actions, mask, labels = train.get(idx, generator)
                adapter = train.adapters(idx)
                if data.play is not None:
                    obs, actions, mask, labels, adapter = with_play(
                        data.play, (obs, actions, mask, labels, adapter), config, generator
                    )
                global_labels = labels.sum()
                batch_size = len(obs)
                if multi is not None:
                    obs, actions, mask, labels, adapter = ranks.share((obs, actions, mask, labels, adapter))
                else:
                    obs, actions, mask, labels = ranks.share((obs, actions, mask, labels))
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * lr_factor(state["step"], total_steps, warmup)
                t1 = time.perf_counter()
                loss = bc_loss(net, config.loss, obs, actions, mask, labels, forward, adapter)
                if ranks.distributed:  # DDP averages over ranks: weigh each by its share of the labels
                    loss = loss * (labels.sum() * ranks.world / global_labels.clamp_min(1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                optimizer.step()
                t2 = time.perf_counter()
                epoch_loss += float(loss.detach())
                state["step"] += 1
                samples += batch_size
                bar.update(1)
                t3 = time.perf_counter()
                model_time += t2 - t1
                step_time += t3 - t0
            rate = len(train) / (time.perf_counter() - epoch_start)
            train_loss = ranks.mean(epoch_loss) / steps_per_epoch
            valid_loss = validation_loss(net, config.loss, valid, 4 * config.batch_size) if valid else None
            success = None
            if config.eval_every and (epoch + 1) % config.eval_every == 0 and ranks.main:
                net.eval()
                first = net.task_net(adapter_of[task.name]) if isinstance(net, MultiTaskPolicyNet) else net
                success = _success_rate(config, _policy(first, normalizer, task, config.seed))
                net.train()
            state["epoch"] = epoch + 1
            score = valid_loss if valid_loss is not None else -state["epoch"]  # no valid split: latest wins
            best = state["best_valid_loss"]
            if best is None or score < best:
                state["best_valid_loss"], state["best_epoch"] = score, epoch + 1
            if state["best_epoch"] == epoch + 1 and ranks.main:
                about = {**meta, "epoch": epoch + 1, "valid_loss": valid_loss, "loss": config.loss}
                if isinstance(net, MultiTaskPolicyNet):
                    assert multi is not None
                    save_multitask_checkpoint(out, multi.checkpoint(net), about)
                else:
                    save_checkpoint(out, net, normalizer, task, about)
            log.writerow(
                [
                    epoch + 1,
                    state["step"],
                    f"{train_loss:.6f}",
                    "" if valid_loss is None else f"{valid_loss:.6f}",
                    f"{optimizer.param_groups[0]['lr']:.3e}",
                    f"{rate:.0f}",
                    "" if success is None else f"{success:.4f}",
                ]
            )
            log_file.flush()
            # The global RNG drives dropout: saving it makes the resumed run continue exactly.
            if ranks.main:
                save_training_state(
                    out / LAST,
                    net.state_dict(),
                    optimizer,
                    {**state, "config": config.to_dict(), "ranks": ranks.world},
                    extra={"rng": torch.get_rng_state()},
                )
            bar.set_postfix(
                loss=f"{train_loss:.3f}",
                valid="-" if valid_loss is None else f"{valid_loss:.3f}",
                samples_s=f"{rate:.0f}",
                refresh=False,
            )
    if ranks.main:
        plot_bc_curves(log_path, out / "curves.png")
    best_loss = state["best_valid_loss"] if valid is not None else None
    return BCResult(
        out,
        state["best_epoch"],
        best_loss,
        state["epoch"] - resumed_from,
        samples / step_time if step_time else 0.0,
        1.0 - model_time / step_time if step_time else 0.0,
        resumed_from,
        model_time,
    )


def _success_rate(config: BCConfig, policy: Any) -> float:
    from lam_robot.evaluation import evaluate_policy
    from lam_robot.rollout import one_torch_thread

    with one_torch_thread():
        result = evaluate_policy(policy.task, policy, "bc", config.eval_episodes, seed=config.eval_seed, n_envs=4)
    return result.success_rate


def _policy(net: TransformerPolicyNet, normalizer: Normalizer, task: Any, seed: int):
    from lam_robot.policy.bc_policy import TransformerPolicy

    return TransformerPolicy(net, normalizer, task, seed=seed)
