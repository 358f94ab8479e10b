"""`vivit.model.linear`: oneDNN fp32 CPU linears equal `F.linear` forward and backward, and fall back
to `F.linear` wherever oneDNN is not the right kernel; widened bf16 linears are bf16 GEMMs."""

import pytest
import torch
import torch.nn.functional as F
from conftest import VARIANTS, op_calls, tiny_model

from vivit.model import linear as lin
from vivit.model.linear import Linear, onednn_gemm, widened_bf16_gemm

pytestmark = pytest.mark.skipif(not lin._ONEDNN_AVAILABLE, reason="this PyTorch build has no oneDNN")
OP = "vivit::onednn_mm_t"
WIDENED_OP = "vivit::widened_bf16_mm_t"


@pytest.fixture(autouse=True)
def any_size():
    """The tests' matmuls are far below `MIN_MACS`: route them to oneDNN all the same."""
    with onednn_gemm(True, min_macs=0):
        yield


def grads_of(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.detach().requires_grad_()
    y = layer(x)
    (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    out = (y.detach(), x.grad, layer.weight.grad, layer.bias.grad if layer.bias is not None else torch.zeros(()))
    layer.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (2, 5, 7), (2, 3, 5, 7)])
def test_matches_f_linear_forward_and_backward(shape, bias):
    torch.manual_seed(0)
    layer = Linear(7, 6, bias=bias)
    x = torch.randn(shape)
    ours = grads_of(layer, x)
    with onednn_gemm(False):
        reference = grads_of(layer, x)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_non_contiguous_input_and_weight():
    torch.manual_seed(0)
    x = torch.randn(7, 4, 3).transpose(0, 2)  # (3, 4, 7), strided
    weight = torch.randn(7, 6).t()  # (6, 7), strided
    bias = torch.randn(6)
    torch.testing.assert_close(lin.linear(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-6)


def test_runs_on_onednn_only_for_fp32_cpu_without_autocast():
    layer = Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert op_calls(lambda: layer(x), OP) == 1
        with onednn_gemm(False):
            assert op_calls(lambda: layer(x), OP) == 0
        with torch.autocast("cpu", dtype=torch.bfloat16), widened_bf16_gemm(False):
            assert op_calls(lambda: layer(x), OP) == 0  # PyTorch's bf16 GEMM
            assert layer(x).dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16), widened_bf16_gemm(True, min_macs=0):
            assert op_calls(lambda: layer(x), OP) == 1  # the fp32 GEMM of the widened bf16 route
            assert layer(x).dtype == torch.bfloat16
        with torch.autocast("cpu", dtype=torch.bfloat16), widened_bf16_gemm(True, min_macs=3 * 8 * 4 + 1):
            assert op_calls(lambda: layer(x), OP) == 0  # below the size where widening pays off
        assert op_calls(lambda: layer(torch.randn(0, 8)), OP) == 0  # empty batch
        with onednn_gemm(True, min_macs=3 * 8 * 4 + 1):
            assert op_calls(lambda: layer(x), OP) == 0  # below the size where oneDNN pays off
        with onednn_gemm(True, min_macs=3 * 8 * 4):
            assert op_calls(lambda: layer(x), OP) == 1
        assert op_calls(lambda: Linear(8, 4).double()(x.double()), OP) == 0
    x.requires_grad_()
    assert op_calls(lambda: layer(x).sum().backward(), OP) == 3  # forward, dL/dx, dL/dW


@pytest.mark.parametrize("bias", ["strided", "expanded", "scalar", "2-d"])
def test_biases_onednn_cannot_read_fall_back_to_f_linear(bias):
    x, weight = torch.randn(3, 8), torch.randn(4, 8)
    bias = {"strided": torch.randn(8)[::2], "expanded": torch.randn(1).expand(4), "scalar": torch.tensor(0.5),
            "2-d": torch.randn(3, 4)}[bias]
    with torch.no_grad():
        assert op_calls(lambda: lin.linear(x, weight, bias), OP) == 0
    torch.testing.assert_close(lin.linear(x, weight, bias), F.linear(x, weight, bias))


def test_frozen_weight_saves_no_activation_for_backward():
    layer = Linear(8, 4).requires_grad_(False)
    x = torch.randn(5, 8, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        y = layer(x)
    assert saved == [layer.weight.shape]
    y.sum().backward()
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(5, 8))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated, still used
def test_torch_func_and_jit_trace_take_f_linear():
    layer = Linear(8, 4)
    x = torch.randn(3, 8)
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p):
        return torch.func.functional_call(layer, p, (x,)).square().sum()

    grads = torch.func.grad(loss)(params)
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        torch.testing.assert_close(grads[name], p.grad)
    tangent = torch.randn(3, 8)
    _, jvp = torch.func.jvp(layer, (x,), (tangent,))
    torch.testing.assert_close(jvp, tangent @ layer.weight.detach().t())
    graph = str(torch.jit.trace(layer, x).graph)
    assert "aten::linear" in graph and "vivit::" not in graph


def test_whole_model_uses_onednn_and_matches_default_gemm():
    model = tiny_model("fsa").eval()
    torch.nn.init.normal_(model.head.weight, std=0.1)
    video = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        linears = sum(isinstance(m, Linear) for m in model.modules()) + 1  # + the tokeniser's, on the tubes
        assert op_calls(lambda: model(video), OP) == linears
        ours = model(video)
        with onednn_gemm(False):
            torch.testing.assert_close(ours, model(video), rtol=1e-5, atol=1e-6)
            assert op_calls(lambda: model(video), OP) == 0


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("variant", VARIANTS)
def test_model_gradients_match_default_gemm(variant, checkpointing):
    torch.manual_seed(0)
    model = tiny_model(variant)
    model.set_grad_checkpointing(checkpointing)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    video = torch.randn(2, 3, 4, 16, 16)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(video).square().sum().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    ours = grads()
    with onednn_gemm(False):
        reference = grads()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-5, msg=name)


