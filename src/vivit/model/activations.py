"""The MLP's GELU with the tanh approximation, as the official ViT/ViViT (`flax.linen.gelu`, approximate=True)
and HF's `gelu_fast` / `gelu_pytorch_tanh` compute it.

GELU(x) ~ 0.5 x (1 + tanh(z)), z = sqrt(2/pi) (x + 0.044715 x^3) (Hendrycks & Gimpel 2016, Eq. 2); since
0.5 (1 + tanh(z)) = sigmoid(2z), that is x * sigmoid(2z). On some CPUs PyTorch's tanh-GELU kernel is slow
(4x its erf GELU on a Sapphire Rapids Xeon), while `torch.compile` fuses the sigmoid form into one loop
about 3x faster, forward and backward (an autograd Function over two compiled kernels, forward and
derivative, so graphs can be retained and differentiated twice as with `F.gelu`). `vivit.backends.gelu_route` measures which is faster on the running
machine; fp32/bf16 CPU activations of at least `MIN_NUMEL` elements take that route (the first one compiles
once per process: 2-4 s, importing inductor included), everything else (CUDA, float64, small tensors,
tracing/export, `torch.func`, blocks under `aten_gelu()` such as the eager inference of `vivit predict`) `F.gelu`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from vivit import backends
from vivit.model.linear import tracing_or_transforming

MIN_NUMEL = 1 << 20  # below about a million elements the kernels' difference is under the call overhead
_aten_only = False  # set by `aten_gelu()`


# The constants are literals in the formulas: `torch.compile(dynamic=True)` would pass named float globals to
# its kernel as run-time scalars, which costs 15 % of the forward kernel's time; literals are folded in.
# 1.5957691216057308 = 2 sqrt(2/pi); 0.134145 = 3 x 0.044715.


def gelu_tanh_formula(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)): the tanh-approximation GELU, written for a fusing compiler."""
    return x * torch.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))


def gelu_tanh_derivative(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """grad * d/dx [x sigmoid(u)], u = 2 sqrt(2/pi) (x + 0.044715 x^3): grad (s + x s (1 - s) du/dx), s = sigmoid(u)."""
    s = torch.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
    return grad * (s + x * s * (1 - s) * (1.5957691216057308 * (1 + 0.134145 * x * x)))


@cache
def _kernels():
    """The forward and derivative compiled by inductor for any shape (one kernel each per dtype)."""
    return torch.compile(gelu_tanh_formula, dynamic=True), torch.compile(gelu_tanh_derivative, dynamic=True)


class _CompiledGeluTanh(torch.autograd.Function):
    """Saves x (as `F.gelu`); the backward's compiled derivative is itself differentiable (create_graph)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _kernels()[0](x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _kernels()[1](x, grad)


def compiled_gelu_tanh():
    """The tanh GELU on its compiled kernels (`gelu_tanh_formula`, `gelu_tanh_derivative`)."""
    return _CompiledGeluTanh.apply


def _aten_gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


@backends.constant_under_compile  # decided eagerly, a constant to `torch.compile`
def _measured_route() -> str:
    return backends.gelu_route(compiled_gelu_tanh(), _aten_gelu_tanh)


def _use_compiled(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.numel() >= MIN_NUMEL
        and not tracing_or_transforming()
        and not _aten_only
        and _measured_route() == "compiled"
    )


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """`F.gelu(x, approximate="tanh")`, on the machine's faster kernel (see the module docstring)."""
    if _use_compiled(x):
        # inside a compiled model the formula fuses with its neighbours; eagerly, the compiled kernel runs
        return gelu_tanh_formula(x) if torch.compiler.is_compiling() else compiled_gelu_tanh()(x)
    return _aten_gelu_tanh(x)


@contextmanager
def aten_gelu() -> Iterator[None]:
    """Inside the block, PyTorch's kernel whatever the route: where a few forwards cannot repay the first
    compiled call's seconds (importing inductor, loading the kernel), as `vivit predict` on a handful of clips."""
    global _aten_only
    previous, _aten_only = _aten_only, True
    try:
        yield
    finally:
        _aten_only = previous


class GELU(nn.Module):
    """`nn.GELU(approximate)` whose tanh approximation runs on `gelu_tanh`."""

    def __init__(self, approximate: str = "tanh"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu_tanh(x) if self.approximate == "tanh" else F.gelu(x)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
