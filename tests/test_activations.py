"""The tanh-approximation GELU: the sigmoid form equals PyTorch's kernel, its compiled kernel is autograd-correct,
and the MLP takes the kernel `vivit.backends.gelu_route` measured faster."""

import json
import time

import pytest
import torch
import torch.nn.functional as F

from vivit import backends
from vivit.model import activations
from vivit.model.blocks import Mlp


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("VIVIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(backends.GELU_ENV, raising=False)
    monkeypatch.setattr(backends, "GELU_CALIBRATION_SHAPE", (64, 48))
    backends.reset()
    yield
    backends.reset()


def test_sigmoid_form_equals_pytorch_tanh_gelu():
    x = torch.linspace(-12, 12, 200_001)
    reference = F.gelu(x.double(), approximate="tanh")
    ours, theirs = activations.gelu_tanh_formula(x).double(), F.gelu(x, approximate="tanh").double()
    # as close to the float64 value as PyTorch's own fp32 kernel: a few ulp
    assert (ours - reference).abs().max() <= 2 * (theirs - reference).abs().max() + 1e-7
    torch.testing.assert_close(ours, theirs, rtol=2e-7, atol=6e-7)


def test_compiled_kernels_gradcheck_float64():
    x = (torch.randn(3, 7, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(activations.compiled_gelu_tanh(), (x,))
    assert torch.autograd.gradgradcheck(activations.compiled_gelu_tanh(), (x,))


def test_compiled_route_keeps_retained_graphs(monkeypatch):
    monkeypatch.setenv(backends.GELU_ENV, "compiled")
    monkeypatch.setattr(activations, "MIN_NUMEL", 0)
    x = torch.randn(4, 8, requires_grad=True)
    y = activations.gelu_tanh(x).sum()
    (first,) = torch.autograd.grad(y, x, retain_graph=True)
    (second,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(first, torch.autograd.grad(F.gelu(x, approximate="tanh").sum(), x)[0], rtol=1e-5, atol=1e-6)


def _mlp_outputs(monkeypatch, route):
    monkeypatch.setenv(backends.GELU_ENV, route)
    monkeypatch.setattr(activations, "MIN_NUMEL", 0)
    backends.reset()
    calls = []
    kernel = activations.compiled_gelu_tanh()
    monkeypatch.setattr(activations, "compiled_gelu_tanh", lambda: (lambda x: calls.append(1) or kernel(x)))
    torch.manual_seed(0)
    mlp, x = Mlp(16, 64), torch.randn(2, 9, 16, requires_grad=True)
    y = mlp(x)
    (y * torch.linspace(-1, 1, 16)).sum().backward()
    return len(calls), y.detach(), x.grad, mlp.fc1.weight.grad


def test_mlp_follows_the_measured_route_with_equal_results(monkeypatch):
    calls_compiled, *compiled = _mlp_outputs(monkeypatch, "compiled")
    calls_aten, *aten = _mlp_outputs(monkeypatch, "aten")
    assert calls_compiled == 1 and calls_aten == 0
    for a, b in zip(compiled, aten):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _slow(fn, seconds=0.02):  # well above a loaded machine's scheduling delays
    def slowed(*args):
        time.sleep(seconds)
        return fn(*args)
    return slowed


def test_calibration_takes_the_compiled_kernel_only_where_faster_and_caches_it(tmp_path):
    formula = activations.gelu_tanh_formula
    assert backends.calibrate_gelu(_slow(formula), F.gelu)["route"] == "aten"
    assert backends.calibrate_gelu(formula, _slow(F.gelu))["route"] == "compiled"

    def broken(x):
        raise RuntimeError("no C++ compiler")
    assert backends.calibrate_gelu(broken, F.gelu)["route"] == "aten"
    assert backends.gelu_route(formula, _slow(F.gelu)) == "compiled"
    backends.reset()
    assert backends.gelu_route(lambda x: pytest.fail("must not calibrate again"), F.gelu) == "compiled"
    entry = json.loads((tmp_path / "home" / "backends.json").read_text())[backends.machine_key()]
    assert entry["gelu"] == "compiled" and "compiled" in entry["gelu_timings"]


def test_gelu_environment_override_is_checked(monkeypatch):
    monkeypatch.setenv(backends.GELU_ENV, "tanh")
    with pytest.raises(backends.ConfigError, match="VIVIT_GELU"):
        backends.gelu_route(activations.gelu_tanh_formula, F.gelu)


def test_calibration_from_an_inference_forward_still_times_the_backward(monkeypatch):
    monkeypatch.setattr(backends, "CALIBRATION_SHAPE", (64, 32, 48))
    formula = activations.gelu_tanh_formula
    with torch.inference_mode():  # the first large GELU may come from `vivit predict`
        measured = backends.calibrate_gelu(formula, _slow(F.gelu))
    assert measured["route"] == "compiled" and "error" not in measured
    with torch.no_grad():
        assert backends.calibrate_gemm(F.linear, default_linear=_slow(F.linear))["route"] == "onednn"
