"""Synthetic motion videos whose class is the order of motions: unlearnable without temporal order.

Every video shows squares of random colour and size over a textured, noisy background of random colour. Each
square glides one way for the first half of the video and back the other way for the second half. With 2
classes one square moves `left-right` (left first, then right) or `right-left`; with 4 classes a second square
does the same vertically, and the class names both (`left-right+up-down`, ...). Motion wraps around the frame
edges (a torus) and start positions are uniform, so every single frame, at any time step, has the same
distribution for every class; so has the unordered set of frames, and even the unordered set of (position,
frame-to-frame motion) pairs: only the order of the motions tells the class. A model that pools over time
without modelling order (the average-pool baseline, even with 2-frame tubelets) scores at chance.
task="direction" is the easier variant: constant motion, class = direction (`left`, `right+up`, ...).
Train without horizontal flips (`AugmentConfig(flip=0.0)`): a mirrored video moves the other way, so a flip
would change its class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vivit.cli import print_json
from vivit.data.encode import write_video
from vivit.errors import ConfigError, VivitError
from vivit.outputs import output_folder

# zerolatency (no lookahead threads, no B-frames): the first encode of a process otherwise sometimes differs
X264_OPTIONS = {"crf": "12", "preset": "medium", "tune": "zerolatency"}
# task -> (horizontal mover names, vertical mover names); a class is one horizontal name, or "horizontal+vertical"
MOVERS = {"order": (["left-right", "right-left"], ["down-up", "up-down"]),
          "direction": (["left", "right"], ["down", "up"])}
TASKS = tuple(MOVERS)


def class_names(classes: int, task: str = "order") -> list[str]:
    """2 classes: one horizontal mover; 4: a horizontal and a vertical mover (sorted names)."""
    if task not in MOVERS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r}")
    if classes not in (2, 4):
        raise ConfigError(f"classes must be 2 or 4, got {classes}")
    horizontal, vertical = MOVERS[task]
    return list(horizontal) if classes == 2 else [f"{h}+{v}" for h in horizontal for v in vertical]


def _path(frames: int, task: str) -> np.ndarray:
    """Displacement in units of speed at each frame: straight on, or there and back (0, 1, .., middle, .., 1, 0)."""
    if task == "direction":
        return np.arange(frames, dtype=float)
    middle = (frames - 1) / 2
    return middle - np.abs(np.arange(frames) - middle)


def _coverage(position: np.ndarray, extent: float, length: int) -> np.ndarray:
    """(T, length) fraction of each pixel covered by the wrapped interval [p, p + extent) for each p in position."""
    offset = np.mod(np.arange(length) + 0.5 - position[:, None] + 1, length) - 1  # pixel centre - left edge
    return np.clip(np.minimum(offset + 0.5, extent) - np.maximum(offset - 0.5, 0), 0, 1)


def render(directions: list[tuple[int, int]], frames: int, size: int, rng: np.random.Generator,
           task: str = "order") -> np.ndarray:
    """uint8 video (T, size, size, 3) with one square per (dx, dy) unit direction (of the first half for `order`)."""
    background = rng.uniform(0.2, 0.8, 3)
    texture = background + rng.normal(0, 0.08, (size, size, 3))
    video = np.broadcast_to(texture, (frames, size, size, 3)).copy()
    path = _path(frames, task)
    for dx, dy in directions:
        side = rng.uniform(0.15, 0.25) * size
        speed = rng.uniform(1 / 16, 1 / 8) * size  # pixels per frame
        colour = np.mod(background + rng.uniform(0.3, 0.7, 3), 1.0)  # far from the background in every channel
        x = rng.uniform(0, size) + dx * speed * path
        y = rng.uniform(0, size) + dy * speed * path
        alpha = (_coverage(y, side, size)[:, :, None] * _coverage(x, side, size)[:, None, :])[..., None]
        video = video * (1 - alpha) + colour * alpha
    video += rng.normal(0, 0.03, video.shape)
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8)


def class_directions(name: str) -> list[tuple[int, int]]:
    """(First) directions: `left-right` or `left` -> [(-1, 0)]; `right-left+up-down` -> [(1, 0), (0, -1)] (y down)."""
    unit = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    return [unit[mover.split("-")[0]] for mover in name.split("+")]


def generate(out: str | Path, *, classes: int = 4, videos_per_class: int = 256, frames: int = 16, size: int = 32,
             seed: int = 0, val_fraction: float = 0.25, fps: float = 8, task: str = "order",
             overwrite: bool = False, progress: bool = False) -> Path:
    """Write H.264 mp4 files to `out/{train,val}/<class>/NNNNN.mp4`; the same seed gives the same videos.
    A non-empty `out` is refused unless `overwrite`, which removes the videos a previous synth wrote there
    (other files are kept), so two datasets are never mixed.

    task="order" (default): there-and-back motion, the class is the order of directions (order-free pooling is at
    chance); task="direction": constant motion, the class is its direction (easier; single frames are still at
    chance, but 2-frame tubelets see local motion, so the average-pool baseline can learn it).
    """
    names = class_names(classes, task)
    if not fps > 0:
        raise ConfigError(f"fps must be > 0 (frames per second of the written videos), got {fps}")
    if size < 8 or size % 2 or frames < 2 or videos_per_class < 2 or not 0 < val_fraction < 1:
        raise ConfigError(f"need an even size >= 8, frames >= 2, videos_per_class >= 2 and 0 < val_fraction < 1; "
                          f"got size={size}, frames={frames}, videos_per_class={videos_per_class}, "
                          f"val_fraction={val_fraction}")
    out = output_folder(out, "OUT")
    if any(out.iterdir()):
        if not overwrite:
            raise VivitError(f"OUT {out} is not empty: give a new or empty folder, or pass --overwrite to replace "
                             "the synthetic videos there")
        remove_synthetic(out)
    num_val = val_videos(videos_per_class, val_fraction)
    jobs = [(c, name, i) for c, name in enumerate(names) for i in range(videos_per_class)]
    for c, name, i in tqdm(jobs, desc="synth", disable=not progress):
        video = render(class_directions(name), frames, size, np.random.default_rng((seed, c, i)), task)
        split = "val" if i < num_val else "train"
        write_video(out / split / name / f"{i:05d}.mp4", video, fps=fps, options=X264_OPTIONS)
    return out


def val_videos(videos_per_class: int, val_fraction: float) -> int:
    """Videos of each class in val/ (the first ones of each class); the others go to train/."""
    return max(1, round(videos_per_class * val_fraction))


def remove_synthetic(out: Path) -> None:
    """Remove the videos `generate` writes (`{train,val}/<class>/NNNNN.mp4`) and the folders they leave empty."""
    for split in ("train", "val"):
        for video in (out / split).glob("*/[0-9][0-9][0-9][0-9][0-9].mp4"):
            video.unlink()
        folders = [p for p in (out / split).iterdir() if p.is_dir()] if (out / split).is_dir() else []
        for folder in [*folders, out / split]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (gets train/ and val/ sub-folders)")
    parser.add_argument("--classes", type=int, default=4, choices=(2, 4),
                        help="2: one square moving horizontally; 4: a horizontal and a vertical square (default)")
    parser.add_argument("--task", default="order", choices=TASKS,
                        help="order: there and back, class = order of directions (default); direction: straight on")
    parser.add_argument("--videos-per-class", type=int, default=256)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="height = width in pixels (even)")
    parser.add_argument("--fps", type=float, default=8)
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the synthetic videos in a non-empty OUT (other files there are kept)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    out = generate(args.out, classes=args.classes, videos_per_class=args.videos_per_class, frames=args.frames,
                   size=args.size, seed=args.seed, val_fraction=args.val_fraction, fps=args.fps, task=args.task,
                   overwrite=args.overwrite, progress=not args.quiet and not args.json and sys.stderr.isatty())
    per_class_val = val_videos(args.videos_per_class, args.val_fraction)  # the videos written, not all of OUT's
    counts = {"train": args.classes * (args.videos_per_class - per_class_val), "val": args.classes * per_class_val}
    if args.json:
        print_json({"out": str(out), "classes": class_names(args.classes, args.task), **counts})
    else:
        print(f"wrote {counts['train']} train and {counts['val']} val videos of {args.frames}x{args.size}x{args.size} "
              f"to {out} (classes: {', '.join(class_names(args.classes, args.task))})")
    return 0
