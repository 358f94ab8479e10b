"""A model made ready for inference once, before the first clip: weights cast to the inference dtype,
linears quantised to int8, or the whole forward compiled and frozen (what `predict` and `eval` run).

- `precision="bf16"`: the weights of the matmuls (linears, the tubelet convolution) are cast to bfloat16 once,
  instead of autocast casting each of them on every forward; the forward runs under bf16 autocast for the
  rest, so LayerNorm, softmax statistics and the residual stream stay in fp32 as in bf16 training, and the
  logits are those of plain autocast. On CPUs with AVX512-BF16 / AMX the GEMMs run on bf16 units; on CPUs
  without them as fp32 GEMMs on bf16-rounded operands where that is faster than PyTorch's emulated bf16
  kernels (`vivit.model.linear`), still a little slower than fp32 (see benchmarks/inference.py). fp16:
  autocast alone.
- `quantize="int8"`: dynamic quantisation of every linear (int8 weights, per-batch int8 activations,
  fp32 elsewhere) with PyTorch's own x86/fbgemm kernels (`torch.ao.quantization`: VNNI on AVX-512 CPUs),
  CPU only; the top-1 agreement and logit drift against fp32 are measured by benchmarks/inference.py.
- `compile=True`: `torch.compile` (inductor) with `freezing` (weights folded as constants, prepacked for
  oneDNN), paid once per input shape on the first batch. Without it the model runs eagerly on PyTorch's own
  GELU kernel (`vivit.model.activations.aten_gelu`): a few clips cannot repay the compiled kernel's first call.
"""

from __future__ import annotations

import argparse
import copy
import warnings
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from vivit import backends
from vivit.config import ViViTConfig
from vivit.errors import ConfigError
from vivit.model.activations import aten_gelu
from vivit.model.linear import bf16_route
from vivit.model.vivit import unwrap_model

PRECISIONS = ("fp32", "bf16", "fp16")
QUANTIZATIONS = ("int8",)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
CAST_ONCE = ("bf16",)  # matmul weights cast before the first clip; fp16 is cast by autocast per call
MATMUL_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv3d)  # what autocast runs in the lower precision


def cast_matmul_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast, in place, the weights and biases of `model`'s linears and convolutions: the tensors autocast would
    cast to `dtype` on every call (LayerNorm, embeddings and tokens stay as they are)."""
    for module in model.modules():
        if isinstance(module, MATMUL_LAYERS):
            module.to(dtype)


class InferenceModel(nn.Module):
    """Runs a prepared model on float videos and returns float32 logits: fp32 with autocast off (whatever the
    caller's), or under the precision's autocast; `config` is the underlying ViViT's."""

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None, config: ViViTConfig,
                 compiled: bool = False):
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.config = config
        self.compiled = compiled

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        enabled = self.autocast_dtype is not None
        # eager: PyTorch's GELU kernel, whose first call costs no compile (see `aten_gelu`)
        with (torch.autocast(video.device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=enabled),
              nullcontext() if self.compiled else aten_gelu()):
            return self.model(video.float()).float()


def quantize_linears(model: nn.Module) -> nn.Module:
    """A copy of `model` whose `nn.Linear` layers (ours included) are dynamically quantised to int8: weights per
    output channel, activations per batch (`torch.ao.nn.quantized.dynamic.Linear`)."""
    from torch.ao.nn.quantized import dynamic as nnqd
    from torch.ao.quantization import per_channel_dynamic_qconfig

    quantized = copy.deepcopy(model)
    for parent in list(quantized.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                plain = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                plain.load_state_dict(child.state_dict())
                plain.qconfig = per_channel_dynamic_qconfig  # one scale per output channel
                with warnings.catch_warnings():  # torch.ao's deprecation notices (eager mode, quantized dtypes)
                    warnings.simplefilter("ignore")
                    setattr(parent, name, nnqd.Linear.from_float(plain))
    return quantized


def prepare_for_inference(model: nn.Module, precision: str = "fp32", *, compile: bool = False,
                          quantize: str | None = None) -> InferenceModel:
    """`model` in eval mode, ready to classify (see the module docstring). bf16 casts `model`'s own matmul
    weights in place; int8 quantises a copy."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not allowed; choose one of {list(PRECISIONS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"--quantize {quantize!r} is not allowed; choose one of {list(QUANTIZATIONS)}")
    config = unwrap_model(model).config
    device = next(model.parameters()).device
    model.eval()
    if quantize is not None:
        if device.type != "cpu" or precision != "fp32":
            raise ConfigError(f"--quantize {quantize} runs on the CPU in fp32 around the int8 linears; "
                              f"use --device cpu --precision fp32 (got {device.type}, {precision})")
        model = quantize_linears(model)
    if precision == "bf16" and device.type == "cpu" and not backends.has_bf16_units():
        how = ("run as fp32 GEMMs on bf16-rounded operands (vivit.backends), with the casts a little slower than"
               if bf16_route() == "widened" else "are emulated, several times slower than")
        warnings.warn(f"this CPU lists neither AVX512-BF16 nor AMX: bf16 matmuls {how} fp32; --precision fp32 "
                      "(or --quantize int8) is the faster choice here", stacklevel=2)
    if precision in CAST_ONCE:
        cast_matmul_weights(model, AUTOCAST_DTYPES[precision])
    if compile:
        model = torch.compile(model, dynamic=False, options={"freezing": True})
    return InferenceModel(model, AUTOCAST_DTYPES.get(precision), config, compiled=compile).eval()


def add_options(parser: argparse.ArgumentParser) -> None:
    """`--compile` and `--quantize` of predict and eval (`--precision` is theirs)."""
    parser.add_argument("--compile", action="store_true",
                        help="compile and freeze the model first (torch.compile, inductor): pays on many clips")
    parser.add_argument("--quantize", default=None, choices=QUANTIZATIONS,
                        help="int8: dynamic int8 quantisation of the linears (CPU, fp32 precision)")


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `prepare_for_inference` given on the command line."""
    return {"compile": args.compile, "quantize": args.quantize}
