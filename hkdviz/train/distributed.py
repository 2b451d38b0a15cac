"""torchrun / DDP support for teacher training, trajectory generation and HKD training.

    torchrun --nproc_per_node 8 -m hkdviz.train hkd --preset cifar10 --out runs/c10

`init_distributed` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) and joins the process group: NCCL on CUDA (one GPU per local rank), gloo on CPU.
Without those variables it returns a single-process context, so every entry point runs unchanged
with or without torchrun. Each rank gets its own seeds and data shard; rank 0 writes logs and
checkpoints; everyone meets at a barrier at the end.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..checkpoint import resolve_device


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # we called init_process_group (so we destroy it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def environment_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device="auto", timeout_minutes: float = 30.0) -> DistributedContext:
    """Join the process group that torchrun set up (or a single-process context without it)."""
    world_size = environment_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, device, False)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
        initialized_here = True
    return DistributedContext(rank, world_size, local_rank, device, initialized_here)


def barrier(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        if context.device.type == "cuda":
            dist.barrier(device_ids=[context.device.index])
        else:
            dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.initialized_here and dist.is_initialized():
        barrier(context)
        dist.destroy_process_group()
        context.initialized_here = False


def all_reduce_mean(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Mean over ranks (a copy; the input is unchanged)."""
    values = values.detach().clone()
    if context.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= context.world_size
    return values


def broadcast_object(value, context: DistributedContext):
    """Rank 0's value on every rank (small picklable objects only, e.g. a decision)."""
    if not context.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def wrap_model(model: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    """DistributedDataParallel around `model` when running under torchrun, the model itself otherwise.

    Gradients are averaged over ranks, so with a per-rank loss that is a mean over the rank's shard,
    the update equals single-process training on the global batch.
    """
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # Identity Koopman levels and unused label maps own no gradients in some configs.
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=False)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def shard(items: list, context: DistributedContext) -> list:
    """Round-robin share of `items` for this rank (disjoint across ranks, union = items)."""
    return items[context.rank::context.world_size]


__all__ = ["DistributedContext", "init_distributed", "barrier", "shutdown", "all_reduce_mean", "broadcast_object",
           "wrap_model", "unwrap_model", "shard", "environment_world_size"]
