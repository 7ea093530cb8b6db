"""Data-parallel training under torchrun: set-up from torchrun's environment, sharding, reductions.

    torchrun --nproc_per_node=2 -m training ...          # gloo on the CPU, nccl on CUDA

Without torchrun (no WORLD_SIZE) everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this machine, which share its cores

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and writes files; the others only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE_PROCESS = World()


def init_distributed(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes; returns the world and this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    world = World(
        int(os.environ["RANK"]), size, int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    )
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def shard(order: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of an epoch's order: disjoint across ranks and of equal length.

    Equal length matters: every rank must take the same number of steps, or the gradient
    all-reduce of the last step waits forever. The few leftover items (fewer than the
    number of ranks) sit out this epoch; the next epoch's order differs.
    """
    usable = len(order) - len(order) % world.size
    return order[:usable][world.rank :: world.size]


def all_reduce_sum(*values: float, device: torch.device, world: World) -> list[float]:
    """Sum numbers over all ranks (identity in a single process)."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_shards(indices: torch.Tensor, device: torch.device, world: World) -> list[torch.Tensor]:
    """Every rank's sample indices, for the check that the shards are disjoint."""
    if not world.distributed:
        return [indices]
    local = indices.to(device)
    gathered = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(gathered, local)
    return [g.cpu() for g in gathered]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def finish(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
