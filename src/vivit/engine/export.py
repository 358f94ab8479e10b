"""`vivit export MODEL OUT --format onnx` (or `vivit export OUT --model MODEL`): ONNX export, checked against
PyTorch with onnxruntime."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import torch

from vivit.cli import add_model_option, model_and_rest, print_json
from vivit.engine.atomic import atomic_write
from vivit.errors import ConfigError, VivitError
from vivit.outputs import check_outputs

FORMATS = ("onnx",)
OPSETS = range(14, 21)  # 14: the first with scaled_dot_product_attention; 20: the TorchScript exporter's last
TOLERANCE = 1e-3  # max abs logit difference accepted between onnxruntime and PyTorch (fp32)


def export_onnx(checkpoint: str | Path, out: str | Path, *, batch_size: int = 1, opset: int = 17, seed: int = 0,
                overwrite: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Trace the model to ONNX (input `video` (B, C, T, H, W), dynamic batch, output `logits`), run the same
    random input through onnxruntime and PyTorch, and report the max absolute difference. An existing
    `out` is replaced only with `overwrite`, and never when it is the checkpoint or inside its folder."""
    from vivit.engine.checkpoint import load_model

    if opset not in OPSETS:
        raise ConfigError(f"--opset {opset} is not supported; choose {OPSETS.start}..{OPSETS.stop - 1} (default 17)")
    check_output_file(Path(out), Path(checkpoint), overwrite)
    try:
        import onnxruntime as ort
    except ImportError:
        raise VivitError("ONNX export needs onnx and onnxruntime: pip install 'vivit[onnx]'") from None
    model = load_model(checkpoint, quiet=quiet).model
    cfg = model.config
    video = torch.rand(batch_size, cfg.in_channels, cfg.num_frames, *cfg.image_size,
                       generator=torch.Generator().manual_seed(seed)) * 2 - 1
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:  # `out` appears only once onnxruntime agrees with PyTorch
        with warnings.catch_warnings():  # the tracer warns about Python control flow on static shapes
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (video,), str(tmp), dynamo=False, opset_version=opset, input_names=["video"],
                              output_names=["logits"], dynamic_axes={"video": {0: "batch"}, "logits": {0: "batch"}})
        with torch.no_grad():
            expected = model(video).numpy()
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diff = float(abs(session.run(["logits"], {"video": video.numpy()})[0] - expected).max())
        if not diff <= TOLERANCE:
            raise VivitError(f"the ONNX model disagrees with PyTorch (max abs diff {diff:.2e} > {TOLERANCE}); "
                             "nothing written")
    return {"checkpoint": str(checkpoint), "out": str(out), "format": "onnx", "opset": opset,
            "input_shape": list(video.shape), "max_abs_diff": diff}


def check_output_file(out: Path, source: Path, overwrite: bool) -> None:
    """An output file must not be a folder, the source checkpoint or one of the source folder's files, and
    another existing file is replaced only with --overwrite."""
    target, src = out.resolve(), source.resolve()
    if target == src or (src in target.parents and out.exists()):
        raise VivitError(f"{out} would overwrite the checkpoint it is exported from ({source}); choose another file")
    if out.is_dir():
        raise VivitError(f"{out} is a folder; give a file name such as {out / 'model.onnx'}")
    check_outputs([out], overwrite)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", metavar="MODEL", help="the model, when --model is not given")
    parser.add_argument("out", nargs="?", metavar="OUT", help="output file, e.g. model.onnx")
    add_model_option(parser)
    parser.add_argument("--format", default="onnx", choices=FORMATS)
    parser.add_argument("--opset", type=int, default=17, help=f"ONNX opset, {OPSETS.start}..{OPSETS.stop - 1}")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--quiet", action="store_true", help="no download progress for a model NAME")


def run(args: argparse.Namespace) -> int:
    model, (out,) = model_and_rest(args.model, [args.checkpoint, args.out], rest=1,
                                   usage="`vivit export MODEL OUT` or `vivit export OUT --model MODEL`")
    result = export_onnx(model, out, opset=args.opset, overwrite=args.overwrite, quiet=args.quiet)
    if args.json:
        print_json(result)
    else:
        print(f"wrote {result['out']} (opset {result['opset']}, input {tuple(result['input_shape'])}); "
              f"onnxruntime vs PyTorch max abs diff {result['max_abs_diff']:.2e}")
    return 0
