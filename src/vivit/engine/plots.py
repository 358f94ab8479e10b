"""PNG plots written at the end of a run: training curves, confusion matrix, a model comparison chart."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

from vivit.engine.logging import read_metrics  # noqa: E402


def training_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """Loss and accuracy per epoch (train, and validation where it ran) from metrics.csv."""
    rows = [r for r in read_metrics(metrics_csv) if r["kind"] == "epoch"]
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [float(r["loss"]) for r in rows], marker="o", label="train")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="training loss")
    ax_acc.plot(epochs, [100 * float(r["acc"]) for r in rows], marker="o", label="train")
    val = [(e, 100 * float(r["val_top1"])) for e, r in zip(epochs, rows) if r.get("val_top1")]
    if val:
        ax_acc.plot(*zip(*val), marker="s", label="val top-1")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out)


def confusion_matrix(matrix: list[list[int]], classes: list[str], out: str | Path, title: str = "confusion matrix") -> Path:
    """Rows true class, columns predicted class, counts written in the cells."""
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), max(4, 0.5 * k + 2)))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if k <= 30:
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, n in enumerate(row):
                ax.text(j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black", fontsize=8)
    return _save(fig, out)


def comparison(results: dict[str, float], out: str | Path, title: str, chance: float | None = None) -> Path:
    """One bar per model (accuracy in %), with the chance level as a dashed line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(list(results), [100 * v for v in results.values()], color=["tab:blue", "tab:gray", "tab:orange"][: len(results)])
    ax.bar_label(bars, fmt="%.1f%%")
    if chance is not None:
        ax.axhline(100 * chance, ls="--", color="k", label="chance")
        ax.legend()
    ax.set(ylabel="val top-1 (%)", title=title, ylim=(0, 105))
    return _save(fig, out)


def _save(fig: plt.Figure, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
