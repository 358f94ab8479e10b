"""Progress and metric logging: tqdm bars (throughput, ETA), a CSV of metrics (TensorBoard too when
installed) and the concise per-epoch line."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vivit.engine.atomic import atomic_write

T = TypeVar("T")


def progress(items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it", quiet: bool = False) -> Iterator[T]:
    """A tqdm bar with rate and ETA on stderr; off when quiet or when stderr is not a terminal. While it runs,
    log records (a skipped video's warning) print above the bar (`tqdm.write`), not into its line."""
    bar = tqdm(items, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True,
               disable=quiet or not sys.stderr.isatty())
    return bar if bar.disable else _logging_above(bar)


def _logging_above(bar: tqdm) -> Iterator[T]:
    with logging_redirect_tqdm(), bar:
        yield from bar


class MetricLogger:
    """Appends rows to `metrics.csv` (columns fixed by the first row) and mirrors scalars to TensorBoard
    when it is installed and enabled. A new run starts the file afresh; a resumed run (`resume_step`)
    keeps the rows up to its checkpoint's step, so replayed steps are not logged twice."""

    def __init__(self, out: str | Path, tensorboard: bool = True, resume_step: int | None = None):
        self.path = Path(out) / "metrics.csv"
        self.fields: list[str] | None = None
        if self.path.is_file():
            if resume_step is None:
                self.path.unlink()
            else:
                self._truncate(resume_step)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            self.writer = SummaryWriter(str(out)) if SummaryWriter else None

    def _truncate(self, step: int) -> None:
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
            self.fields = list(rows[0]) if rows else None
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            if self.fields:
                writer = csv.DictWriter(f, self.fields)
                writer.writeheader()
                writer.writerows(r for r in rows if int(r["step"]) <= step)

    def log(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.fields)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{row.get('kind', 'train')}/{key}", value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def epoch_line(epoch: int, epochs: int, stats: dict[str, Any]) -> str:
    """`epoch 3/10  loss 1.234  acc 45.6%  val top1 50.0% top5 90.0%  lr 1.2e-03  42.1 clips/s  skipped 0`."""
    parts = [f"epoch {epoch}/{epochs}", f"loss {stats['loss']:.4f}", f"acc {100 * stats['acc']:.1f}%"]
    if stats.get("val_top1") is not None:
        top5 = stats.get("val_top5")  # None with 5 classes or fewer, where it is 100 % by construction
        parts.append(f"val top1 {100 * stats['val_top1']:.1f}%" + ("" if top5 is None else f" top5 {100 * top5:.1f}%"))
    parts += [f"lr {stats['lr']:.2e}", f"{stats['clips_per_s']:.1f} clips/s", f"skipped {stats['skipped']}"]
    if stats.get("nonfinite"):
        parts.append(f"non-finite steps skipped {stats['nonfinite']}")
    return "  ".join(parts)
