"""Dense layers on the machine's fastest GEMM, fp32 and bf16.

PyTorch runs fp32 CPU matmuls through MKL on x86-64; oneDNN, which PyTorch ships too, is about twice as
fast on some CPUs (AMD EPYC Zen 5, where MKL runs AVX2 kernels) and slower on others (Intel Sapphire
Rapids). `Linear` sends fp32 CPU matmuls (forward and both backward GEMMs) to oneDNN only where
`vivit.backends.gemm_route` measured it faster on the running machine; other CPUs than x86-64 opt in
with `onednn_gemm(True)`. CUDA, float64, ONNX/`torch.export` tracing and matmuls too small for oneDNN's
larger per-call cost to pay off (under `MIN_MACS` multiply-adds; the crossover measured on the AMD EPYC is
5-20 M, forward to training) keep `F.linear`.

bf16 CPU matmuls (under bf16 autocast, or of bf16 inputs and weights) run on oneDNN's bf16 kernels, which a
CPU without AVX512-BF16 / AMX emulates about 5x slower than fp32. Where `vivit.backends.bf16_gemm_route`
measured it faster, those of at least `MIN_MACS` multiply-adds (below, the casts cost more than they save) run
instead as the fp32 GEMM above on the operands widened from bf16, rounded back to bf16 (forward and both
backward GEMMs): the values of a bf16 GEMM with fp32 accumulation, up to the order of the sums; inputs,
outputs and saved activations stay bf16. Parameters, state-dict keys and the maths are those of `nn.Linear`.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vivit import backends

_ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
MIN_MACS = 1 << 24
# None: the measured route of this machine (x86-64); True / False: forced (onednn_gemm, other CPUs)
_MEASURED: bool | None = None if _ONEDNN_AVAILABLE else False
_onednn_enabled: bool | None = _MEASURED if platform.machine().lower() in ("x86_64", "amd64") else False
_min_macs = MIN_MACS
_widened_enabled: bool | None = None  # None: the measured bf16 route; True / False: forced (widened_bf16_gemm)
_widened_min_macs = MIN_MACS  # below, the casts' per-call cost outweighs the faster GEMM (2^20 MACs: 1.2x slower)


@torch.library.custom_op("vivit::onednn_mm_t", mutates_args=())
def _mm_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b.T (+ bias) on oneDNN; a is (..., K), b is (N, K). An opaque op to `torch.compile`."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


@_mm_t.register_fake
def _(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return a.new_empty((*a.shape[:-1], b.shape[0]))


def _setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    a, b, bias = inputs
    ctx.save_for_backward(a if b.requires_grad else None, b if a.requires_grad else None)  # as F.linear saves
    ctx.a_shape = a.shape
    ctx.has_bias = bias is not None


def _backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    a, b = ctx.saved_tensors
    g = grad.reshape(-1, grad.shape[-1])  # (rows, N)
    grad_a = _mm_t(g, b.t()).view(ctx.a_shape) if ctx.needs_input_grad[0] else None  # dL/da = g b
    grad_b = _mm_t(g.t(), a.reshape(-1, a.shape[-1]).t()) if ctx.needs_input_grad[1] else None  # dL/db = g^T a
    grad_bias = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return grad_a, grad_b, grad_bias


_mm_t.register_autograd(_backward, setup_context=_setup_context)


@backends.constant_under_compile  # decided eagerly, a constant to `torch.compile`
def _measured_route() -> str:
    return backends.gemm_route(_mm_t)


@torch.library.custom_op("vivit::widened_bf16_mm_t", mutates_args=())
def _widened_mm_t(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """bf16 a @ b.T (+ bias) as one fp32 GEMM (the fp32 route of `linear`) on the widened operands, rounded
    to bf16. An opaque op to `torch.compile`."""
    with torch.autocast("cpu", enabled=False):
        return linear(a.float(), b.float(), None if bias is None else bias.float()).to(a.dtype)


@_widened_mm_t.register_fake
def _(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return a.new_empty((*a.shape[:-1], b.shape[0]))


def _widened_backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    a, b = ctx.saved_tensors
    g = grad.reshape(-1, grad.shape[-1]).float()  # (rows, N), widened once for both GEMMs
    grad_a = grad_b = grad_bias = None
    with torch.autocast("cpu", enabled=False):
        if ctx.needs_input_grad[0]:
            grad_a = linear(g, b.t().float()).to(grad.dtype).view(ctx.a_shape)  # dL/da = g b
        if ctx.needs_input_grad[1]:
            grad_b = linear(g.t(), a.reshape(-1, a.shape[-1]).t().float()).to(grad.dtype)  # dL/db = g^T a
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = g.sum(0).to(grad.dtype)
    return grad_a, grad_b, grad_bias


_widened_mm_t.register_autograd(_widened_backward, setup_context=_setup_context)


@backends.constant_under_compile
def _measured_bf16_route() -> str:
    return backends.bf16_gemm_route(_widened_mm_t)


def tracing_or_transforming() -> bool:
    """Whether an ONNX export, `torch.export`, TorchScript trace or `torch.func` transform is running: the
    custom kernels then step aside for PyTorch's own ops (a `torch.func` transform needs a jvp / vmap rule)."""
    return (
        torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
        or torch.jit.is_tracing()
        or torch._C._are_functorch_transforms_active()
    )


