"""Where the videos of a dataset are: folder-per-class, `relative/path label` list files, Kinetics CSV, path lists.

Every reader returns `(samples, classes)`: samples are `(path, label)` with labels indexing the class list.
Files are not opened here; a missing or broken file is found (and skipped) when it is read.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from vivit.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg")
SPLIT_FOLDERS = ("train", "val", "test")

Samples = list[tuple[Path, int]]


def _class_index(classes: list[str] | None, inferred: list[str], source: Path) -> dict[str, int]:
    """Map class name -> label, from the forced class list when given (then unknown names are an error)."""
    order = list(classes) if classes is not None else sorted(set(inferred))
    unknown = sorted(set(inferred) - set(order))
    if unknown:
        raise DataError(f"{source}: classes {unknown[:5]} are not in the given class list ({len(order)} classes)")
    return {name: i for i, name in enumerate(order)}


def from_folder(root: Path, split: str | None, classes: list[str] | None) -> tuple[Samples, list[str]]:
    """`root/<class>/*.mp4`, or `root/<split>/<class>/*.mp4` when split folders exist (classes sorted)."""
    splits = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if splits:
        if split is None:
            raise DataError(f"{root} has split folders {splits}: choose one with split=")
        if split not in splits:
            raise DataError(f"{root}: split {split!r} not found, available: {splits}")
        root = root / split
    elif split is not None:
        raise DataError(f"{root} has no split folders ({', '.join(SPLIT_FOLDERS)}), got split={split!r}")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    index = _class_index(classes, [p.name for p in folders], root)
    samples = [(f, index[folder.name]) for folder in folders for f in sorted(folder.iterdir())
               if f.suffix.lower() in VIDEO_EXTENSIONS]
    return samples, list(index)


def from_list_file(path: Path, classes: list[str] | None) -> tuple[Samples, list[str]]:
    """mmaction2-style lines `relative/path label` (label an int or a class name), paths relative to the file."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected 'relative/path label', got {line!r}")
        rows.append((path.parent / parts[0], parts[1]))
    if all(label.lstrip("-").isdigit() for _, label in rows):
        labels = [int(label) for _, label in rows]
        names = classes or [str(i) for i in range(max(labels, default=-1) + 1)]
        bad = [k for k in labels if not 0 <= k < len(names)]
        if bad:
            raise DataError(f"{path}: label {bad[0]} outside 0..{len(names) - 1}")
        return [(p, k) for (p, _), k in zip(rows, labels)], list(names)
    index = _class_index(classes, [label for _, label in rows], path)
    return [(p, index[label]) for p, label in rows], list(index)


def _kinetics_file(folder: Path, row: dict[str, str]) -> Path:
    """`<id>_<start:06d>_<end:06d>.<ext>` under `folder/<split>/<label>/`, `folder/<label>/` or `folder/`."""
    stem = f"{row['youtube_id']}_{int(float(row['time_start'])):06d}_{int(float(row['time_end'])):06d}"
    places = [folder / row.get("split", "") / row["label"], folder / row["label"], folder]
    for place in places:
        for ext in VIDEO_EXTENSIONS:
            if (place / f"{stem}{ext}").is_file():
                return place / f"{stem}{ext}"
    return places[0] / f"{stem}.mp4"  # missing: reported and skipped when read


def from_kinetics_csv(path: Path, split: str | None, classes: list[str] | None) -> tuple[Samples, list[str]]:
    """Kinetics CSV `label,youtube_id,time_start,time_end,split`; `split` keeps the rows of one split."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = {"label", "youtube_id", "time_start", "time_end"} - set(rows[0] if rows else {})
    if missing:
        raise DataError(f"{path}: CSV lacks columns {sorted(missing)} (Kinetics: label,youtube_id,time_start,"
                        f"time_end,split)")
    index = _class_index(classes, [r["label"] for r in rows], path)  # all splits: same labels everywhere
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    return [(_kinetics_file(path.parent, r), index[r["label"]]) for r in rows], list(index)


def find_samples(source: str | Path | Sequence[str | Path], split: str | None = None,
                 classes: list[str] | None = None) -> tuple[Samples, list[str]]:
    """Samples and class names of any supported source; a list of paths gets label -1 (prediction)."""
    if isinstance(source, (list, tuple)):
        return [(Path(p), -1) for p in source], list(classes or [])
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"dataset source not found: {path}")
    if path.is_dir():
        return from_folder(path, split, classes)
    if path.suffix.lower() == ".csv":
        return from_kinetics_csv(path, split, classes)
    return from_list_file(path, classes)
