"""Soft targets: label smoothing and mixup (paper Appendix, Epic-Kitchens / SSv2 recipe)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vivit.errors import ConfigError


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) labels -> (B, K) targets: (1 - s) on the label plus s / K everywhere (label smoothing)."""
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError(f"label smoothing must be in [0, 1), got {smoothing}")
    return F.one_hot(labels.long(), num_classes).float() * (1 - smoothing) + smoothing / num_classes


def mixup(videos: torch.Tensor, targets: torch.Tensor, alpha: float,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x = lam * x + (1 - lam) * x.flip(0), same for soft targets (B, K); one lam ~ Beta(alpha, alpha) per batch."""
    if alpha <= 0:
        raise ConfigError(f"mixup alpha must be > 0, got {alpha}")
    if targets.dim() != 2 or not targets.is_floating_point():
        raise ConfigError(f"mixup needs soft targets (B, K) (see soft_targets), got {tuple(targets.shape)} "
                          f"{targets.dtype}")
    seed = int(torch.randint(2**62, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return torch.lerp(videos.flip(0), videos, lam), torch.lerp(targets.flip(0), targets, lam)
