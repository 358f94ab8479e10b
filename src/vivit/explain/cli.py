"""`vivit explain VIDEO --model NAME|CKPT|FOLDER`: where in space and time the model looks in a video's centre
clip (preprocessed as in evaluation). Writes the overlaid clip, a PNG strip, a temporal-importance plot and the
raw map (.npy, and in explain.json with the predictions)."""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vivit.cli import add_model_option, model_and_rest, positive_int, print_json
from vivit.errors import ConfigError, DataError, VivitError, failure_reason
from vivit.explain.explainer import METHODS, ClipExplanation, explain_clip, split_ranges
from vivit.outputs import check_outputs, output_folder, remove_stale

VIDEO_FORMATS = ("mp4", "gif")  # of the overlay video
OUTPUT_NAMES = ("overlay.mp4", "overlay.gif", "strip.png", "temporal.png", "map.npy")  # each map's, maybe prefixed


def load_clip(loaded: Any, video: Path) -> tuple[torch.Tensor, list[int], float]:
    """The (1, C, T, H, W) centre clip as the model is evaluated on it (`vivit eval` with 1x1 views), its frame
    indices in the video and the clip's frame rate."""
    from vivit.data import build_dataset
    from vivit.data.decode import DECODE_ERRORS
    from vivit.data.media import probe
    from vivit.data.sampling import eval_clips
    from vivit.engine.evaluate import eval_preprocessing

    model, classes, train_config = loaded
    stride, augment = eval_preprocessing(train_config)
    if not video.is_file():
        raise FileNotFoundError(f"video not found: {video}")
    dataset = build_dataset([video], train=False, num_frames=model.config.num_frames, frame_stride=stride,
                            image_size=model.config.image_size[0], classes=classes, augment=augment)
    try:
        info = probe(video)
        clip = dataset.read(0)[0]
    except DECODE_ERRORS as e:
        raise DataError(f"cannot decode {video}: {failure_reason(e)}; `vivit check-data` tells more") from None
    indices = eval_clips(info.frames, model.config.num_frames, stride, 1)[0]
    return clip, indices.tolist(), info.fps / stride


def class_index(label: str, classes: list[str], model: Any) -> int:
    """The index of `label`, or of `SPLIT:LABEL` within that split (multi-head models whose splits share names)."""
    split, _, name = label.partition(":")
    r = split_ranges(model).get(split) if name else None
    if r is not None and name in classes[r.start:r.stop]:
        return r.start + classes[r.start:r.stop].index(name)
    if label not in classes:
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        raise ConfigError(f"--class {label!r} is not one of the model's {len(classes)} labels ({shown})")
    return classes.index(label)


def predictions(model: Any, logits: torch.Tensor, classes: list[str]) -> dict[str, dict[str, Any]]:
    """Per split: the top label and its probability (softmax within the split)."""
    result = {}
    for name, r in split_ranges(model).items():
        probs = logits[r.start:r.stop].float().softmax(dim=0)
        top = int(probs.argmax())
        result[name] = {"label": classes[r.start + top], "probability": round(float(probs[top]), 6)}
    return result


def write_outputs(out: Path, explained: ClipExplanation, frames: np.ndarray, model: Any, classes: list[str], *,
                  fps: float, video_format: str, strip_frames: int) -> list[dict[str, Any]]:
    """Files for each map (prefixed by split and label when there are several); their JSON entries."""
    from vivit.explain.render import frame_strip, overlay, temporal_plot, upsample, write_overlay  # matplotlib

    cfg = model.config
    entries, ranges = [], split_ranges(model)
    for i, token_map in enumerate(explained.maps):
        target = explained.targets[i] if explained.targets else None
        split = next((n for n, r in ranges.items() if target in r), None)
        label = classes[target] if target is not None else None
        prefix = re.sub(r"[^\w.+-]+", "_", f"{split}-{label}-") if len(explained.maps) > 1 else ""
        heat = upsample(token_map, cfg.tubelet, frames.shape[1:3])
        importance = token_map.sum(dim=(1, 2)).numpy()
        what = f"relevance for {label!r}" if label is not None else "attention rollout"
        files = {
            "video": write_overlay(out / f"{prefix}overlay.{video_format}", overlay(frames, heat), fps),
            "strip": frame_strip(out / f"{prefix}strip.png", frames, heat, strip_frames, f"{cfg.variant}: {what}"),
            "temporal": temporal_plot(out / f"{prefix}temporal.png", importance, cfg.tubelet[0],
                                      f"temporal importance ({what})"),
            "map": out / f"{prefix}map.npy",
        }
        np.save(files["map"], token_map.numpy())
        entries.append({"split": split, "class": label, "files": {k: str(v) for k, v in files.items()},
                        "frame_importance": [round(float(x), 6) for x in importance],
                        "map": np.round(token_map.numpy(), 7).tolist()})
    return entries


