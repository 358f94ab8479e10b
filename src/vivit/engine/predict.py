"""`vivit predict CKPT VIDEO...`: top-k class labels with probabilities for videos or folders of videos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


from vivit.cli import positive_int
from vivit.engine.evaluate import parse_views, score_views
from vivit.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".gif")


def expand_videos(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders expanded (recursively, sorted) to the video files they hold."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos += sorted(p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        elif item.exists():
            videos.append(item)
        else:
            raise FileNotFoundError(f"video not found: {item}")
    if not videos:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return videos


def predict(checkpoint: str | Path, inputs: list[str | Path], *, top_k: int = 5, views: str = "1x1",
            batch_size: int = 8, num_workers: int = 0, device: str = "auto", quiet: bool = False) -> dict[str, Any]:
    """Softmax probabilities of the top-k classes per video (views' logits averaged); unreadable files are listed."""
    from vivit.engine.checkpoint import load_model

    clips_by_crops = parse_views(views)
    loaded = load_model(checkpoint)
    classes = loaded.classes
    videos = expand_videos(inputs)
    try:
        scores, _, indices, _ = score_views(loaded, [str(v) for v in videos], views=clips_by_crops, batch_size=batch_size,
                                            num_workers=num_workers, device=device, quiet=quiet, desc="predict")
    except DataError:  # every input failed to decode (each was named in a warning): list them all as failed
        return {"checkpoint": str(checkpoint), "results": [], "failed": [str(v) for v in videos]}
    probs = scores.softmax(dim=-1)
    k = min(top_k, len(classes))
    top = probs.topk(k, dim=-1)
    done = set(indices.tolist())
    results = [
        {"file": str(videos[i]), "predictions": [{"label": classes[c], "probability": round(float(p), 6)}
                                                 for p, c in zip(top.values[row], top.indices[row].tolist())]}
        for row, i in enumerate(indices.tolist())
    ]
    failed = [str(v) for i, v in enumerate(videos) if i not in done]
    return {"checkpoint": str(checkpoint), "results": results, "failed": failed}


def format_table(result: dict[str, Any]) -> str:
    """One line per video: file, then `label prob%` for each of the top-k."""
    rows = [(r["file"], "  ".join(f"{p['label']} {100 * p['probability']:.1f}%" for p in r["predictions"]))
            for r in result["results"]]
    width = max((len(f) for f, _ in rows), default=4)
    lines = [f"{'file':<{width}}  top predictions"] + [f"{f:<{width}}  {preds}" for f, preds in rows]
    lines += [f"{f:<{width}}  (unreadable, skipped)" for f in result["failed"]]
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="training checkpoint (.pt) or pretrained folder")
    parser.add_argument("videos", nargs="+", help="video files or folders of videos")
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument("--views", default="1x1", help="CLIPSxCROPS views averaged per video (default 1x1)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    result = predict(args.checkpoint, args.videos, top_k=args.top_k, views=args.views, batch_size=args.batch_size,
                     num_workers=args.workers, device=args.device, quiet=args.quiet)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0 if result["results"] else 1
