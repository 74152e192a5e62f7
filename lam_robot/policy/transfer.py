"""Starting a network from a checkpoint of another task (or of several): map what matches, re-initialise
the rest, and say which in one line.

A network's parameters fall into groups that are mapped or re-initialised as a whole: the shared
``trunk`` (positions, encoder, final norm), and per task family an input layer (``body.embed``, or
``adapters.<family>.embed`` in a multi-task network) and an output head (``mean_head`` with ``log_std``).
A group is mapped when the source has a group of the same name in which every tensor has the same name
and shape; a single-task network's input and output are named by its task's family
(``lam_robot.tasks.task_family``) when the other side is a multi-task network, and match each other
directly when both are single-task.

When an action space cannot map: ``train-bc --init-from`` always can (a head of another size is
re-initialised and learnt from the demos); ``finetune --policy RUN --task OTHER`` cannot when RUN has no
head of OTHER's action size, since RL would start from an untrained head (one-line error naming both shapes;
run train-bc --init-from RUN on a few demos of OTHER first).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lam_robot.errors import LamRobotError
from lam_robot.policy.checkpoint import Checkpoint, Normalizer, load_checkpoint
from lam_robot.policy.network import MultiTaskPolicyNet, TransformerPolicyNet
from lam_robot.tasks import TaskSpec, task_family, task_layout

Group = dict[str, torch.Tensor]
HEAD = ("mean_head.weight", "mean_head.bias", "log_std")


def source_family(source: Checkpoint) -> str:
    """The adapter name of a single-task checkpoint's task, from its recorded sizes."""
    config = source.net.config
    return task_family(source.task.env_id, config.obs_dim, config.act_dim)


def groups(net: nn.Module, adapter: str) -> dict[tuple[str, str], tuple[str, Group]]:
    """(adapter or "", part) -> (label, {key -> tensor}) for ``net``'s groups; ``adapter`` names a single-task
    network's family. The tensors share storage with the parameters (copying into them sets the weights)."""
    sd = net.state_dict()
    if isinstance(net, MultiTaskPolicyNet):
        out = {("", "trunk"): ("trunk", {k: v for k, v in sd.items() if k.startswith("body.")})}
        for name in net.sizes:
            p = f"adapters.{name}"
            out[(name, "input")] = (f"{p}.embed", {k: sd[f"{p}.embed.{k}"] for k in ("weight", "bias")})
            head = {k: sd[f"{p}.{k}"] for k in HEAD}
            out[(name, "output")] = (f"{p}.mean_head+log_std", head)
        return out
    trunk = {k: v for k, v in sd.items() if k.startswith("body.") and not k.startswith("body.embed.")}
    return {
        ("", "trunk"): ("trunk", trunk),
        (adapter, "input"): ("body.embed", {k: sd[f"body.embed.{k}"] for k in ("weight", "bias")}),
        (adapter, "output"): (
            "mean_head+log_std",
            {k: sd[k] for k in ("mean_head.weight", "mean_head.bias", "log_std")},
        ),
    }


def _fits(a: Group, b: Group) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


@dataclasses.dataclass
class Mapping:
    """What ``map_weights`` did: group labels mapped and re-initialised, and for each target adapter the
    source adapter whose input layer it took (its observation statistics go with it)."""

    mapped: list[str]
    reinitialised: list[str]
    inputs: dict[str, str]

    def line(self, what: str, source: Checkpoint) -> str:
        """The one line that says so."""
        tasks = list(source.multitask.tasks) if source.multitask is not None else [source.task.name]
        return (
            f"note: {what} (trained on {', '.join(tasks)}): mapped {', '.join(self.mapped) or 'nothing'}; "
            f"re-initialised {', '.join(self.reinitialised) or 'nothing'}"
        )


def map_weights(target: nn.Module, source: Checkpoint, tasks: dict[str, str]) -> Mapping:
    """Copy into ``target`` every group of ``source`` that matches by name and shape; ``tasks`` maps each
    target task name to its adapter (family). The other groups keep their fresh initialisation."""
    multi_target = isinstance(target, MultiTaskPolicyNet)
    single_name = next(iter(tasks.values()))
    theirs = source_groups(source, tasks, multi_target)
    mapping = Mapping([], [], {})
    with torch.no_grad():
        for (adapter, part), (label, mine) in groups(target, single_name).items():
            found = theirs.get((adapter, part))
            if found is not None and _fits(mine, found[1]):
                for key, value in mine.items():
                    value.copy_(found[1][key])
                mapping.mapped.append(label)
                if part == "input":
                    mapping.inputs[adapter] = found[0]
            else:
                mapping.reinitialised.append(label)
    return mapping


