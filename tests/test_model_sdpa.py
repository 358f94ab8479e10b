"""`vivit.model.sdpa`: widened bf16 attention is bf16 attention (checked against softmax(q k^T / sqrt(d)) v written
out in float64), and runs only where its gradient is needed on the widened bf16 route."""

import torch
import torch.nn.functional as F
from conftest import op_calls, tiny_model

from vivit.model import sdpa
from vivit.model.linear import widened_bf16_gemm

OP = "vivit::widened_bf16_sdpa"


def widened_calls(fn) -> int:
    return op_calls(fn, OP)


def attention_reference(q, k, v):
    """Eq. 1's attention in float64 on the bf16 values."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    out = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v
    return out, (q, k, v)


def qkv(shape=(2, 4, 96, 96)):  # 73728 q elements, above MIN_NUMEL
    """bf16 (B, H, N, E) views, strided as the model's (split from one (B, N, 3, H, E) projection)."""
    b, h, n, e = shape
    qkv = torch.randn(b, n, 3, h, e).to(torch.bfloat16).requires_grad_()
    return qkv, [z.transpose(1, 2) for z in qkv.unbind(2)]


def test_widened_attention_is_bf16_attention_forward_and_backward():
    torch.manual_seed(0)
    leaf, (q, k, v) = qkv()
    g = torch.randn(q.shape).to(torch.bfloat16)
    with widened_bf16_gemm(True):
        assert widened_calls(lambda: sdpa.scaled_dot_product_attention(q, k, v)) == 1
        out = sdpa.scaled_dot_product_attention(q, k, v)
    out.backward(g)
    reference, leaves = attention_reference(q, k, v)
    reference.backward(g.double())
    assert out.dtype == leaf.grad.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), reference, rtol=2 ** -7, atol=2e-3)
    grads = leaf.grad.unbind(2)  # dL/dq, dL/dk, dL/dv through the strided views
    for ours, ref in zip(grads, leaves):
        scale = ref.grad.abs().max().item()
        torch.testing.assert_close(ours.transpose(1, 2).double(), ref.grad, rtol=2 ** -6, atol=1e-2 * scale)


def test_widened_and_pytorchs_bf16_attention_agree():
    torch.manual_seed(0)
    _, (q, k, v) = qkv()
    with widened_bf16_gemm(True):
        ours = sdpa.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v), rtol=2 ** -7, atol=1e-2)


def test_pytorchs_kernel_where_no_gradient_dropout_other_dtype_or_the_native_route():
    torch.manual_seed(0)
    _, (q, k, v) = qkv()
    with widened_bf16_gemm(True):
        with torch.no_grad():
            assert widened_calls(lambda: sdpa.scaled_dot_product_attention(q, k, v)) == 0
        assert widened_calls(lambda: sdpa.scaled_dot_product_attention(q.detach(), k.detach(), v.detach())) == 0
        assert widened_calls(lambda: sdpa.scaled_dot_product_attention(q, k, v, dropout_p=0.1)) == 0
        assert widened_calls(lambda: sdpa.scaled_dot_product_attention(q.float(), k.float(), v.float())) == 0
        small = [t[:, :, :2] for t in (q, k, v)]  # under MIN_NUMEL elements
        assert widened_calls(lambda: sdpa.scaled_dot_product_attention(*small)) == 0
    with widened_bf16_gemm(False):
        assert widened_calls(lambda: sdpa.scaled_dot_product_attention(q, k, v)) == 0


def test_model_training_under_bf16_autocast_takes_it(monkeypatch):
    monkeypatch.setattr(sdpa, "MIN_NUMEL", 0)
    torch.manual_seed(0)
    model = tiny_model("fsa")
    video = torch.randn(2, 3, 4, 16, 16)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(video).float().sum().backward()

    with widened_bf16_gemm(True, min_macs=0):
        assert widened_calls(step) == 2 * len(model.encoder.blocks)  # spatial and temporal attention per block


def test_compiles_fullgraph_forward_and_backward():
    torch.manual_seed(0)
    leaf, (q, k, v) = qkv()
    with widened_bf16_gemm(True):
        compiled = torch.compile(sdpa.scaled_dot_product_attention, fullgraph=True, backend="aot_eager")
        out = compiled(q, k, v)
        out.float().sum().backward()
        grad, leaf.grad = leaf.grad, None
        eager = sdpa.scaled_dot_product_attention(q, k, v)
        eager.float().sum().backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(grad, leaf.grad)
