"""Where the videos of a dataset are: folder-per-class, `relative/path label` list files, Kinetics CSV, path lists.

Every reader returns `(samples, classes)`: samples are `(path, label)` with labels indexing the class list.
Files are not opened here; a missing or broken file is found (and skipped) when it is read.

Multi-head models (`class_splits`, e.g. Epic-Kitchens nouns and verbs) need one label per split, which a
folder per class cannot express: list files `relative/path noun verb` (one label per split, in split order)
or a CSV `path,noun,verb` (a column per split name, optional `split`). Their labels are tuples with one
index per split, and `classes` is the splits' class names one after another (300 nouns, then 97 verbs).
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

Samples = list[tuple[Path, int | tuple[int, ...]]]
Splits = dict[str, int]  # multi-head: split name -> number of classes, in logit order (ViViTConfig.splits)


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


def _class_index(classes: list[str] | None, inferred: list[str], source: str | Path) -> dict[str, int]:
    """Map class name -> label, from the forced class list when given (then unknown names are an error)."""
    order = list(classes) if classes is not None else sorted(set(inferred))
    unknown = sorted(set(inferred) - set(order))
    if unknown:
        raise DataError(f"{source}: classes {unknown[:5]} are not in the given class list ({len(order)} classes)")
    return {name: i for i, name in enumerate(order)}


def _labels_of(column: list[str], names: list[str] | None, where: str | Path, size: int | None = None) -> tuple[list[int], list[str]]:
    """One column of labels (all integers, or all class names) -> label indices and the class names;
    `names` forces the class list, `size` the number of classes (integers then name themselves)."""
    if all(label.lstrip("-").isdigit() for label in column):
        labels = [int(label) for label in column]
        names = names or [str(i) for i in range(size if size is not None else max(labels, default=-1) + 1)]
        bad = [k for k in labels if not 0 <= k < len(names)]
        if bad:
            raise DataError(f"{where}: label {bad[0]} outside 0..{len(names) - 1}")
        return labels, list(names)
    index = _class_index(names, column, where)
    if size is not None and len(index) != size:
        raise DataError(f"{where}: {len(index)} class names where the split has {size} classes; "
                        f"give integer labels 0..{size - 1} instead")
    return [index[label] for label in column], list(index)


def _split_labels(columns: list[list[str]], classes: list[str] | None, splits: Splits,
                  where: Path) -> tuple[list[tuple[int, ...]], list[str]]:
    """One label column per split -> per-sample label tuples and the splits' class names concatenated."""
    if classes is not None and len(classes) != sum(splits.values()):
        raise DataError(f"{where}: {len(classes)} class names for class_splits {list(splits.values())}")
    per_split, names, start = [], [], 0
    for (name, size), column in zip(splits.items(), columns):
        forced = None if classes is None else classes[start:start + size]
        labels, split_names = _labels_of(column, forced, f"{where} ({name})", size)
        per_split.append(labels)
        names += split_names
        start += size
    return list(zip(*per_split)), names


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


def from_list_file(path: Path, classes: list[str] | None, splits: Splits | None = None) -> tuple[Samples, list[str]]:
    """mmaction2-style lines `relative/path label` (label an int or a class name), paths relative to the file;
    with `splits`, `relative/path label1 label2 ...`, one label per split in split order."""
    n = len(splits) if splits else 1
    expected = "relative/path " + (" ".join(splits) if splits else "label")
    paths, columns = [], [[] for _ in range(n)]
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rsplit(maxsplit=n)
        if len(parts) != n + 1:
            raise DataError(f"{path}:{number}: expected {expected!r}, got {line!r}")
        paths.append(path.parent / parts[0])
        for column, label in zip(columns, parts[1:]):
            column.append(label)
    if splits:
        labels, names = _split_labels(columns, classes, splits, path)
        return list(zip(paths, labels)), names
    single, names = _labels_of(columns[0], classes, path)
    return list(zip(paths, single)), names


def _read_csv(path: Path, split: str | None, required: list[str], layout: str) -> list[dict[str, str]]:
    """The rows of a CSV that has the `required` columns (missing ones are reported in that order, then
    `layout`), and a `split` column when a split is asked for."""
    rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    columns = set(rows[0] if rows else {})
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: CSV lacks columns {missing}{layout}")
    if split is not None and "split" not in columns:
        raise DataError(f"{path} has no 'split' column, got split={split!r}; {NO_SPLIT_HINT}")
    return rows


def from_split_csv(path: Path, split: str | None, classes: list[str] | None, splits: Splits) -> tuple[Samples, list[str]]:
    """A multi-head CSV: a `path` column (relative to the CSV), one column per split name, optional `split`."""
    rows = _read_csv(path, split, ["path", *splits], f"; a multi-head CSV has path,{','.join(splits)}[,split]")
    labels, names = _split_labels([[r[name] for r in rows] for name in splits], classes, splits, path)
    keep = [i for i, r in enumerate(rows) if split is None or r.get("split") == split]
    return [(path.parent / rows[i]["path"], labels[i]) for i in keep], names


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
    rows = _read_csv(path, split, ["label", "time_end", "time_start", "youtube_id"],  # sorted, as reported
                     " (Kinetics: label,youtube_id,time_start,time_end,split)")
    index = _class_index(classes, [r["label"] for r in rows], path)  # all splits: same labels everywhere
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    return [(_kinetics_file(path.parent, r), index[r["label"]]) for r in rows], list(index)


def find_samples(source: str | Path | Sequence[str | Path], split: str | None = None,
                 classes: list[str] | None = None, splits: Splits | None = None) -> tuple[Samples, list[str]]:
    """Samples and class names of any supported source; a list of paths gets label -1 (prediction).
    `split=None` takes the source as a whole (a folder without split folders, every row of a CSV);
    `splits` (a multi-head model's) reads one label per split from list files and CSVs."""
    if isinstance(source, (list, tuple)):
        return [(Path(p), -1) for p in source], list(classes or [])
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"dataset source not found: {path}")
    if path.is_dir():
        if splits:
            raise DataError(f"{path}: a folder per class gives one label per video, a multi-head model needs one per "
                            f"split ({', '.join(splits)}): use a list file 'relative/path {' '.join(splits)}' or a CSV "
                            f"with columns path,{','.join(splits)}")
        return from_folder(path, split, classes)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        raise DataError(f"{path} is a video file, not a dataset: give a folder with one sub-folder per class, "
                        f"a list file (.txt) or a Kinetics CSV (vivit predict takes single videos)")
    if path.suffix.lower() == ".csv":
        return from_split_csv(path, split, classes, splits) if splits else from_kinetics_csv(path, split, classes)
    return from_list_file(path, classes, splits)
