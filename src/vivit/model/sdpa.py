"""Scaled dot-product attention, softmax(q k^T / sqrt(d)) v (Sec. 3.1), on the machine's faster kernel.

`F.scaled_dot_product_attention` everywhere, with one exception. PyTorch's CPU flash-attention kernel computes
its bf16 products on oneDNN's bf16 GEMMs, which a CPU without AVX512-BF16 / AMX emulates; its backward then runs
2-2.7x slower in bf16 than in fp32 (ViViT-B shapes, Xeon model 207). So where bf16 matmuls take the widened
route (`vivit.model.linear.bf16_route`), bf16 CPU attention whose gradient is needed runs the fp32 flash kernel,
forward and backward, on q, k, v widened from bf16, and rounds its outputs to bf16; it saves the bf16 inputs and
output for the backward, as the bf16 kernel does. Attention without gradient keeps PyTorch's kernel: its bf16
forward is as fast as the widened one at 1568 tokens and faster at 197.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vivit.model.linear import bf16_route, tracing_or_transforming

_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_FLASH_BACKWARD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
MIN_NUMEL = 1 << 16  # q elements below which the casts' per-call cost outweighs the faster kernel


@torch.library.custom_op("vivit::widened_bf16_sdpa", mutates_args=())
def _widened_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, N, E) bf16 q, k, v -> bf16 output (contiguous) and fp32 log-sum-exp (B, H, N) of the fp32 kernel."""
    out, logsumexp = _FLASH(q.float(), k.float(), v.float())
    return out.to(q.dtype, memory_format=torch.contiguous_format), logsumexp


@_widened_sdpa.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty((*q.shape[:-1], v.shape[-1])), q.new_empty(q.shape[:-1], dtype=torch.float32)


def _setup_context(ctx, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(*inputs, *output)


def _backward(ctx, grad: torch.Tensor, _grad_logsumexp: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    q, k, v, out, logsumexp = ctx.saved_tensors
    grads = _FLASH_BACKWARD(grad.float(), q.float(), k.float(), v.float(), out.float(), logsumexp, 0.0, False)
    return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))


_widened_sdpa.register_autograd(_backward, setup_context=_setup_context)


def _use_widened(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> bool:
    return (
        dropout_p == 0.0
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in (q, k, v))
        and all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in (q, k, v))
        and q.numel() >= MIN_NUMEL
        and not tracing_or_transforming()
        and bf16_route() == "widened"
    )


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 dropout_p: float = 0.0) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, dropout_p)` over (B, H, N, E), on the faster kernel (see above)."""
    if _use_widened(q, k, v, dropout_p):
        return _widened_sdpa(q, k, v)[0]
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