def claim_output(out: str | Path | None, video: Path, overwrite: bool) -> tuple[Path, list[Path]]:
    """The output folder (default explain-<video name>) and the files a previous explain wrote there, refused
    unless `overwrite`; the default folder of another video of the same name is refused even then."""
    folder = output_folder(out if out is not None else f"explain-{video.stem}")
    if out is None and (folder / "explain.json").is_file():
        try:
            before = str(json.loads((folder / "explain.json").read_text(encoding="utf-8"))["video"])
        except (ValueError, KeyError, TypeError):
            before = "an unreadable explain.json"
        if Path(before).resolve() != video.resolve():
            raise VivitError(f"{folder} holds the explanation of another video named {video.name} ({before}); "
                             f"give --out for {video}")
    previous = [folder / "explain.json", *(p for name in OUTPUT_NAMES
                                          for p in (folder / name, *sorted(folder.glob(f"*-{name}"))))]
    return folder, check_outputs(previous, overwrite, hint=", or give another --out")


def peak_rss_mib() -> float:
    """This process's peak resident memory (getrusage: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def explain_video(model_path: str, video: str | Path, *, method: str = "rollout", label: str | None = None,
                  out: str | Path | None = None, video_format: str = "mp4", strip_frames: int = 8,
                  device: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Explain a video's centre clip; writes the pictures and explain.json to `out` (a previous explanation
    there is replaced only with `overwrite`) and returns its content."""
    from vivit.engine.build import resolve_device
    from vivit.engine.checkpoint import load_model
    from vivit.engine.evaluate import eval_preprocessing
    from vivit.explain.render import clip_pixels

    start = time.perf_counter()
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not allowed; choose one of {list(METHODS)}")
    if label is not None and method != "relevance":
        raise ConfigError("--class needs --method relevance: attention rollout does not depend on the class")
    if video_format not in VIDEO_FORMATS:
        raise ConfigError(f"--format {video_format!r} is not allowed; choose one of {list(VIDEO_FORMATS)}")
    video = Path(video)
    loaded = load_model(model_path)
    clip, indices, fps = load_clip(loaded, video)
    dev = resolve_device(device)
    targets = None if label is None else [class_index(label, loaded.classes, loaded.model)]
    out, previous = claim_output(out, video, overwrite)
    explained = explain_clip(loaded.model.to(dev), clip.to(dev), method, targets)
    explained = ClipExplanation(explained.logits.cpu(), [m.cpu() for m in explained.maps], explained.targets)
    cfg = loaded.model.config
    frames = clip_pixels(clip[0], eval_preprocessing(loaded.train_config)[1].normalization)
    result = {"video": str(video), "model": str(model_path), "method": method, "variant": cfg.variant,
              "classifier": cfg.classifier, "grid": list(explained.maps[0].shape), "tubelet": list(cfg.tubelet),
              "frame_indices": indices, "predictions": predictions(loaded.model, explained.logits, loaded.classes),
              "explanations": write_outputs(out, explained, frames, loaded.model, loaded.classes, fps=fps,
                                            video_format=video_format, strip_frames=strip_frames),
              "seconds": round(time.perf_counter() - start, 2),
              "peak_rss_mib": round(peak_rss_mib(), 1)}
    (out / "explain.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    remove_stale(previous, [out / "explain.json", *(Path(f) for e in result["explanations"] for f in e["files"].values())])
    return result


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="VIDEO", help="the video whose centre clip is explained "
                                                                  "(MODEL VIDEO without --model)")
    add_model_option(parser)
    parser.add_argument("--method", default="rollout", choices=METHODS,
                        help="rollout: attention rollout (any class); relevance: gradient-weighted attention for a class")
    parser.add_argument("--class", dest="label", help="label to explain with --method relevance, or SPLIT:LABEL "
                                                      "(default: the predicted class of each split)")
    parser.add_argument("--out", help="output folder (default: explain-<video name>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous explanation in --out")
    parser.add_argument("--format", dest="video_format", default="mp4", choices=VIDEO_FORMATS,
                        help="overlaid clip as MP4 (H.264) or GIF")
    parser.add_argument("--frames", type=positive_int, default=8, help="frames in the PNG strip (default 8)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", action="store_true", help="print explain.json")


def run(args: argparse.Namespace) -> int:
    model, (video,) = model_and_rest(args.model, args.paths, "`vivit explain VIDEO --model MODEL`", rest=1)
    result = explain_video(model, video, method=args.method, label=args.label, out=args.out,
                           video_format=args.video_format, strip_frames=args.frames, device=args.device,
                           overwrite=args.overwrite)
    if args.json:
        print_json(result)
        return 0
    for split, p in result["predictions"].items():
        print(f"{split}: {p['label']} {100 * p['probability']:.1f}%")
    out = Path(result["explanations"][0]["files"]["map"]).parent
    print(f"wrote {len(result['explanations'])} {result['method']} map(s) to {out} "
          f"({result['seconds']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB)")
    return 0
