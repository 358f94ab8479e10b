"""`vivit convert --from {hf,scenic,image-vit} SRC OUT`: write a foreign checkpoint in our folder format;
`vivit convert --to hf SRC OUT`: write our model (a NAME, CHECKPOINT or FOLDER) as a transformers folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vivit.cli import print_json
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
TARGETS = ("hf",)
FROM_ONLY = ("variant", "frames", "size", "classes", "classifier", "source_size", "pos_interpolation")  # None unless given


def configure(parser: argparse.ArgumentParser) -> None:
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="source", choices=SOURCES, help="foreign checkpoint kind, into our format")
    direction.add_argument("--to", dest="target", choices=TARGETS,
                           help="hf: our model as a transformers VivitForVideoClassification folder (Model 1)")
    parser.add_argument("src", help="--from: HF folder/file, Scenic msgpack checkpoint, or image ViT (.npz/.safetensors/"
                                    ".bin, HF folder or Flax msgpack train state; layouts: README); "
                                    "--to: a model NAME (`vivit models`), CHECKPOINT (.pt) or FOLDER")
    parser.add_argument("out", metavar="OUT", help="output folder (--from: config.json + model.safetensors "
                                                   "[+ labels.txt]; --to hf: + preprocessor_config.json)")
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
    parser.add_argument("--labels", type=Path, help="a text file of class names, one a line, saved with the model "
                                                    "(--to hf: its id2label)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT even when it is not an empty or vivit model folder")
    parser.add_argument("--json", action="store_true", help="machine-readable output (the load report)")
    parser.add_argument("--quiet", action="store_true", help="no download progress for a model NAME (--to)")


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
        if model.config.tubelet[0] != image_vit.TUBELET_FRAMES:
            report.notes.append(f"tubelet {model.config.tubelet}: 1 frame per tubelet, since the default "
                                f"{image_vit.TUBELET_FRAMES} does not divide --frames {frames}")
    if args.labels is not None:
        labels = read_labels(args.labels)
    elif labels is not None and len(labels) != model.config.num_classes:
        labels = None  # the checkpoint's class names do not fit a replaced head
    return model, report, labels


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """OUT must not be SRC, inside it or around it (the conversion would delete what it reads), and must be
    new, empty or a vivit model folder unless --overwrite."""
    source, target = src.resolve(), dst.resolve()
    if source == target or source in target.parents or target in source.parents:
        raise VivitError(f"OUT {dst} overlaps SRC {src}: writing it would delete the checkpoint being converted; "
                         "choose an OUT outside SRC")
    if not overwrite:
        check_replaceable(dst)


def to_hf_folder(src: str, out: str | Path, labels_file: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Our model (NAME, CHECKPOINT or FOLDER) -> a transformers folder with its class names and the
    preprocessing it was trained with (short side, crop, normalisation) as `preprocessor_config.json`."""
    from vivit.engine.checkpoint import load_model
    from vivit.engine.evaluate import eval_preprocessing

    model, classes, train_config = load_model(src, quiet=quiet)
    hf.hf_config(model.config)  # refuse what HF cannot represent before anything is written
    stride, augment = eval_preprocessing(train_config)
    crop = model.config.image_size[0]
    processor = hf.image_processor_config(crop, augment.resize_to(crop), augment.normalization)
    labels = read_labels(labels_file) if labels_file is not None else classes
    hf.save_hf(model, out, labels, processor)
    return {"out": str(out), "format": "hf", "frames": model.config.num_frames, "frame_stride": stride,
            "num_classes": model.config.num_classes, "preprocessor": processor}


def run(args: argparse.Namespace) -> int:
    check_destination(Path(args.src), Path(args.out), args.overwrite)
    if args.target is not None:
        given = [f"--{name.replace('_', '-')}" for name in FROM_ONLY if getattr(args, name) is not None]
        if given:
            raise VivitError(f"{', '.join(given)} adapt(s) a --from conversion; --to {args.target} writes the model as it is")
        result = to_hf_folder(args.src, args.out, args.labels, quiet=args.quiet)
        if args.json:
            print_json(result)
        else:
            size, crop = result["preprocessor"]["size"]["shortest_edge"], result["preprocessor"]["crop_size"]["height"]
            print(f"saved {args.src} for transformers to {args.out} (VivitForVideoClassification, "
                  f"{result['num_classes']} classes; {result['frames']} frames at stride {result['frame_stride']}, "
                  f"short side {size}, crop {crop}, pixels as trained)")
        return 0
    model, report, labels = convert(args)
    model.save_pretrained(args.out, labels, overwrite=args.overwrite)
    if args.json:
        print_json({"out": str(args.out), "config": model.config.to_dict(), "report": report.to_dict()})
    else:
        print(report.summary())
        params_m = count_parameters(model) / 1e6
        print(f"saved {model.config.variant} model ({params_m:.2f} M params) to {args.out}")
    return 0