def _use_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """oneDNN where it computes `F.linear` faster: large fp32 CPU matmuls with a plain (N, K) weight and
    contiguous (N,) bias, outside autocast, export/tracing and `torch.func` transforms."""
    return (
        _onednn_enabled is not False
        and not tracing_or_transforming()
        and not torch.is_autocast_enabled("cpu")
        and x.device.type == weight.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and weight.dim() == 2
        and (bias is None or (bias.shape == weight.shape[:1] and bias.is_contiguous()
                              and bias.dtype == torch.float32 and bias.device.type == "cpu"))
        and x.numel() > 0
        and x.numel() * weight.shape[0] >= _min_macs
        and (_onednn_enabled or _measured_route() == "onednn")
    )


def _bf16_operands(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether `F.linear` would run a bf16 CPU GEMM: bf16 inputs and weight (and bias), or fp32/bf16 ones under
    bf16 autocast, which casts them."""
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not all(t.device.type == "cpu" for t in tensors):
        return False
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        return all(t.dtype in (torch.float32, torch.bfloat16) for t in tensors)
    return all(t.dtype == torch.bfloat16 for t in tensors)


def _use_widened(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """bf16 CPU matmuls as fp32 GEMMs on widened operands, where that is faster (outside export/tracing and
    `torch.func` transforms)."""
    return (
        _widened_enabled is not False
        and _bf16_operands(x, weight, bias)  # first: every fp32 linear asks, and stops here
        and not tracing_or_transforming()
        and weight.dim() == 2
        and (bias is None or bias.shape == weight.shape[:1])
        and x.numel() > 0
        and x.numel() * weight.shape[0] >= _widened_min_macs
        and (_widened_enabled or _measured_bf16_route() == "widened")
    )


def bf16_route() -> str:
    """The route of bf16 CPU linears here and now: "widened" or "native" (forced inside `widened_bf16_gemm`)."""
    if _widened_enabled is not None:
        return "widened" if _widened_enabled else "native"
    return _measured_bf16_route()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, on the machine's faster route (see the module docstring): oneDNN for fp32 CPU matmuls of at
    least `MIN_MACS` multiply-adds, fp32 GEMMs for bf16 CPU matmuls."""
    if _use_onednn(x, weight, bias):
        return _mm_t(x, weight, bias)
    if _use_widened(x, weight, bias):
        bf16 = torch.bfloat16
        return _widened_mm_t(x.to(bf16), weight.to(bf16), None if bias is None else bias.to(bf16))
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` whose CPU matmuls take the machine's faster GEMM route (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


@contextmanager
def onednn_gemm(enabled: bool | None = True, min_macs: int = MIN_MACS) -> Iterator[None]:
    """Inside the block, route fp32 CPU linears of at least `min_macs` multiply-adds to oneDNN
    (`enabled=True`), all of them to `F.linear` (`False`) or by the machine's measured route (`None`,
    the default on x86-64), e.g. to compare both on a given CPU. With gradient checkpointing, run the
    backward inside the block too: it replays the forward, which must take the same route."""
    global _onednn_enabled, _min_macs
    previous = _onednn_enabled, _min_macs
    _onednn_enabled, _min_macs = _MEASURED if enabled is None else enabled and _ONEDNN_AVAILABLE, min_macs
    try:
        yield
    finally:
        _onednn_enabled, _min_macs = previous


@contextmanager
def widened_bf16_gemm(enabled: bool | None = True, min_macs: int = MIN_MACS) -> Iterator[None]:
    """Inside the block, run bf16 CPU linears of at least `min_macs` multiply-adds as fp32 GEMMs on widened
    operands (`True`), all of them on PyTorch's bf16 GEMM (`False`), or by the machine's measured route (`None`,
    the default). As `onednn_gemm`, a checkpointed backward must run inside the block too."""
    global _widened_enabled, _widened_min_macs
    previous = _widened_enabled, _widened_min_macs
    _widened_enabled, _widened_min_macs = enabled, min_macs
    try:
        yield
    finally:
        _widened_enabled, _widened_min_macs = previous
