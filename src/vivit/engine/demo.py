"""`vivit demo`: synthetic motion videos -> train a small factorised-encoder ViViT (Model 2) and its
average-pool baseline with the same recipe -> multi-view evaluation -> comparison table and plots.

The class is the order of a square's motion: left then back right (`left-right`), or right then back left
(`right-left`). Every frame, and the unordered set of frames, has the same distribution in both classes. Each
2x8x8 tubelet sees two consecutive frames, where the square moves by only 1-2 pixels; the temporal encoder can
follow the square over all 8 tubelets, while the average-pool baseline (paper Table 2) only averages the
per-tubelet evidence, which is the same for both orders."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from vivit.cli import print_json
from vivit.engine.config import TrainConfig
from vivit.engine.evaluate import evaluate_checkpoint
from vivit.engine.train import train

# The synthetic dataset and the shared training recipe (configs/demo.yaml holds the same recipe).
DATA = dict(classes=2, videos_per_class=256, frames=16, size=32, seed=0, val_fraction=0.25)
RECIPE: dict[str, Any] = {
    "model": {"name": "vivit-ti-16x2-fe",
              "overrides": {"tubelet": [2, 8, 8], "width": 64, "depth": 2, "num_heads": 4, "mlp_dim": 128,
                            "temporal_depth": 2}},
    "data": {"num_frames": 16, "frame_stride": 1, "image_size": 32, "num_workers": 1,
             "augment": {"flip": 0.0, "color_jitter": 0.0, "scale_jitter": [1.0, 1.0], "short_side": 32}},
    "optim": {"name": "adamw", "lr": 1e-3, "base_batch_size": None, "weight_decay": 0.05, "clip_grad_norm": 1.0},
    "schedule": {"name": "constant", "epochs": 50, "warmup_epochs": 1.0},
    "run": {"batch_size": 32, "seed": 0, "eval_every": 10, "log_every": 12},
}
MODELS = {"factorised encoder": "vivit-ti-16x2-fe", "average-pool baseline": "vivit-ti-16x2-fe-avg"}
VIEWS = "4x3"


def demo_config(out: Path, model_name: str, epochs: int | None = None) -> TrainConfig:
    recipe = copy.deepcopy(RECIPE)
    recipe["model"]["name"] = model_name
    recipe["data"]["train"] = str(out / "data")
    recipe["run"]["out"] = str(out / model_name)
    if epochs is not None:
        recipe["schedule"]["epochs"] = epochs
    return TrainConfig.from_dict(recipe)


def run_demo(out: str | Path, *, epochs: int | None = None, videos_per_class: int | None = None,
             quiet: bool = False) -> dict[str, Any]:
    """Generate data (unless present), train both models, evaluate with multi-view testing, write plots."""
    from vivit.data.synthetic import generate
    from vivit.engine import plots

    out = Path(out)
    say = (lambda msg: None) if quiet else (lambda msg: print(msg, flush=True))
    data = {**DATA, **({"videos_per_class": videos_per_class} if videos_per_class else {})}
    if not (out / "data" / "val").is_dir():
        say(f"generating {data['classes'] * data['videos_per_class']} synthetic motion videos in {out / 'data'}")
        generate(out / "data", progress=not quiet, overwrite=True, **data)  # the demo's own data folder
    results = {}
    for label, model_name in MODELS.items():
        say(f"\n== {label} ({model_name}) ==")
        start = time.perf_counter()
        config = demo_config(out, model_name, epochs)
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, overwrite=True))  # a re-run replaces its runs
        summary = train(config, quiet=quiet)
        seconds = time.perf_counter() - start
        report = evaluate_checkpoint(Path(config.run.out) / "best.pt", out / "data", split="val", views=VIEWS,
                                     num_workers=config.data.num_workers, out=config.run.out, overwrite=True,
                                     quiet=quiet)
        results[label] = {"model": model_name, "train_seconds": round(seconds, 1),
                          "val_top1_1view": summary["best_top1"], "top1": report["top1"], "top5": report["top5"],
                          "mean_class_accuracy": report["mean_class_accuracy"]}
    chance = 1.0 / data["classes"]
    plots.comparison({label.replace(" ", "\n"): r["top1"] for label, r in results.items()}, out / "comparison.png",
                     title=f"synthetic motion order, {data['classes']} classes ({VIEWS} views)", chance=chance)
    summary = {"data": data, "views": VIEWS, "chance": chance, "results": results}
    (out / "demo_report.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_table(summary: dict[str, Any]) -> str:
    views = f"top-1 ({summary['views']})"
    top5 = any(r["top5"] is not None for r in summary["results"].values())  # None: 5 classes or fewer
    lines = [f"{'model':<24} {'val top-1 (1 view)':>19} {views:>13}" + (f" {'top-5':>7}" if top5 else "")
             + f" {'mean class':>11} {'train s':>8}"]
    for label, r in summary["results"].items():
        lines.append(f"{label:<24} {100 * r['val_top1_1view']:>18.1f}% {100 * r['top1']:>12.1f}%"
                     + (f" {100 * r['top5']:>6.1f}%" if top5 else "")
                     + f" {100 * r['mean_class_accuracy']:>10.1f}% {r['train_seconds']:>8.0f}")
    lines.append(f"chance: {100 * summary['chance']:.1f}% (no single frame, nor the set of frames, tells the order of motion)")
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (data, runs, plots, report)")
    parser.add_argument("--epochs", type=int, default=None, help=f"override the recipe's {RECIPE['schedule']['epochs']} epochs")
    parser.add_argument("--videos-per-class", type=int, default=None, help=f"default {DATA['videos_per_class']}")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    summary = run_demo(args.out, epochs=args.epochs, videos_per_class=args.videos_per_class, quiet=args.quiet or args.json)
    if args.json:
        print_json(summary)
    else:
        print("\n" + format_table(summary))
        print(f"\nplots: {Path(args.out) / 'comparison.png'}, */training_curves.png, */confusion.png")
    return 0
