"""`vivit predict VIDEO --timeline`: class probabilities along a whole video, clip by clip.

Windows are the model's clips (`num_frames` frames every `frame_stride`, the training run's) starting every
`--window-stride` seconds (default: one clip's duration, so windows tile the video), rounded to whole frame
strides. The video is decoded once, front to back (`vivit.data.decode.iter_frames_yuv`, at the size the
dataset decodes at); a ring buffer holds the frames of the windows not yet complete, each window goes through
the eval transform (centre crop) as a dataset's clip would, and windows are batched through the model while the
next ones decode. Memory is the buffer, one batch and the per-window probabilities: flat in video length.
Rows are `start, end` (seconds) and the top-k labels with probabilities (per split for multi-head models),
optionally smoothed by a moving average over windows; written as CSV, JSON and a PNG of the top classes.
"""

from __future__ import annotations

import argparse
import csv
import json
import queue
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from vivit.cli import model_and_rest, positive_int, print_json
from vivit.data.decode import YuvFrames, iter_frames_yuv, probe
from vivit.data.sampling import clip_indices, clip_span
from vivit.data.transforms import eval_transform
from vivit.engine.atomic import atomic_write
from vivit.engine.build import autocast, resolve_device
from vivit.engine.logging import progress
from vivit.errors import ConfigError
from vivit.outputs import check_outputs, output_folder


def window_starts(frames: int, num_frames: int, frame_stride: int, hop: int) -> list[int]:
    """First frame of each window: 0, hop, 2 hop, ... while a whole clip fits (one window for a short video)."""
    return list(range(0, max(frames - clip_span(num_frames, frame_stride), 0) + 1, hop))


def hop_frames(hop_seconds: float | None, fps: float, num_frames: int, frame_stride: int) -> int:
    """Window hop in frames: `hop_seconds` rounded to whole frame strides (at least one), default one clip."""
    if hop_seconds is None:
        return num_frames * frame_stride
    if hop_seconds <= 0:
        raise ConfigError(f"--window-stride must be > 0 seconds, got {hop_seconds}")
    return frame_stride * max(1, round(hop_seconds * fps / frame_stride))


def clips(video: str | Path, starts: list[int], frames: int, *, num_frames: int, frame_stride: int, image_size: int,
          short_side: int, normalization: Any) -> Iterator[torch.Tensor]:
    """(C, T, S, S) model input of each window, from one sequential decode through a ring buffer of frames."""
    windows = [clip_indices(frames, num_frames, frame_stride, s) for s in starts]
    step = frame_stride if all(int(i) % frame_stride == 0 for w in windows for i in w) else 1
    buffer: dict[int, YuvFrames] = {}
    done = 0
    for index, frame in iter_frames_yuv(video, size=short_side, upscale=False, min_shrink=2.0, step=step):
        buffer[index] = frame
        while done < len(windows) and int(windows[done].max()) <= index:  # a short video's clip loops back
            first = buffer[int(windows[done][0])]
            data = np.concatenate([buffer[int(i)].data for i in windows[done]])
            yield eval_transform(replace(first, data=data), image_size, 1, normalization, short_side)[0]
            done += 1
            keep = int(windows[done].min()) if done < len(windows) else index + 1
            for old in [i for i in buffer if i < keep]:
                del buffer[old]


