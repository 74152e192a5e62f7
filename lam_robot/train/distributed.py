"""Data-parallel BC under torchrun (torch.distributed): the process group, and what each rank trains on.

`torchrun --nproc_per_node N -m lam_robot train-bc ...` sets RANK/WORLD_SIZE; each rank builds the same
global batch from the same seeded generator and keeps every N-th window of it, DistributedDataParallel
averages the gradients, and each rank's loss is scaled so that the average is the global batch's mean.
The run therefore follows the single-process one (exactly so without dropout, up to float summation
order). gloo on CPU, nccl on CUDA. Only rank 0 writes checkpoints, logs and plots.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place in the run: rank and world size (1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this rank writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes train together."""
        return self.world > 1

    def share(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """This rank's rows of a global batch (every world-th, starting at its rank)."""
        return tuple(t[self.rank :: self.world] for t in batch) if self.distributed else batch

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.world

    def barrier(self) -> None:
        """Wait for every rank (a no-op alone)."""
        if self.distributed:
            dist.barrier()


def start() -> Ranks:
    """Join the process group torchrun describes (RANK, WORLD_SIZE), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size())


def wrap(net: torch.nn.Module, ranks: Ranks) -> Any:
    """The module to call for the forward pass: ``net`` itself, or DDP around it."""
    if not ranks.distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net)


def stop(ranks: Ranks) -> None:
    """Leave the process group."""
    if ranks.distributed and dist.is_initialized():
        dist.destroy_process_group()
