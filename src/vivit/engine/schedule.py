"""Learning-rate schedule over optimiser steps: linear warmup, then cosine decay to `min_lr` (paper Table 7)."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total_steps: int, warmup_steps: int, name: str = "cosine", min_ratio: float = 0.0) -> float:
    """Multiplier of the peak LR at `step` (0-based): (step+1)/warmup during warmup, then cosine or constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, name: str = "cosine", min_lr: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimiser step; its state dict is plain ints (checkpoint-safe)."""
    peak = optimizer.param_groups[0]["lr"]
    min_ratio = min_lr / peak if peak > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, name, min_ratio)
    )
