"""Distributed data parallel through `torchrun`: process-group setup (NCCL on GPU, gloo on CPU),
rank helpers and metric reduction across ranks."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from typing import ContextManager

import torch
import torch.distributed as dist
from torch import nn

GLOO_TEARDOWN_S = 0.5


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world, local_rank)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), local_rank
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1, 0
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def cleanup(failed: bool = False) -> None:
    """Leave the process group.

    After success the ranks leave together: a rank that tears gloo down while another still talks to it
    aborts. gloo goes on tearing down after `destroy_process_group` returns, and a process that exits at
    once aborts now and then ("terminate called without an active exception", after all work is done),
    so it waits a moment first. After a failure this rank leaves alone: the others may sit in a collective
    it will never join, and waiting for them would hang the job; its exit makes torchrun stop them. (NCCL's
    destroy may itself wait for the peers, so there the process just exits.)"""
    if not dist.is_initialized():
        return
    gloo = dist.get_backend() == "gloo"
    if failed:
        if gloo:
            dist.destroy_process_group()
        return
    dist.barrier()
    dist.destroy_process_group()
    if gloo:
        time.sleep(GLOO_TEARDOWN_S)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0 logs, checkpoints and writes plots."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel when a process group is up; the model itself otherwise."""
    if not is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(model: nn.Module, skip: bool) -> ContextManager:
    """Skip the gradient all-reduce on accumulation micro-steps (DDP only)."""
    return model.no_sync() if skip and isinstance(model, nn.parallel.DistributedDataParallel) else nullcontext()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum scalars over ranks (counts and loss sums; divide afterwards)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor's first axis across ranks (sizes may differ)."""
    if not is_distributed():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])
