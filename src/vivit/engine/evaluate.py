"""Multi-view evaluation (paper Sec. 4.1: 4 temporal clips x 3 spatial crops, logits averaged) and the
`vivit eval` command: top-1/top-5, mean class and per-class accuracy, confusion matrix PNG, JSON report."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vivit.cli import add_model_option, model_and_rest, non_negative_int, positive_int, print_json
from vivit.data.sources import parse_split
from vivit.engine import distributed as dist
from vivit.engine.atomic import atomic_write
from vivit.engine.build import AUTOCAST_DTYPES, autocast, resolve_device, resolve_precision
from vivit.engine.inference import add_options as add_prepare_options
from vivit.engine.inference import options as inference_options
from vivit.engine.logging import progress
from vivit.engine.metrics import (AGGREGATIONS, TOP5_MIN_CLASSES, ClassificationReport, MultiHeadReport,
                                  aggregate_views)
from vivit.errors import ConfigError, DataError
from vivit.model.vivit import unwrap_model
from vivit.outputs import check_outputs, output_folder, remove_stale


@torch.no_grad()
def collect_scores(model: nn.Module, loader: Any, *, device: torch.device, precision: str = "fp32",
                   aggregation: str = "logits", quiet: bool = True, desc: str = "eval") -> tuple[torch.Tensor, ...]:
    """Aggregated (N, K) scores, labels, dataset indices and the skipped-file count, gathered over
    ranks and ordered by index (a DistributedSampler's padding duplicates are dropped)."""
    model.eval()
    config = unwrap_model(model).config
    scores, labels, indices, skipped = [], [], [], 0
    for batch in progress(loader, desc=desc, total=len(loader), unit="batch", quiet=quiet or not dist.is_main()):
        skipped += batch.skipped
        if len(batch.labels) == 0:
            continue
        videos = batch.videos.to(device, non_blocking=True)
        if videos.ndim == 5:  # a single view without the V axis
            videos = videos[:, None]
        b, v = videos.shape[:2]
        with autocast(device, precision):
            logits = model(videos.flatten(0, 1))
        scores.append(aggregate_views(logits.reshape(b, v, -1), aggregation, config.class_splits))
        labels.append(batch.labels.to(device))
        indices.append(batch.indices.to(device))
    label_shape = (0, len(config.class_splits)) if config.class_splits else (0,)  # multi-head: a label per split
    scores_t = torch.cat(scores) if scores else torch.empty(0, config.num_classes, device=device)
    labels_t = torch.cat(labels) if labels else torch.empty(label_shape, dtype=torch.long, device=device)
    indices_t = torch.cat(indices) if indices else torch.empty(0, dtype=torch.long, device=device)
    scores_t, labels_t, indices_t = (dist.all_gather_cat(t) for t in (scores_t, labels_t, indices_t))
    (skipped,) = dist.all_reduce_sum([skipped], device)
    order = torch.argsort(indices_t, stable=True)
    scores_t, labels_t, indices_t = scores_t[order], labels_t[order], indices_t[order]
    first = torch.ones_like(indices_t, dtype=torch.bool)
    first[1:] = indices_t[1:] != indices_t[:-1]
    return scores_t[first].cpu(), labels_t[first].cpu(), indices_t[first].cpu(), int(skipped)


def evaluate_loader(model: nn.Module, loader: Any, *, device: torch.device, num_classes: int, precision: str = "fp32",
                    aggregation: str = "logits", quiet: bool = True,
                    desc: str = "eval") -> tuple[ClassificationReport | MultiHeadReport, bool]:
    """The report of `collect_scores` (a `MultiHeadReport` for a multi-head model), and whether every score
    was finite (NaN/inf logits still have an arg-max)."""
    scores, labels, _, _ = collect_scores(model, loader, device=device, precision=precision,
                                          aggregation=aggregation, quiet=quiet, desc=desc)
    if len(labels) == 0:
        raise DataError("no validation video could be decoded")
    report = classification_report(scores, labels, num_classes, unwrap_model(model).config, aggregation)
    return report, bool(torch.isfinite(scores).all())


def classification_report(scores: torch.Tensor, labels: torch.Tensor, num_classes: int, config: Any,
                          aggregation: str = "logits") -> ClassificationReport | MultiHeadReport:
    """The metrics of `num_classes` scores, or of each class split and the actions where the model's
    `ViViTConfig` has `class_splits` (`aggregation` "softmax": the scores are each split's probabilities)."""
    if config.class_splits:
        return MultiHeadReport.from_scores(scores, labels, config.splits, probabilities=aggregation == "softmax")
    return ClassificationReport.from_scores(scores, labels, num_classes)


def reported_top5(report: ClassificationReport | MultiHeadReport, num_classes: int) -> float | None:
    """Top-5 accuracy, or None where it is trivially 1.0 (5 classes or fewer; a multi-head report knows)."""
    if isinstance(report, MultiHeadReport):
        return report.top5
    return report.top5 if num_classes >= TOP5_MIN_CLASSES else None


def report_dict(report: ClassificationReport | MultiHeadReport, classes: list[str]) -> dict[str, Any]:
    """The report's JSON fields; a multi-head one has `splits` ({name: classes and metrics}) and `action`
    (top1, top5), and its `top1`/`top5` are the action's."""
    if isinstance(report, ClassificationReport):
        return {"classes": classes, **asdict(report), "top5": reported_top5(report, len(classes))}
    splits, start = {}, 0
    for name, r in report.splits.items():
        names, start = classes[start:start + len(r.per_class_accuracy)], start + len(r.per_class_accuracy)
        splits[name] = {"classes": names, **asdict(r), "top5": reported_top5(r, len(names))}
    return {"classes": classes, "splits": splits, "action": {"top1": report.top1, "top5": report.top5},
            "top1": report.top1, "top5": report.top5, "num_samples": report.num_samples}


def parse_views(text: str) -> tuple[int, int]:
    """'4x3' -> (4 clips, 3 crops)."""
    try:
        clips, crops = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--views {text!r} must look like CLIPSxCROPS, e.g. 4x3") from None
    if clips < 1 or crops not in (1, 3):
        raise ConfigError(f"--views {text!r}: clips must be >= 1 and crops 1 or 3")
    return clips, crops


DEFAULT_VIEWS = "4x3"  # the paper's test views (Sec. 4.1: 4 temporal clips x 3 spatial crops)


def model_views(model: nn.Module) -> str:
    """The views a model was tested with (`model.preprocess.views`: registry models, e.g. 4x1 for
    Epic-Kitchens), else the paper's 4x3: the default of `--views` for eval and predict alike."""
    preprocess = getattr(model, "preprocess", None)
    return preprocess.views if preprocess is not None else DEFAULT_VIEWS


def add_inference_options(parser: argparse.ArgumentParser) -> None:
    """The options eval and predict share, with the same defaults."""
    parser.add_argument("--views", default=None, help="CLIPSxCROPS views averaged per video (default: the views the "
                                                     f"model was tested with, {DEFAULT_VIEWS} unless it says)")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="frame stride (default: the model's training stride)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="videos per forward pass (default 8)")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="decoding processes (default 2; 0: decode in this process)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default=None, choices=("fp32", *AUTOCAST_DTYPES),
                        help="bf16: weights cast once; fp16: autocast (default: the training run's on CUDA, "
                             "fp32 on CPU)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_prepare_options(parser)


def score_views(loaded: Any, source: Any, *, views: tuple[int, int], split: str | None = None,
                frame_stride: int | None = None, aggregation: str = "logits", batch_size: int = 8,
                num_workers: int = 0, device: str = "auto", precision: str | None = None, quiet: bool = False,
                desc: str = "eval", compile: bool = False, quantize: str | None = None) -> tuple[Any, ...]:
    """`collect_scores` of a loaded model (`load_model`) over `source` with clips x crops views, videos
    preprocessed as in the model's training run (frame stride unless given, resize, normalisation) and run
    at its precision (`inference_precision`) unless `precision` is given."""
    from vivit.data import build_dataset, make_loader

    model, classes, train_config = loaded
    stride, augment = eval_preprocessing(train_config)
    dataset = build_dataset(source, split=split, train=False, num_frames=model.config.num_frames,
                            frame_stride=stride if frame_stride is None else frame_stride,
                            image_size=model.config.image_size[0], num_clips=views[0], num_crops=views[1],
                            classes=classes, augment=augment,
                            splits=model.config.splits if model.config.class_splits else None)
    dev = resolve_device(device)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    precision = precision or inference_precision(train_config, dev)
    from vivit.engine.inference import prepare_for_inference  # weights cast once, int8 linears, compiled

    model = prepare_for_inference(model.to(dev), precision, compile=compile, quantize=quantize)
    return collect_scores(model, loader, device=dev, precision=precision, aggregation=aggregation,
                          quiet=quiet, desc=desc)


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, *, split: str | None = "val", views: str | None = None,
                        aggregation: str = "logits", frame_stride: int | None = None, batch_size: int = 8,
                        num_workers: int = 2, device: str = "auto", precision: str | None = None,
                        out: str | Path | None = None, overwrite: bool = False, quiet: bool = False,
                        compile: bool = False, quantize: str | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset with multi-view testing; writes report.json and confusion.png to `out`
    (a previous report there is replaced only with `overwrite`).
    `views` None: the model's (`model_views`). `precision` None: the training run's on CUDA
    (`inference_precision`), fp32 on the CPU."""
    from vivit.engine.checkpoint import load_model
    from vivit.engine.plots import confusion_matrix

    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"--aggregate {aggregation!r} is not allowed; choose one of {list(AGGREGATIONS)}")
    if out is not None:
        out = output_folder(out)
        previous = check_outputs([out / "report.json", *sorted(out.glob("confusion.png")),
                                  *sorted(out.glob("confusion-*.png"))], overwrite)
    loaded = load_model(checkpoint, quiet=quiet)
    views = views or model_views(loaded.model)
    clips, crops = parse_views(views)
    classes = loaded.classes
    scores, labels, _, skipped = score_views(
        loaded, data, views=(clips, crops), split=split, frame_stride=frame_stride, aggregation=aggregation,
        batch_size=batch_size, num_workers=num_workers, device=device, precision=precision, quiet=quiet,
        desc=f"eval {views}", compile=compile, quantize=quantize)
    if len(labels) == 0:
        raise DataError(f"no video of {data} could be decoded")
    report = classification_report(scores, labels, len(classes), loaded.model.config, aggregation)
    result = {"checkpoint": str(checkpoint), "data": str(data), "split": split, "views": f"{clips}x{crops}",
              "aggregation": aggregation, "skipped": skipped, **report_dict(report, classes)}
    if out is not None:
        with atomic_write(out / "report.json") as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        title = f"{Path(checkpoint).name} ({views} views)"
        written = [out / "report.json"]
        for name, r in result.get("splits", {"": result}).items():  # multi-head: confusion-<split>.png each
            written.append(out / f"confusion{'-' * bool(name)}{name}.png")
            confusion_matrix(r["confusion"], r["classes"], written[-1], title=f"{title} {name}".strip())
        remove_stale(previous, written)
    return result


def eval_preprocessing(train_config: dict[str, Any]) -> tuple[int, Any]:
    """Frame stride and resize/normalisation of the run that trained a checkpoint (defaults without one)."""
    from vivit.engine.build import augment_config
    from vivit.engine.config import DataSection, TrainConfig

    data = TrainConfig.from_dict(train_config).data if train_config else DataSection()
    return data.frame_stride, augment_config(data)


def inference_precision(train_config: dict[str, Any], device: torch.device) -> str:
    """The training run's `run.precision` on CUDA (`auto`: bf16 where supported, as in training); fp32 on
    the CPU, where autocast is slower than fp32."""
    from vivit.engine.config import RunSection, TrainConfig

    if device.type != "cuda":
        return "fp32"
    return resolve_precision(TrainConfig.from_dict(train_config).run if train_config else RunSection(), device)


def format_report(r: dict[str, Any]) -> str:
    lines = [f"{r['num_samples']} videos ({r['skipped']} skipped), {r['views']} views, {r['aggregation']} averaged"]
    if "splits" not in r:
        return "\n".join(lines + _format_head(r))
    lines.append(f"action (all of {', '.join(r['splits'])} right): {_top_k(r['action'])}".rstrip())
    for name, split in r["splits"].items():
        lines += [f"{name}:"] + ["  " + line for line in _format_head(split)]
    return "\n".join(lines)


def _top_k(r: dict[str, Any]) -> str:
    return f"top-1 {100 * r['top1']:.2f}%  " + ("" if r["top5"] is None else f"top-5 {100 * r['top5']:.2f}%  ")


def _format_head(r: dict[str, Any]) -> list[str]:
    """The accuracy line and per-class lines of one head (or one class split)."""
    lines = [_top_k(r) + f"mean class {100 * r['mean_class_accuracy']:.2f}%", "per class:"]
    width = max(len(c) for c in r["classes"])
    for name, acc in zip(r["classes"], r["per_class_accuracy"]):
        lines.append(f"  {name:<{width}}  {'-' if acc is None else f'{100 * acc:.1f}%'}")
    return lines


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", metavar="MODEL", help="the model, when --model is not given")
    parser.add_argument("data", nargs="?", metavar="DATA", help="dataset folder, list file or Kinetics-style CSV")
    add_model_option(parser)
    parser.add_argument("--split", default="val", type=parse_split,
                        help="train/val/test sub-folder or CSV split to evaluate (default: val); "
                             "none: the folder's class folders (no split folders)")
    parser.add_argument("--aggregate", default="logits", choices=AGGREGATIONS, help="average logits (paper) or softmax")
    add_inference_options(parser)
    parser.add_argument("--out", default=None, help="folder for report.json and confusion.png")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous report.json and confusion.png in --out")


def run(args: argparse.Namespace) -> int:
    model, (data,) = model_and_rest(args.model, [args.checkpoint, args.data], rest=1,
                                    usage="`vivit eval MODEL DATA` or `vivit eval DATA --model MODEL`")
    result = evaluate_checkpoint(model, data, split=args.split, views=args.views, aggregation=args.aggregate,
                                 frame_stride=args.stride, batch_size=args.batch_size, num_workers=args.workers,
                                 device=args.device, precision=args.precision, out=args.out, overwrite=args.overwrite,
                                 quiet=args.quiet, **inference_options(args))
    if args.json:
        print_json(result)
    else:
        print(format_report(result))
    if args.out is not None:  # on stderr with --json, whose stdout is the report alone
        print(f"wrote report.json and the confusion matrix plot to {args.out}", file=sys.stderr if args.json else sys.stdout)
    return 0