def prefetch(items: Iterator[Any], size: int) -> Iterator[Any]:
    """`items` produced by a background thread, at most `size` ahead (decoding overlaps the model)."""
    slots: queue.Queue = queue.Queue(maxsize=size)
    end = object()

    def produce() -> None:
        try:
            for item in items:
                slots.put(item)
            slots.put(end)
        except BaseException as e:  # handed to the consumer, which raises it
            slots.put(e)

    threading.Thread(target=produce, daemon=True).start()
    while (item := slots.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item


def smooth(probs: torch.Tensor, windows: int) -> torch.Tensor:
    """Centred moving average over `windows` rows of (N, K) probabilities (fewer at the ends)."""
    if windows <= 1:
        return probs
    kernel = torch.ones(1, 1, windows, dtype=probs.dtype)
    pad = (windows // 2, windows - 1 - windows // 2)
    total = torch.nn.functional.conv1d(torch.nn.functional.pad(probs.T[:, None], pad), kernel)[:, 0]
    count = torch.nn.functional.conv1d(torch.nn.functional.pad(torch.ones(1, 1, len(probs), dtype=probs.dtype), pad),
                                       kernel)[0]
    return (total / count).T


def splits_of(model: Any, classes: list[str]) -> dict[str, list[str]]:
    """Split name -> its class names (one split "class" for a single head)."""
    sizes = model.config.splits if getattr(model.config, "class_splits", None) else {"class": len(classes)}
    out, start = {}, 0
    for name, size in sizes.items():
        out[name], start = classes[start:start + size], start + size
    return out


def timeline(checkpoint: str | Path, video: str | Path, *, window_stride: float | None = None,
             frame_stride: int | None = None, top_k: int = 5, smoothing: int = 1, batch_size: int = 8,
             device: str = "auto", precision: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Rows `{start, end, predictions}` along `video`; `predictions` a top-k list of `{label, probability}`
    (a multi-head model: `{split: list}`). `probs`: each split's (windows, classes) probabilities."""
    from vivit.engine.checkpoint import load_model
    from vivit.engine.evaluate import eval_preprocessing, inference_precision

    model, classes, train_config = load_model(checkpoint)
    stride, augment = eval_preprocessing(train_config)
    stride = frame_stride or stride
    cfg, info = model.config, probe(video)
    starts = window_starts(info.frames, cfg.num_frames, stride, hop_frames(window_stride, info.fps, cfg.num_frames, stride))
    dev = resolve_device(device)
    precision = precision or inference_precision(train_config, dev)
    model.to(dev).eval()
    inputs = prefetch(clips(video, starts, info.frames, num_frames=cfg.num_frames, frame_stride=stride,
                            image_size=cfg.image_size[0], short_side=augment.resize_to(cfg.image_size[0]),
                            normalization=augment.normalization), batch_size)
    logits, batch, filled = [], None, 0

    def run_batch() -> None:
        with torch.no_grad(), autocast(dev, precision):
            logits.append(model(batch[:filled].to(dev)).float().cpu())

    for clip in progress(inputs, desc="timeline", total=len(starts), unit="window", quiet=quiet):
        if batch is None:  # filled in place: a batch is never held twice
            batch = torch.empty(min(batch_size, len(starts)), *clip.shape)
        batch[filled], filled = clip, filled + 1
        if filled == len(batch):
            run_batch()
            filled = 0
    if filled:
        run_batch()
    scores = torch.cat(logits)
    splits, probs, offset = splits_of(model, classes), {}, 0
    for name, names in splits.items():
        probs[name] = smooth(scores[:, offset:offset + len(names)].softmax(dim=-1), smoothing)
        offset += len(names)
    rows = []
    for n, s in enumerate(starts):
        end = min(s + clip_span(cfg.num_frames, stride), info.frames) / info.fps
        tops = {name: [{"label": splits[name][c], "probability": round(float(p), 6)}
                       for p, c in zip(*probs[name][n].topk(min(top_k, len(splits[name]))))]
                for name in splits}
        rows.append({"start": round(s / info.fps, 3), "end": round(end, 3),
                     "predictions": tops["class"] if list(tops) == ["class"] else tops})
    return {"checkpoint": str(checkpoint), "video": str(video), "fps": info.fps, "frames": info.frames,
            "window_frames": cfg.num_frames, "frame_stride": stride, "smoothing": smoothing, "rows": rows,
            "classes": splits, "probs": probs}


def without_probs(result: dict[str, Any]) -> dict[str, Any]:
    """The result without the full per-window probabilities (`probs`, tensors: the PNG's data)."""
    return {k: v for k, v in result.items() if k != "probs"}


def write_csv(result: dict[str, Any], path: Path) -> None:
    """start, end, then label_i / probability_i for each of the top-k (prefixed `split:` per split)."""
    def flat(row: dict[str, Any]) -> dict[str, Any]:
        preds = row["predictions"] if isinstance(row["predictions"], dict) else {"": row["predictions"]}
        out = {"start": row["start"], "end": row["end"]}
        for split, top in preds.items():
            for i, p in enumerate(top, 1):
                out[f"{split + ':' if split else ''}label_{i}"] = p["label"]
                out[f"{split + ':' if split else ''}probability_{i}"] = p["probability"]
        return out

    rows = [flat(r) for r in result["rows"]]
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(result: dict[str, Any], path: Path, classes_shown: int = 5) -> Path:
    """Probability over time of the classes that peak highest, one panel per split."""
    from vivit.engine.plots import _save, plt

    mid = [(r["start"] + r["end"]) / 2 for r in result["rows"]]
    scale, unit = (60, "min") if mid and mid[-1] > 600 else (1, "s")
    fig, axes = plt.subplots(len(result["probs"]), 1, figsize=(8, 2.6 * len(result["probs"])), squeeze=False)
    for ax, (split, p) in zip(axes[:, 0], result["probs"].items()):
        for c in p.amax(dim=0).topk(min(classes_shown, p.shape[1])).indices.tolist():
            ax.plot([m / scale for m in mid], p[:, c], label=result["classes"][split][c], lw=1.5)
        ax.set(ylim=(0, 1), ylabel="probability", title=Path(result["video"]).name + ("" if split == "class" else f" ({split})"))
        ax.legend(loc="upper right", fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(f"time ({unit})")
    return _save(fig, path)


def add_timeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeline", action="store_true", help="top-k along one whole video, window by window")
    parser.add_argument("--window-stride", type=float, default=None, metavar="SECONDS",
                        help="--timeline: seconds between window starts (default: one clip's duration)")
    parser.add_argument("--smooth", type=positive_int, default=None, metavar="WINDOWS",
                        help="--timeline: moving average of probabilities over this many windows (default 1: none)")
    parser.add_argument("--timeline-out", default=None, metavar="DIR",
                        help="--timeline: write <video>.timeline.csv / .json / .png there")
    parser.add_argument("--overwrite", action="store_true", help="--timeline-out: replace a previous <video>.timeline.*")


TIMELINE_ONLY = ("window_stride", "smooth", "timeline_out")  # options that mean nothing without --timeline


def check_timeline_options(args: argparse.Namespace) -> None:
    """A --timeline option given without --timeline is an error, not silently ignored."""
    given = [f"--{name.replace('_', '-')}" for name in TIMELINE_ONLY if getattr(args, name) is not None]
    if given and not args.timeline:
        raise ConfigError(f"{', '.join(given)} only apply to --timeline: add --timeline (one video) or drop them")


def run_timeline(args: argparse.Namespace) -> int:
    usage = "`vivit predict MODEL VIDEO --timeline` or `vivit predict VIDEO --timeline --model MODEL`"
    if args.model is None and args.checkpoint is None:
        raise ConfigError(f"no model given: {usage}")
    checkpoint, videos = model_and_rest(args.model, [args.checkpoint, *args.videos], usage=usage)
    if len(videos) != 1:
        raise ConfigError(f"--timeline takes one video file, got {len(videos)}: {' '.join(map(str, videos))}")
    if not Path(videos[0]).exists():
        raise FileNotFoundError(f"video not found: {videos[0]}")
    if not Path(videos[0]).is_file():
        raise ConfigError(f"--timeline takes one video file, got the folder {videos[0]}")
    if args.timeline_out is not None:
        stem = output_folder(args.timeline_out, "--timeline-out") / f"{Path(videos[0]).name}.timeline"
        check_outputs([stem.with_name(stem.name + ext) for ext in (".csv", ".json", ".png")], args.overwrite,
                      hint=", or give another --timeline-out")
    result = timeline(checkpoint, videos[0], window_stride=args.window_stride, frame_stride=getattr(args, "stride", None),
                      top_k=args.top_k, smoothing=args.smooth or 1, batch_size=args.batch_size, device=args.device,
                      precision=args.precision, quiet=args.quiet)
    if args.timeline_out is not None:
        write_csv(result, stem.with_name(stem.name + ".csv"))
        with atomic_write(stem.with_name(stem.name + ".json")) as tmp:
            tmp.write_text(json.dumps(without_probs(result), indent=2))
        plot(result, stem.with_name(stem.name + ".png"))
    if args.json:
        print_json(without_probs(result))
    else:
        for row in result["rows"]:
            preds = row["predictions"] if isinstance(row["predictions"], dict) else {"": row["predictions"]}
            text = "  |  ".join((f"{s}: " if s else "") + "  ".join(f"{p['label']} {100 * p['probability']:.1f}%" for p in top)
                                for s, top in preds.items())
            print(f"{row['start']:9.2f}-{row['end']:9.2f}s  {text}")
    return 0
