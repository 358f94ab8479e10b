"""The fp32 and bf16 GEMM routes are measured once per machine, cached, deterministic and overridable."""

import json
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import op_calls

from vivit import backends
from vivit.errors import ConfigError
from vivit.model import linear as linear_mod
from vivit.model.linear import Linear, onednn_gemm, widened_bf16_gemm


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("VIVIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(backends.GEMM_ENV, raising=False)
    monkeypatch.delenv(backends.BF16_GEMM_ENV, raising=False)
    monkeypatch.setattr(backends, "CALIBRATION_SHAPE", (64, 32, 48))
    backends.reset()
    yield
    backends.reset()


def _slow(fn, seconds=0.004):
    def slowed(*args):
        time.sleep(seconds)
        return fn(*args)
    return slowed


def test_calibration_takes_onednn_only_where_it_is_faster():
    assert backends.calibrate_gemm(_slow(F.linear))["route"] == "torch"
    assert backends.calibrate_gemm(F.linear, default_linear=_slow(F.linear))["route"] == "onednn"
    # equal speed: not faster by the margin, so PyTorch's own route
    assert backends.calibrate_gemm(_slow(F.linear), default_linear=_slow(F.linear))["route"] == "torch"


def test_route_is_cached_per_machine_and_deterministic(monkeypatch, tmp_path):
    calls = []

    def fake(onednn_linear):
        calls.append(1)
        return {"route": "onednn", "torch": {}, "onednn": {}}

    monkeypatch.setattr(backends, "calibrate_gemm", fake)
    assert backends.gemm_route(F.linear) == "onednn"
    assert backends.gemm_route(F.linear) == "onednn" and len(calls) == 1  # decided once per process
    backends.reset()
    assert backends.gemm_route(F.linear) == "onednn" and len(calls) == 1  # next process: read from the cache
    cache = json.loads((tmp_path / "home" / "backends.json").read_text())
    assert cache[backends.machine_key()]["gemm"] == "onednn"
    assert str(torch.get_num_threads()) in backends.machine_key()


def test_environment_overrides_and_rejects_unknown_routes(monkeypatch):
    monkeypatch.setattr(backends, "calibrate_gemm", lambda *a: pytest.fail("must not calibrate"))
    monkeypatch.setenv(backends.GEMM_ENV, "torch")
    assert backends.gemm_route(F.linear) == "torch"
    backends.reset()
    monkeypatch.setenv(backends.GEMM_ENV, "mkl")
    with pytest.raises(ConfigError, match="VIVIT_GEMM"):
        backends.gemm_route(F.linear)


def test_corrupt_cache_is_measured_again(monkeypatch, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "backends.json").write_text("{not json")
    monkeypatch.setattr(backends, "calibrate_gemm", lambda *a: {"route": "torch"})
    assert backends.gemm_route(F.linear) == "torch"


@pytest.mark.skipif(not linear_mod._ONEDNN_AVAILABLE, reason="PyTorch built without oneDNN")
@pytest.mark.parametrize("route", backends.GEMM_ROUTES)
def test_linear_follows_the_measured_route_with_equal_results(monkeypatch, route):
    monkeypatch.setenv(backends.GEMM_ENV, route)
    layer, x = Linear(32, 48), torch.randn(5, 32, requires_grad=True)
    with onednn_gemm(None, min_macs=0):  # the measured route, as by default on x86-64
        calls = op_calls(lambda: layer(x).sum().backward(), "vivit::onednn_mm_t")
        y = layer(x)
    assert calls == (3 if route == "onednn" else 0)  # forward + both backward GEMMs
    torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)


def test_route_functions_are_marked_as_torch_compiler_marks_a_constant_result():
    """`constant_under_compile` sets what `torch.compiler.assume_constant_result` sets (so `import vivit` need not
    import torch._dynamo); a torch whose decorator works otherwise fails here."""
    from vivit.model import activations

    def probe() -> str:
        return "x"

    marked = torch.compiler.assume_constant_result(probe)
    assert marked is probe and vars(probe) == {"_dynamo_marked_constant": True}
    for route in (linear_mod._measured_route, linear_mod._measured_bf16_route, activations._measured_route):
        assert vars(route).get("_dynamo_marked_constant") is True


