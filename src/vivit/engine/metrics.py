"""Classification metrics: multi-view aggregation, top-k accuracy, mean class accuracy, per-class
accuracy and the confusion matrix (paper Sec. 4.1: views' logits are averaged)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

AGGREGATIONS = ("logits", "softmax")


def aggregate_views(logits: torch.Tensor, how: str = "logits") -> torch.Tensor:
    """(B, V, K) per-view scores -> (B, K): mean of logits (the paper) or mean of softmax probabilities."""
    if how == "softmax":
        return logits.float().softmax(dim=-1).mean(dim=1)
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
