"""Labels, targets and correctness for one head or a multi-head model (`class_splits`, e.g. Epic-Kitchens
nouns and verbs): each split is its own softmax classifier over its slice of the logits, as in the official
Scenic `ViViTMultiHeadClassificationModel.loss_function` (scenic/projects/vivit/model.py); the loss is
`vivit.engine.train.split_cross_entropy`."""

from __future__ import annotations

from typing import Any

import torch

from vivit.config import ViViTConfig
from vivit.errors import ConfigError


def split_labels(labels: torch.Tensor, num_splits: int) -> torch.Tensor:
    """(B,) single-head or (B, S) multi-head labels -> (B, S) long, one class index per split."""
    labels = labels.long()
    labels = labels[:, None] if labels.ndim == 1 else labels
    if labels.shape[1] != num_splits:
        raise ConfigError(f"the labels have {labels.shape[1]} value(s) per video, the model's head has {num_splits} "
                          f"class split(s): give one label per split (model.overrides.class_splits)")
    return labels


def split_soft_targets(labels: torch.Tensor, splits: tuple[int, ...], smoothing: float = 0.0) -> torch.Tensor:
    """(B, S) labels -> (B, sum(splits)) soft targets, smoothed within each split (label smoothing per split)."""
    from vivit.data import soft_targets

    return torch.cat([soft_targets(labels[:, i], k, smoothing) for i, k in enumerate(splits)], dim=-1)


def all_correct(logits: torch.Tensor, labels: torch.Tensor, splits: tuple[int, ...]) -> torch.Tensor:
    """(B,) bool: every split's arg-max is its label (a multi-head model's action accuracy)."""
    hits = [z.argmax(dim=-1) == labels[:, i] for i, z in enumerate(logits.split(splits, dim=-1))]
    return torch.stack(hits).all(dim=0)


def configured_splits(overrides: dict[str, Any]) -> dict[str, int] | None:
    """{name: size} of the `class_splits` / `split_names` in a training config's `model.overrides`, validated
    as `ViViTConfig` does (default names "1", "2", ...); None for a single head."""
    splits, names = overrides.get("class_splits"), overrides.get("split_names")
    if splits is None:
        return None
    if not isinstance(splits, (list, tuple)) or not all(isinstance(k, int) for k in splits):
        raise ConfigError(f"model.overrides.class_splits must be a list of positive integers, got {splits!r}")
    names = tuple(names) if isinstance(names, (list, tuple)) else names
    return ViViTConfig(num_classes=sum(splits), class_splits=tuple(splits), split_names=names).splits
