"""torch.distributed helpers: the same ``train`` runs in one process or under ``torchrun``.

Under ``torchrun`` (environment ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, …) the
process group is initialised with NCCL on CUDA and gloo on CPU; each rank drives
``cuda:LOCAL_RANK`` (or the CPU). The network is wrapped in DDP, the global batch is split into
interleaved per-rank slices (:func:`undiffuse.training.keyed.shard_positions`), rank 0 alone writes
logs, samples and checkpoints, and barriers surround checkpoint writes. Because every rank applies the
same averaged gradients, parameters — and hence the EMA — stay identical on all ranks.

Several nodes: run ``torchrun --nnodes N --node_rank i --rdzv_endpoint HOST:PORT …`` on each node with
the run directory on a filesystem every node can read (resume loads the checkpoint on every rank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from undiffuse.rng import pick_device

__all__ = ["DistContext", "setup", "teardown", "wrap_ddp", "barrier", "all_reduce_sum", "broadcast_object",
           "pick_device"]  # fmt: skip


@dataclass
class DistContext:
    """Where this process stands: rank, world size, its device, and whether we created the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: Optional[str | torch.device] = None) -> DistContext:
    """Initialise torch.distributed if launched by torchrun with WORLD_SIZE > 1, else a single-process
    context. An already initialised process group is reused (and not destroyed by :func:`teardown`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistContext(device=pick_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(net: nn.Module, ctx: DistContext) -> nn.Module:
    """DDP-wrap ``net`` when distributed; the module itself otherwise."""
    if not ctx.distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(net, device_ids=ids, broadcast_buffers=False)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; returned for chaining)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. an error message found on rank 0)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