def test_compile_fullgraph_forward_and_backward():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(Linear(8, 16), torch.nn.GELU(), Linear(16, 4))
    x = torch.randn(2, 3, 8, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    y = compiled(x)
    y.square().sum().backward()
    grad_compiled = x.grad.clone()
    x.grad = None
    torch.testing.assert_close(y, layer(x))
    layer(x).square().sum().backward()
    torch.testing.assert_close(grad_compiled, x.grad)


def test_default_threshold_keeps_small_models_on_f_linear():
    with onednn_gemm(True):
        model = tiny_model("st").eval()
        with torch.no_grad():
            assert op_calls(lambda: model(torch.randn(1, 3, 4, 16, 16)), OP) == 0
        big = Linear(256, 256)
        with torch.no_grad():
            assert op_calls(lambda: big(torch.randn(256, 256)), OP) == 1  # 2^24 multiply-adds


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter, as `vivit export` uses
def test_exported_graphs_hold_a_plain_linear(tmp_path):
    import onnx

    layer = Linear(8, 4)
    x = torch.randn(2, 8)
    torch.onnx.export(layer, (x,), str(tmp_path / "l.onnx"), dynamo=False)
    assert [node.op_type for node in onnx.load(str(tmp_path / "l.onnx")).graph.node] == ["Gemm"]
    graph = torch.export.export(layer, (x,)).graph
    assert [n.target for n in graph.nodes if n.op == "call_function"] == [torch.ops.aten.linear.default]


def test_state_dict_is_nn_linear_s():
    layer = Linear(3, 2)
    assert isinstance(layer, torch.nn.Linear)
    assert list(layer.state_dict()) == ["weight", "bias"]


def bf16_gemm_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """A bf16 GEMM written out: operands rounded to bf16, products summed in float64, the result rounded to bf16."""
    def rounded(t):
        return t.to(torch.bfloat16).double()
    y = rounded(x) @ rounded(w).T
    return (y if b is None else y + rounded(b)).to(torch.bfloat16)


def close_in_bf16(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to one bf16 rounding step (where the fp32 and float64 sums round to neighbouring bf16 values)."""
    torch.testing.assert_close(a.float(), b.float(), rtol=2 ** -7, atol=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_widened_bf16_linear_is_a_bf16_gemm_forward_and_backward(bias):
    """bf16 weights and inputs (as `--precision bf16` casts them once): outputs and all three gradients are
    those of bf16 GEMMs, checked against `bf16_gemm_reference`, not against our own kernel."""
    torch.manual_seed(0)
    layer = Linear(48, 40, bias=bias).to(torch.bfloat16)
    x = torch.randn(3, 7, 48).to(torch.bfloat16).requires_grad_()
    g = torch.randn(3, 7, 40).to(torch.bfloat16)
    with widened_bf16_gemm(True, min_macs=0):
        y = layer(x)
        y.backward(g)
    assert y.dtype == x.grad.dtype == layer.weight.grad.dtype == torch.bfloat16
    w = layer.weight.detach()
    close_in_bf16(y, bf16_gemm_reference(x.detach(), w, layer.bias.detach() if bias else None))
    close_in_bf16(x.grad, bf16_gemm_reference(g, w.T))  # dL/dx = g W
    close_in_bf16(layer.weight.grad, bf16_gemm_reference(g.flatten(0, 1).T, x.detach().flatten(0, 1).T))  # g^T x
    if bias:
        close_in_bf16(layer.bias.grad, g.double().sum((0, 1)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_whole_model_under_bf16_autocast_takes_the_widened_route_as_pytorchs_bf16(variant):
    torch.manual_seed(0)
    model = tiny_model(variant)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    video = torch.randn(2, 3, 4, 16, 16)

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(video)
        logits.float().square().sum().backward()
        return logits.float(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    with widened_bf16_gemm(True, min_macs=0):
        counted = op_calls(run, WIDENED_OP)
        ours, ours_grads = run()
    with widened_bf16_gemm(False):
        assert op_calls(run, WIDENED_OP) == 0
        native, native_grads = run()
    linears = sum(isinstance(m, Linear) for m in model.modules()) + 1  # + the tokeniser's
    assert counted == linears  # each forward GEMM (the backward's run inside its autograd node)
    torch.testing.assert_close(ours, native, rtol=0.05, atol=0.05)  # bf16 roundings compound over the blocks
    assert ours_grads.keys() == native_grads.keys()
    for name, grad in native_grads.items():
        torch.testing.assert_close(ours_grads[name], grad, rtol=0.1, atol=0.05 * grad.abs().max().item() + 1e-3,
                                   msg=name)


def test_widened_bf16_route_compiles_fullgraph_under_autocast():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(Linear(8, 16), torch.nn.GELU(), Linear(16, 4))
    x = torch.randn(2, 3, 8, requires_grad=True)
    # Inductor fuses the GELU backward into the backward's widening cast and so skips eager's bf16 rounding of
    # that gradient; emulating the casts makes the compiled graph round where eager does, so the two agree exactly.
    with (widened_bf16_gemm(True, min_macs=0), torch.autocast("cpu", dtype=torch.bfloat16),
          torch._inductor.config.patch(emulate_precision_casts=True)):
        compiled = torch.compile(layer, fullgraph=True)
        y = compiled(x)
        y.float().square().sum().backward()
        grad_compiled = x.grad.clone()
        x.grad = None
        eager = layer(x)
        eager.float().square().sum().backward()
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, eager)
    torch.testing.assert_close(grad_compiled, x.grad)
