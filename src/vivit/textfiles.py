"""The project's text files, UTF-8 whatever the locale: `labels.txt` (class names, one a line, in label
order; written beside checkpoints, run folders and pretrained weights) and a reader for configs and JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vivit.errors import VivitError

LABELS_FILE = "labels.txt"


def write_labels(path: str | Path, classes: Sequence[str]) -> None:
    Path(path).write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")


def read_labels(path: str | Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_text(path: str | Path) -> str:
    """A text file of the project's formats (labels, configs, JSON): UTF-8, or an error naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise VivitError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
