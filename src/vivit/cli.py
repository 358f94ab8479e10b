"""The `vivit` command. Each sub-command lives in its own module with `configure(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
import unicodedata
from typing import Any

from vivit.allocator import keep_freed_memory
from vivit.errors import ConfigError, VivitError

# sub-command -> (module, one-line help); a module is imported when the parser is built.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("vivit.zoo.cli", "pretrained models by name (the registry) and which are in the cache"),
    "convert": ("vivit.weights.convert", "convert HF, Scenic or image-ViT weights into a vivit model folder"),
    "profile": ("vivit.profile", "parameters, FLOPs/MACs, latency and memory of a model; --table for the paper's Table 2"),
    "synth": ("vivit.data.synthetic", "write a synthetic motion video dataset (H.264, train/val splits)"),
    "check-data": ("vivit.data.check", "list the videos of a dataset that cannot be decoded"),
    "train": ("vivit.engine.train", "train a ViViT from a YAML/TOML config plus key=value overrides; --resume continues"),
    "eval": ("vivit.engine.evaluate", "multi-view evaluation of a checkpoint: top-1/5, per-class accuracy, confusion matrix"),
    "predict": ("vivit.engine.predict", "top-k labels with probabilities for videos or folders of videos"),
    "extract": ("vivit.engine.extract", "features (pooled, per view, tokens, chosen blocks) of a dataset's videos as safetensors"),
    "export": ("vivit.engine.export", "export a checkpoint to ONNX, checked against PyTorch with onnxruntime"),
    "explain": ("vivit.explain.cli", "where a model looks in a video: attention rollout or class relevance maps, overlaid"),
    "demo": ("vivit.engine.demo", "synthetic motion data -> train factorised encoder and average-pool baseline -> compare"),
}


def print_json(obj: Any) -> None:
    """Every command's `--json` output: one document, indented by 2, non-ASCII kept as is."""
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """`--model NAME|CHECKPOINT|FOLDER`, taken by every command that uses a model (see `model_and_rest`)."""
    parser.add_argument("--model", metavar="NAME|CHECKPOINT|FOLDER",
                        help="a pretrained model NAME (`vivit models`), a training CHECKPOINT (.pt) or a model FOLDER; "
                             "without --model the first positional argument is the model")


def model_and_rest(model: str | None, positionals: list[str | None], usage: str,
                   rest: int | None = None) -> tuple[str, list[str]]:
    """(the model, the other positional arguments): `--model`, or else the first positional (the alias of
    `--model`). `rest`: how many others the command needs (None: at least one); a ConfigError shows `usage`."""
    given = [p for p in positionals if p is not None]
    if model is None:
        model, given = (given[0], given[1:]) if given else (None, [])
    if model is None or not given or (rest is not None and len(given) != rest):
        raise ConfigError(f"expected {usage}")
    return model, given


def display_width(text: str) -> int:
    """Terminal columns of `text`: East Asian wide and fullwidth characters take 2, combining marks and
    zero-width format characters 0 (Unicode UAX #11 and the general categories Mn, Me, Cf)."""
    return sum(0 if unicodedata.category(c) in ("Mn", "Me", "Cf") else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def ljust(text: str, width: int) -> str:
    """`text` padded with spaces to `width` terminal columns (`display_width`), for aligned tables."""
    return text + " " * max(width - display_width(text), 0)


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (batch sizes, top-k, strides)."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type for counts that may be 0 (worker processes)."""
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vivit", description="ViViT: Video Vision Transformers.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    keep_freed_memory()  # large tensors reused, not page-faulted in again per block (vivit.allocator)
    try:
        code = int(importlib.import_module(args._module).run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        # Python docs, signal module, "Note on SIGPIPE": point stdout at devnull so that the flush at exit
        # does not raise again, and exit with 1 as Python does on EPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (VivitError, OSError) as e:  # OSError: missing, unreadable or unwritable files
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
