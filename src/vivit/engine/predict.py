"""`vivit predict CKPT VIDEO...`: top-k class labels with probabilities for videos or folders of videos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from vivit.cli import add_model_option, display_width, ljust, model_and_rest, positive_int, print_json
from vivit.data.sources import VIDEO_EXTENSIONS, video_files
from vivit.engine.evaluate import add_inference_options, model_views, parse_views, score_views
from vivit.engine.inference import options as inference_options
from vivit.engine.metrics import top_actions
from vivit.errors import DataError


def expand_videos(inputs: list[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files as given, folders expanded to their video files (recursively, hidden files skipped, as datasets
    read class folders); a missing path or a folder without videos is listed as failed `{file, reason}`."""
    videos: list[Path] = []
    failed: list[dict[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = video_files(item)
            videos += found
            if not found:
                failed.append({"file": str(item), "reason": f"no video files ({' '.join(VIDEO_EXTENSIONS)})"})
        elif item.exists():
            videos.append(item)
        else:
            failed.append({"file": str(item), "reason": "not found"})
    return videos, failed


def decode_failure(path: Path) -> str:
    """Why a video the prediction skipped cannot be used (the reason `check-data` gives)."""
    from vivit.data.check import check_video

    return check_video(path) or "its clips could not be decoded"


def predict(checkpoint: str | Path, inputs: list[str | Path], *, top_k: int = 5, views: str | None = None,
            frame_stride: int | None = None, batch_size: int = 8, num_workers: int = 2, device: str = "auto",
            precision: str | None = None, quiet: bool = False, compile: bool = False,
            quantize: str | None = None) -> dict[str, Any]:
    """Softmax probabilities of the top-k classes per video (views' logits averaged); missing and unreadable
    files are listed as failed `{file, reason}`. `views` None: the model's (`model_views`); `frame_stride`
    None: its training stride; `precision` None: the training run's on CUDA, fp32 on CPU."""
    from vivit.engine.checkpoint import load_model

    loaded = load_model(checkpoint, quiet=quiet)
    clips_by_crops = parse_views(views or model_views(loaded.model))
    classes = loaded.classes
    videos, failed = expand_videos(inputs)
    indices: list[int] = []
    if videos:
        try:
            scores, _, found, _ = score_views(
                loaded, [str(v) for v in videos], views=clips_by_crops, frame_stride=frame_stride, batch_size=batch_size,
                num_workers=num_workers, device=device, precision=precision, quiet=quiet, desc="predict",
                compile=compile, quantize=quantize)
            indices = found.tolist()
        except DataError:  # every video failed to decode (each was named in a warning)
            pass
    results = []
    if indices and loaded.model.config.class_splits:
        rows = split_predictions(scores, classes, loaded.model.config.splits, top_k)
        results = [{"file": str(videos[i]), **row} for i, row in zip(indices, rows)]
    elif indices:
        top = scores.softmax(dim=-1).topk(min(top_k, len(classes)), dim=-1)
        results = [
            {"file": str(videos[i]), "predictions": [{"label": classes[c], "probability": round(float(p), 6)}
                                                     for p, c in zip(top.values[row], top.indices[row].tolist())]}
            for row, i in enumerate(indices)
        ]
    done = set(indices)
    failed += [{"file": str(v), "reason": decode_failure(v)} for i, v in enumerate(videos) if i not in done]
    return {"checkpoint": str(checkpoint), "results": results, "failed": failed}


def split_predictions(scores: torch.Tensor, classes: list[str], splits: dict[str, int], top_k: int) -> list[dict[str, Any]]:
    """A multi-head model's (N, sum K_i) logits -> per video the top-k of each split (its own softmax) and
    the top-k actions, one class per split with the product of their probabilities (as the official
    `model_utils.get_joint_logits_labels`): `{"splits": {name: [{label, probability}]}, "actions":
    [{"labels": {name: label}, "probability"}]}`; `classes` are the splits' names one after another."""
    probs = [z.softmax(dim=-1) for z in scores.float().split(list(splits.values()), dim=-1)]
    offsets = [sum(list(splits.values())[:i]) for i in range(len(splits))]
    joint, actions = top_actions(probs, top_k)
    rows = []
    for n in range(scores.shape[0]):
        per_split = {}
        for (name, size), p, start in zip(splits.items(), probs, offsets):
            top = p[n].topk(min(top_k, size))
            per_split[name] = [{"label": classes[start + c], "probability": round(float(v), 6)}
                               for v, c in zip(top.values, top.indices.tolist())]
        rows.append({"splits": per_split, "actions": [
            {"labels": {name: classes[start + c] for name, start, c in zip(splits, offsets, action)},
             "probability": round(float(v), 6)} for v, action in zip(joint[n], actions[n].tolist())]})
    return rows


def _prediction_text(r: dict[str, Any]) -> str:
    """`label prob%` for each top-k prediction; a multi-head model's actions (`noun/verb`), then each split's."""
    if "predictions" in r:
        return "  ".join(f"{p['label']} {100 * p['probability']:.1f}%" for p in r["predictions"])
    parts = ["actions: " + "  ".join(f"{'/'.join(a['labels'].values())} {100 * a['probability']:.1f}%"
                                     for a in r["actions"])]
    parts += [f"{name}: " + "  ".join(f"{p['label']} {100 * p['probability']:.1f}%" for p in top)
              for name, top in r["splits"].items()]
    return "  |  ".join(parts)


def format_table(result: dict[str, Any]) -> str:
    """One line per video: file, then `label prob%` for each of the top-k; failed files with the reason."""
    rows = [(r["file"], _prediction_text(r)) for r in result["results"]]
    rows += [(f["file"], f"(skipped: {f['reason']})") for f in result["failed"]]
    width = max((display_width(f) for f, _ in rows), default=4)  # terminal columns: wide CJK, no combining marks
    return "\n".join([f"{ljust('file', width)}  top predictions"] + [f"{ljust(f, width)}  {text}" for f, text in rows])


def configure(parser: argparse.ArgumentParser) -> None:
    from vivit.engine.timeline import add_timeline_arguments

    add_timeline_arguments(parser)
    parser.add_argument("checkpoint", nargs="?", metavar="MODEL", help="the model, when --model is not given")
    parser.add_argument("videos", nargs="+", help="video files or folders of videos (searched recursively)")
    add_model_option(parser)
    parser.add_argument("--top-k", type=positive_int, default=5)
    add_inference_options(parser)


def run(args: argparse.Namespace) -> int:
    from vivit.engine.timeline import check_timeline_options, run_timeline

    check_timeline_options(args)
    if args.timeline:
        return run_timeline(args)
    checkpoint, videos = model_and_rest(args.model, [args.checkpoint, *args.videos],
                                        usage="`vivit predict MODEL VIDEO...` or `vivit predict VIDEO... --model MODEL`")
    result = predict(checkpoint, videos, top_k=args.top_k, views=args.views, frame_stride=args.stride,
                     batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                     precision=args.precision, quiet=args.quiet, **inference_options(args))
    if args.json:
        print_json(result)
    else:
        print(format_table(result))
    return 0 if result["results"] else 1
