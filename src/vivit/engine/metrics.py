"""Classification metrics: multi-view aggregation, top-k accuracy, mean class accuracy, per-class
accuracy and the confusion matrix (paper Sec. 4.1: views' logits are averaged); for multi-head models the
metrics of each split and the joint action accuracy (official `ViViTMultiHeadClassificationModel.get_metrics_fn`
and `model_utils.joint_accuracy` / `joint_top_k`, scenic/projects/vivit)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

AGGREGATIONS = ("logits", "softmax")


def aggregate_views(logits: torch.Tensor, how: str = "logits", splits: tuple[int, ...] | None = None) -> torch.Tensor:
    """(B, V, K) per-view scores -> (B, K): mean of logits (the paper) or mean of softmax probabilities
    (of each class split's softmax for a multi-head model)."""
    if how == "softmax":
        parts = logits.float().split(list(splits or (logits.shape[-1],)), dim=-1)
        return torch.cat([p.softmax(dim=-1) for p in parts], dim=-1).mean(dim=1)
    return logits.float().mean(dim=1)


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) bool: the label is among the k highest scores (k is capped at the number of classes)."""
    k = min(k, scores.shape[-1])
    return (scores.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1)


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class ClassificationReport:
    top1: float
    top5: float
    mean_class_accuracy: float
    per_class_accuracy: list[float | None]  # None for a class without samples
    confusion: list[list[int]]
    num_samples: int

    @classmethod
    def from_scores(cls, scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> "ClassificationReport":
        """Metrics of (N, K) scores against (N,) labels; accuracies are fractions in [0, 1]."""
        if scores.shape[0] == 0:
            raise ValueError("no samples to evaluate")
        cm = confusion_matrix(scores.argmax(dim=-1), labels, num_classes)
        support = cm.sum(dim=1)
        per_class = [float(cm[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
        present = [a for a in per_class if a is not None]
        return cls(
            top1=float(topk_correct(scores, labels, 1).float().mean()),
            top5=float(topk_correct(scores, labels, 5).float().mean()),
            mean_class_accuracy=sum(present) / len(present),
            per_class_accuracy=per_class,
            confusion=cm.tolist(),
            num_samples=int(scores.shape[0]),
        )


TOP5_MIN_CLASSES = 6  # with 5 classes or fewer top-5 accuracy is 100 % by construction: not reported


def top_actions(probabilities: list[torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-split (B, K_i) probabilities -> the k most probable actions (one class per split), their joint
    probability being the product of the splits' (official `get_joint_logits_labels`): (B, k) probabilities
    and (B, k, S) class indices. Exact: the best k combinations extend the best k of the first splits."""
    best = probabilities[0].float()  # (B, m): partial products
    index = torch.arange(best.shape[1], device=best.device)[None, :, None].expand(best.shape[0], -1, 1)
    for p in probabilities[1:]:
        joint = (best[:, :, None] * p.float()[:, None, :]).flatten(1)  # (B, m * K)
        best, flat = joint.topk(min(k, joint.shape[1]), dim=-1)
        prefix, cls = flat // p.shape[1], flat % p.shape[1]
        index = torch.cat([index.gather(1, prefix[..., None].expand(-1, -1, index.shape[2])), cls[..., None]], dim=-1)
    best, order = best.topk(min(k, best.shape[1]), dim=-1)
    return best, index.gather(1, order[..., None].expand(-1, -1, index.shape[2]))


@dataclass
class MultiHeadReport:
    """Each split's report and the action accuracy (every split's top-1 right; top-5 over the joint
    probabilities). `top1` / `top5` are the action's: what a multi-head run selects its best model by."""

    splits: dict[str, ClassificationReport]
    top1: float
    top5: float | None  # None where trivially 1.0 (5 actions or fewer)
    num_samples: int

    @classmethod
    def from_scores(cls, scores: torch.Tensor, labels: torch.Tensor, splits: dict[str, int],
                    probabilities: bool = False) -> "MultiHeadReport":
        """(N, sum K_i) logits, or each split's probabilities (`probabilities`: views' softmax averaged), against
        (N, S) labels."""
        if scores.shape[0] == 0:
            raise ValueError("no samples to evaluate")
        parts = scores.float().split(list(splits.values()), dim=-1)
        reports = {name: ClassificationReport.from_scores(z, labels[:, i], size)
                   for i, ((name, size), z) in enumerate(zip(splits.items(), parts))}
        top1 = torch.stack([z.argmax(dim=-1) == labels[:, i] for i, z in enumerate(parts)]).all(dim=0)
        _, actions = top_actions([z if probabilities else z.softmax(dim=-1) for z in parts], 5)  # (N, 5, S)
        top5 = (actions == labels[:, None, :]).all(dim=-1).any(dim=-1)
        return cls(splits=reports, top1=float(top1.float().mean()),
                   top5=float(top5.float().mean()) if math.prod(splits.values()) >= TOP5_MIN_CLASSES else None,
                   num_samples=int(scores.shape[0]))
