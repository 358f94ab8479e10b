"""`vivit check-data ROOT`: list the videos of a dataset that cannot be decoded, without training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from vivit.cli import print_json
from vivit.errors import failure_reason
from vivit.data.decode import DECODE_ERRORS, read_frames
from vivit.data.media import count_frames
from vivit.data.sources import SPLIT_FOLDERS, find_samples, parse_split


def check_video(path: str | Path, full: bool = True) -> str | None:
    """None when the video is usable, else the reason; `full` decodes every frame, else only the first.

    A full check also compares the frames that decode with those the file promises (its header or packets):
    a shortfall beyond 1 % (at least 2 frames, which edit lists and packed B-frames can account for) is a
    truncated or corrupt file.
    """
    try:
        if not full:
            read_frames(path, [0])
            return None
        decoded, promised = count_frames(path)
    except DECODE_ERRORS as e:
        return failure_reason(e)
    if decoded == 0:
        return "no frame could be decoded"
    if decoded < promised - max(2, promised // 100):
        return f"only {decoded} of {promised} frames decode (truncated or corrupt file)"
    return None


EVERY_SPLIT = "*"  # check-data's default: every split of a folder with split folders, else the source as a whole


def dataset_files(source: str | Path, split: str | None = EVERY_SPLIT) -> list[Path]:
    """Every video path of a source (`find_samples`): of one split, of the source as a whole (None, as for
    `vivit eval`: an error for a folder with split folders), or by default of every split it has."""
    root = Path(source)
    if split == EVERY_SPLIT:
        if root.is_dir() and any((root / s).is_dir() for s in SPLIT_FOLDERS):
            return [p for s in SPLIT_FOLDERS if (root / s).is_dir() for p, _ in find_samples(root, s)[0]]
        split = None
    return [p for p, _ in find_samples(root, split)[0]]


def check_dataset(source: str | Path, split: str | None = EVERY_SPLIT, full: bool = True,
                  progress: bool = False) -> tuple[int, list[tuple[Path, str]]]:
    """(number of videos checked, [(path, reason)] of the bad ones)."""
    files = dataset_files(source, split)
    bad = []
    for path in tqdm(files, desc="check-data", disable=not progress):
        reason = check_video(path, full)
        if reason is not None:
            bad.append((path, reason))
    return len(files), bad


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset: class-per-folder root, list file (.txt) or Kinetics CSV")
    parser.add_argument("--split", type=parse_split, default=EVERY_SPLIT,
                        help="only this split (train/val/test folder or CSV split value; `none`: the source as a "
                             "whole, as for `vivit eval`; default: every split)")
    parser.add_argument("--quick", action="store_true", help="open and decode the first frame only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    """Exit status 0 when every video decodes, 1 when some do not."""
    total, bad = check_dataset(args.root, args.split, full=not args.quick,
                               progress=not args.quiet and not args.json and sys.stderr.isatty())
    if args.json:
        print_json({"checked": total, "failed": [{"file": str(p), "reason": r} for p, r in bad]})
    else:
        for path, reason in bad:
            print(f"{path}: {reason}")
        print(f"{total - len(bad)} of {total} videos decode, {len(bad)} bad")
    return 1 if bad else 0
