"""Optimiser construction: SGD with momentum (the paper) or AdamW, LR scaled by batch size,
no weight decay on biases, norms, cls tokens and positional embeddings."""

from __future__ import annotations

import torch
from torch import nn

from vivit.engine.config import OptimSection


def scaled_lr(optim: OptimSection, batch_size: int) -> float:
    """Linear scaling rule: lr * batch_size / base_batch_size (no scaling when base_batch_size is None)."""
    return optim.lr if optim.base_batch_size is None else optim.lr * batch_size / optim.base_batch_size


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices and kernels decay; 1-D parameters (biases, norms) and tokens/embeddings do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        (no_decay if skip else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def build_optimizer(model: nn.Module, optim: OptimSection, batch_size: int) -> torch.optim.Optimizer:
    lr = scaled_lr(optim, batch_size)
    groups = param_groups(model, optim.weight_decay)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    return torch.optim.AdamW(groups, lr=lr, betas=optim.betas)
