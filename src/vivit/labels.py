"""`labels.txt`: class names, one a line, in label order; written beside checkpoints, run folders and
pretrained weights, read back by eval, predict and `load_pretrained` users."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

LABELS_FILE = "labels.txt"


def write_labels(path: str | Path, classes: Sequence[str]) -> None:
    Path(path).write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")


def read_labels(path: str | Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
