"""Where the videos of a dataset are: folder-per-class, `relative/path label` list files, Kinetics CSV, path lists.

Every reader returns `(samples, classes)`: samples are `(path, label)` with labels indexing the class list.
Files are not opened here; a missing or broken file is found (and skipped) when it is read.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Sequence

from vivit.errors import DataError
from vivit.textfiles import read_text

log = logging.getLogger("vivit.data")

# Containers PyAV/ffmpeg read that people keep videos in (MPEG-TS from camcorders, 3GP from phones, ...).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".3gp", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                    ".m2ts", ".flv", ".wmv", ".ogv", ".gif")
SPLIT_FOLDERS = ("train", "val", "test")
NO_SPLIT = "none"  # spells split=None (the source as a whole) on the command line and in TOML (no null there)
NO_SPLIT_HINT = "for no split use --split none, or null/none in a config (data.train_split / data.val_split)"

Samples = list[tuple[Path, int]]


def parse_split(value: str | None) -> str | None:
    """A split name, or None for `none`, an empty name or None (the source as a whole); `--split`'s type too."""
    return None if value is None or value.strip().lower() in (NO_SPLIT, "") else value


def is_hidden(name: str) -> bool:
    """Dot-files and dot-folders (`.DS_Store`, AppleDouble `._clip.mp4`, `.cache/`) are never classes or videos."""
    return name.startswith(".")


def video_files(folder: Path) -> list[Path]:
    """The video files under `folder`, sub-folders included (recursively), sorted; hidden entries are skipped."""
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not is_hidden(name)]  # os.walk does not descend into these
        found += [Path(parent) / name for name in files
                  if not is_hidden(name) and Path(name).suffix.lower() in VIDEO_EXTENSIONS]
    return sorted(found)


def _class_index(classes: list[str] | None, inferred: list[str], source: Path) -> dict[str, int]:
    """Map class name -> label, from the forced class list when given (then unknown names are an error)."""
    order = list(classes) if classes is not None else sorted(set(inferred))
    unknown = sorted(set(inferred) - set(order))
    if unknown:
        raise DataError(f"{source}: classes {unknown[:5]} are not in the given class list ({len(order)} classes)")
    return {name: i for i, name in enumerate(order)}


def from_folder(root: Path, split: str | None, classes: list[str] | None) -> tuple[Samples, list[str]]:
    """`root/<class>/**/*.mp4`, or `root/<split>/<class>/**/*.mp4` when split folders exist (classes sorted).

    Videos in sub-folders of a class folder belong to that class; an empty class folder is warned about
    (it stays a class, so labels agree between splits), so are videos beside the class folders (no class)."""
    splits = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if splits:
        if split is None:
            raise DataError(f"{root} has split folders {splits}: choose one with split= (--split, data.train_split)")
        if split not in splits:
            raise DataError(f"{root}: split {split!r} not found, available: {splits}")
        root = root / split
    elif split is not None:
        raise DataError(f"{root} has no split folders ({', '.join(SPLIT_FOLDERS)}), got split={split!r}; "
                        f"{NO_SPLIT_HINT}")
    entries = [p for p in sorted(root.iterdir()) if not is_hidden(p.name)]
    folders = [p for p in entries if p.is_dir()]
    loose = [p for p in entries if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
    if loose and not folders:
        raise DataError(f"{root} holds videos but no class folders: put each class's videos in {root}/<class>/ "
                        f"(vivit predict takes a folder of videos)")
    if loose:
        log.warning("%d video file(s) directly in %s are in no class folder and are not used, e.g. %s",
                    len(loose), root, loose[0].name)
    index = _class_index(classes, [p.name for p in folders], root)
    samples: Samples = []
    for folder in folders:
        files = video_files(folder)
        if not files:
            log.warning("class folder %s holds no video files (%s)", folder, " ".join(VIDEO_EXTENSIONS))
        samples += [(f, index[folder.name]) for f in files]
    return samples, list(index)


def from_list_file(path: Path, classes: list[str] | None) -> tuple[Samples, list[str]]:
    """mmaction2-style lines `relative/path label` (label an int or a class name), paths relative to the file."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
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
    rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    columns = set(rows[0] if rows else {})
    missing = {"label", "youtube_id", "time_start", "time_end"} - columns
    if missing:
        raise DataError(f"{path}: CSV lacks columns {sorted(missing)} (Kinetics: label,youtube_id,time_start,"
                        f"time_end,split)")
    if split is not None and "split" not in columns:
        raise DataError(f"{path} has no 'split' column, got split={split!r}; {NO_SPLIT_HINT}")
    index = _class_index(classes, [r["label"] for r in rows], path)  # all splits: same labels everywhere
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    return [(_kinetics_file(path.parent, r), index[r["label"]]) for r in rows], list(index)


def find_samples(source: str | Path | Sequence[str | Path], split: str | None = None,
                 classes: list[str] | None = None) -> tuple[Samples, list[str]]:
    """Samples and class names of any supported source; a list of paths gets label -1 (prediction).
    `split=None` takes the source as a whole (a folder without split folders, every row of a CSV)."""
    if isinstance(source, (list, tuple)):
        return [(Path(p), -1) for p in source], list(classes or [])
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"dataset source not found: {path}")
    if path.is_dir():
        return from_folder(path, split, classes)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        raise DataError(f"{path} is a video file, not a dataset: give a folder with one sub-folder per class, "
                        f"a list file (.txt) or a Kinetics CSV (vivit predict takes single videos)")
    if path.suffix.lower() == ".csv":
        return from_kinetics_csv(path, split, classes)
    return from_list_file(path, classes)