def source_groups(
    source: Checkpoint, tasks: dict[str, str], multi_target: bool
) -> dict[tuple[str, str], tuple[str, Group]]:
    """The source's groups keyed as the target's: by family, or (single-task target) the source adapter
    of the target's task renamed to the target's family. Labels become the source adapter's name."""
    if source.multitask is None:
        theirs = source_family(source)
        if not multi_target:  # both single-task: the same names, whatever the families
            theirs = next(iter(tasks.values()))
        found = groups(source.net, theirs)
        return {k: (source_family(source), v[1]) for k, v in found.items()}
    multi = source.multitask
    found = groups(multi.net, "")
    out = {k: (k[0], v[1]) for k, v in found.items()}
    if not multi_target:
        (task, family), *_ = tasks.items()
        picked = multi.adapter_of.get(task, family)
        for part in ("input", "output"):
            if (picked, part) in found:
                out[(family, part)] = (picked, found[(picked, part)][1])
    return out


def observation_statistics(mapping: Mapping, source: Checkpoint, adapter: str) -> Normalizer | None:
    """The source's normaliser for the target adapter whose input layer was mapped (None if it was not)."""
    theirs = mapping.inputs.get(adapter)
    if theirs is None:
        return None
    if source.multitask is not None:
        return source.multitask.normalizers[theirs]
    return source.normalizer


def checkpoint_for_task(directory: str | Path, task: TaskSpec | None, what: str) -> Checkpoint:
    """A checkpoint to act (and fine-tune) in ``task``, which may be another task than its own: of a
    multi-task checkpoint the adapter for ``task``; else its weights mapped onto a single-task network of
    ``task``'s sizes (a new input layer when the observation size differs, its statistics from reset
    observations of ``task``), said in one line. A task whose action size no head of the checkpoint has
    is refused in one line naming both shapes."""
    ckpt = load_checkpoint(directory)
    if (
        task is None
        or task.name == ckpt.task.name
        or (ckpt.multitask is not None and task.name in ckpt.multitask.tasks)
    ):
        return load_checkpoint(directory, task) if task is not None else ckpt
    layout = task_layout(task)
    if not layout.fits:  # the caller's own checks say what is wrong with such an env
        return ckpt
    if ckpt.multitask is not None and layout.family in ckpt.multitask.normalizers:
        return load_checkpoint(directory, task)
    sizes = (
        ckpt.multitask.net.sizes if ckpt.multitask is not None else {source_family(ckpt): (0, ckpt.net.config.act_dim)}
    )
    heads = [name for name, (_, act) in sizes.items() if act == layout.act_dim]
    if not heads:
        shapes = " or ".join(sorted({f"({act},)" for _, act in sizes.values()}))
        raise LamRobotError(
            f"{what} {directory} acts with actions of shape {shapes} (trained on {ckpt.task.name!r}); task "
            f"{task.name!r} takes shape ({layout.act_dim},): fine-tuning cannot start from an untrained action "
            f"head; run train-bc --init-from {directory} on demos of {task.name!r} first"
        )
    if ckpt.multitask is not None:  # the first adapter with the right action size stands in for the task
        source = load_checkpoint(directory, ckpt.multitask.tasks[_task_of(ckpt, heads[0])])
        source.multitask = None
    else:
        source = ckpt
    net = TransformerPolicyNet(dataclasses.replace(source.net.config, obs_dim=layout.obs_dim))
    mapping = map_weights(net, source, {task.name: layout.family})
    print(mapping.line(f"{what} {directory}", source))
    normalizer = observation_statistics(mapping, source, layout.family)
    if normalizer is None:
        normalizer = Normalizer.fit(reset_observations(task), layout.act_low, layout.act_high)
    else:
        normalizer = dataclasses.replace(normalizer, act_low=layout.act_low, act_high=layout.act_high)
    normalizer.obs_keys = task.policy_obs_keys
    return Checkpoint(net.eval(), normalizer, task, ckpt.meta)


def _task_of(ckpt: Checkpoint, adapter: str) -> str:
    assert ckpt.multitask is not None
    return next(t for t, a in ckpt.multitask.adapter_of.items() if a == adapter)


RESET_SEEDS = 32


def reset_observations(task: TaskSpec) -> np.ndarray:
    """(RESET_SEEDS, obs_dim) policy observations at reset: statistics for a new input layer without demos."""
    env = task.make_env()
    try:
        return np.stack([task.flat_obs(env.reset(seed=seed)[0]) for seed in range(RESET_SEEDS)])
    finally:
        env.close()
