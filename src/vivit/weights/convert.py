"""`vivit convert --from {hf,scenic,image-vit} SRC DST`: write a foreign checkpoint in our folder format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vivit.config import CLASSIFIERS, VARIANTS
from vivit.errors import VivitError
from vivit.model import posembed
from vivit.model.tokenizers import TUBELET_INITS
from vivit.model.vivit import ViViT
from vivit.profile import count_parameters
from vivit.weights import hf, image_vit, scenic
from vivit.textfiles import read_labels
from vivit.weights.store import LoadReport, check_replaceable, sibling_config

SOURCES = ("hf", "scenic", "image-vit")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", choices=SOURCES, required=True, help="checkpoint kind")
    parser.add_argument("src", help="HF folder/file, Scenic msgpack checkpoint, or image ViT (.npz/.safetensors/.bin, "
                                    "HF folder or Flax msgpack train state; layouts: README)")
    parser.add_argument("dst", help="output folder (config.json + model.safetensors [+ labels.txt])")
    parser.add_argument("--variant", choices=sorted(VARIANTS),
                        help="image-vit: the video variant to build (default st); scenic: 'fdp' for Model 4 checkpoints")
    parser.add_argument("--frames", type=int, help="frames of the converted model (pos-embeds are resampled)")
    parser.add_argument("--size", type=int, help="height = width of the converted model (pos-embeds are resampled)")
    parser.add_argument("--classes", type=int, help="number of classes (a new head when it differs)")
    parser.add_argument("--dynamic-size", action="store_true", help="let the saved model run other frame counts and sizes")
    parser.add_argument("--source-frames", type=int, default=32, help="scenic: frames the checkpoint was trained on (default 32)")
    parser.add_argument("--fsa-order", default="time_space", choices=("time_space", "space_time"),
                        help="scenic Model 3: attention order (official default time_space)")
    parser.add_argument("--classifier", choices=CLASSIFIERS,
                        help="scenic: the classifier of a checkpoint without cls token (default: gap, with a warning)")
    parser.add_argument("--source-size", type=int, nargs=2, metavar=("H", "W"),
                        help="scenic: the input size of a checkpoint with a non-square token grid")
    parser.add_argument("--tubelet-init", default="central_frame", choices=TUBELET_INITS, help="image-vit: 2D-to-3D kernel init")
    parser.add_argument("--fsa-temporal-init", default="copy", choices=image_vit.FSA_TEMPORAL_INITS,
                        help="image-vit Model 3: copy the image attention (official) or zero (paper)")
    parser.add_argument("--pos-interpolation", choices=image_vit.POS_INTERPOLATIONS,
                        help="spatial resize of positional embeddings (default bicubic; image-vit --recipe scenic: "
                             "bilinear_aligned, the official scipy zoom(order=1))")
    parser.add_argument("--pos-temporal", default="linear", choices=posembed.TEMPORAL_MODES,
                        help="hf/scenic with --frames: resample positional embeddings in time (tile: the official "
                             "Scenic repetition of the frame sequence; linear_aligned: its FE temporal interpolation)")
    parser.add_argument("--recipe", default="default", choices=image_vit.RECIPES,
                        help="image-vit: our 2D-to-3D initialisation or the official Scenic init_from_train_state")
    parser.add_argument("--pos-size-change", default="resize_tile", choices=image_vit.POS_SIZE_CHANGES,
                        help="image-vit --recipe scenic: the official positional_embed_size_change")
    parser.add_argument("--labels", type=Path, help="a text file of class names, one a line, saved with the model")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace DST even when it is not an empty or vivit model folder")
    parser.add_argument("--json", action="store_true", help="machine-readable output (the load report)")


def convert(args: argparse.Namespace) -> tuple[ViViT, LoadReport, list[str] | None]:
    overrides: dict[str, Any] = {k: v for k, v in dict(num_frames=args.frames, image_size=args.size,
                                                       num_classes=args.classes).items() if v is not None}
    if args.dynamic_size:
        overrides["dynamic_size"] = True
    resample = dict(pos_spatial=args.pos_interpolation or "bicubic", pos_temporal=args.pos_temporal)
    labels = None
    if args.source == "hf":
        model, report = hf.load_hf(args.src, **resample, **overrides)
        config = sibling_config(args.src)
        labels = hf.labels_from_hf(config) if config is not None else None
    elif args.source == "scenic":
        model, report = scenic.load_scenic(args.src, args.source_frames, args.variant, args.fsa_order,
                                           classifier=args.classifier, source_size=args.source_size,
                                           **resample, **overrides)
    else:
        image = image_vit.read_image_vit(args.src)
        frames = overrides.pop("num_frames", 32)
        model = ViViT(image_vit.config_for_image_vit(image, args.variant or "st", frames, **overrides))
        report = image_vit.init_from_image_vit(model, image, args.tubelet_init, args.fsa_temporal_init,
                                               args.pos_interpolation, args.recipe, args.pos_size_change)
    if args.labels is not None:
        labels = read_labels(args.labels)
    elif labels is not None and len(labels) != model.config.num_classes:
        labels = None  # the checkpoint's class names do not fit a replaced head
    return model, report, labels


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """DST must not be SRC, inside it or around it (the conversion would delete what it reads), and must be
    new, empty or a vivit model folder unless --overwrite."""
    source, target = src.resolve(), dst.resolve()
    if source == target or source in target.parents or target in source.parents:
        raise VivitError(f"DST {dst} overlaps SRC {src}: writing it would delete the checkpoint being converted; "
                         "choose a DST outside SRC")
    if not overwrite:
        check_replaceable(dst)


def run(args: argparse.Namespace) -> int:
    check_destination(Path(args.src), Path(args.dst), args.overwrite)
    model, report, labels = convert(args)
    model.save_pretrained(args.dst, labels, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"dst": str(args.dst), "config": model.config.to_dict(), "report": report.to_dict()}, indent=2))
    else:
        print(report.summary())
        params_m = count_parameters(model) / 1e6
        print(f"saved {model.config.variant} model ({params_m:.2f} M params) to {args.dst}")
    return 0