def test_a_compiled_linear_calibrates_eagerly_and_reads_the_route_as_a_constant():
    """fullgraph compile of a linear large enough to ask for the route, on a machine without a cached route: the
    calibration runs eagerly (traced, its timing and backward passes would break the graph), and the result
    equals eager."""
    torch._dynamo.reset()
    layer, x = Linear(32, 48), torch.randn(5, 32)
    with onednn_gemm(None, min_macs=0):
        compiled = torch.compile(layer, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), F.linear(x, layer.weight, layer.bias), atol=1e-5, rtol=1e-5)
    assert backends._routes["gemm"] in backends.GEMM_ROUTES


def test_bf16_calibration_takes_widened_only_where_it_is_faster():
    widened = linear_mod._widened_mm_t
    assert backends.calibrate_bf16_gemm(_slow(widened))["route"] == "native"
    result = backends.calibrate_bf16_gemm(widened, native_linear=_slow(widened))
    assert result["route"] == "widened" and set(result["native"]) == {"forward_gflops", "training_gflops"}
    assert backends.calibrate_bf16_gemm(_slow(widened), native_linear=_slow(F.linear))["route"] == "native"


def test_bf16_route_is_cached_beside_the_fp32_route_and_overridable(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(backends, "calibrate_gemm", lambda *a: {"route": "torch"})
    monkeypatch.setattr(backends, "calibrate_bf16_gemm", lambda *a: calls.append(1) or {"route": "widened"})
    assert backends.gemm_route(F.linear) == "torch"
    assert backends.bf16_gemm_route(F.linear) == "widened" and backends.bf16_gemm_route(F.linear) == "widened"
    backends.reset()
    assert backends.bf16_gemm_route(F.linear) == "widened" and len(calls) == 1  # next process: from the cache
    entry = json.loads((tmp_path / "home" / "backends.json").read_text())[backends.machine_key()]
    assert entry["gemm"] == "torch" and entry["bf16_gemm"] == "widened"  # one machine entry, both routes
    backends.reset()
    monkeypatch.setenv(backends.BF16_GEMM_ENV, "native")
    assert backends.bf16_gemm_route(F.linear) == "native" and len(calls) == 1
    backends.reset()
    monkeypatch.setenv(backends.BF16_GEMM_ENV, "emulated")
    with pytest.raises(ConfigError, match="VIVIT_BF16_GEMM.*native.*widened"):
        backends.bf16_gemm_route(F.linear)


@pytest.mark.parametrize("route", backends.BF16_GEMM_ROUTES)
def test_bf16_linear_follows_the_measured_route_with_bf16_results(monkeypatch, route):
    """Under bf16 autocast the route decides the kernel; outputs and gradients are a bf16 GEMM's either way."""
    monkeypatch.setenv(backends.BF16_GEMM_ENV, route)
    torch.manual_seed(0)
    layer, x = Linear(64, 48), torch.randn(2, 5, 64, requires_grad=True)
    def run(routes) -> tuple[torch.Tensor, ...]:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16), routes:
            y = layer(x)
        y.float().square().sum().backward()
        return y, x.grad, layer.weight.grad, layer.bias.grad

    calls = op_calls(lambda: run(widened_bf16_gemm(None, min_macs=0)), "vivit::widened_bf16_mm_t")
    ours = run(widened_bf16_gemm(None, min_macs=0))
    assert calls == (1 if route == "widened" else 0)
    assert ours[0].dtype == torch.bfloat16 and ours[1].dtype == ours[2].dtype == torch.float32
    for a, b in zip(ours, run(widened_bf16_gemm(False))):  # PyTorch's bf16 GEMM
        torch.testing.assert_close(a, b, rtol=1.6e-2, atol=1e-2)  # a bf16 ulp where the sums' order differs
