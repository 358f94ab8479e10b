"""Kernel routes chosen by measurement on the running machine, not assumed per CPU vendor.

The one route today is the fp32 CPU GEMM behind `vivit.model.linear.Linear`: PyTorch's default
(`F.linear`, MKL on x86-64) or oneDNN (which PyTorch ships too). Which is faster depends on the CPU:
on an AMD EPYC (Zen 5) MKL runs AVX2 kernels and oneDNN is about 2x faster; on an Intel Xeon
(Sapphire Rapids) MKL is faster. So the first large fp32 matmul times both routes on a ViViT-B-shaped
linear (forward, and forward + backward) and takes oneDNN only where it wins both by `MARGIN`; the
result is cached per CPU, thread count and torch version in `$VIVIT_HOME/backends.json` (default
`~/.cache/vivit`), so the same machine and settings always take the same route (exact resume holds).
`VIVIT_GEMM=torch|onednn|auto` overrides the choice; `vivit.model.linear.onednn_gemm` switches it
for a block of code.

The second route is the tanh-approximation GELU of the MLP (`vivit.model.activations`): PyTorch's own
kernel (`aten`) or the same formula as x * sigmoid(2z) fused into one loop by `torch.compile`
(`compiled`, about 3x faster on a Sapphire Rapids Xeon, where aten's tanh GELU costs 4x its erf GELU).
It is timed once per machine the same way (forward, and forward + backward, on a ViViT-B MLP
activation), and `compiled` is taken only where it wins both by `MARGIN` and compiles at all (it
needs a C++ compiler); `VIVIT_GELU=aten|compiled|auto` overrides it.

The third is the bf16 CPU GEMM (bf16 autocast, or bf16 weights and inputs): PyTorch's own (`native`: oneDNN's
bf16 kernels, which run on AVX512-BF16 / AMX units where the CPU has them and emulate bf16 with fp32 FMAs
where it has not, about 5x slower than fp32 on an AVX-512 Xeon without them) or one fp32 GEMM on the operands
widened from bf16, rounded back to bf16 (`widened`: the values of a bf16 GEMM with fp32 accumulation, at the
fp32 route's speed). It is timed the same way on a ViViT-B-shaped bf16 linear, `widened` taken only where it
wins forward and training by `MARGIN`; `VIVIT_BF16_GEMM=native|widened|auto` overrides it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from vivit.errors import ConfigError

GEMM_ROUTES = ("torch", "onednn")
GEMM_ENV = "VIVIT_GEMM"
MARGIN = 1.05  # oneDNN must be at least 5 % faster in inference and in training to be chosen
CALIBRATION_SHAPE = (1576, 768, 3072)  # rows x in x out: a ViViT-B MLP layer on 8 x 14 x 14 tokens
_ROUNDS = 7
GELU_ROUTES = ("aten", "compiled")
GELU_ENV = "VIVIT_GELU"
GELU_CALIBRATION_SHAPE = (1576, 3072)  # a ViViT-B MLP activation on 8 x 197 tokens
BF16_GEMM_ROUTES = ("native", "widened")
BF16_GEMM_ENV = "VIVIT_BF16_GEMM"

_routes: dict[str, str] = {}  # decided once per process: "gemm", "gelu", "bf16_gemm"


def vivit_home() -> Path:
    """Where vivit keeps machine-local state: `$VIVIT_HOME`, else `~/.cache/vivit`."""
    return Path(os.environ.get("VIVIT_HOME") or Path.home() / ".cache" / "vivit")


def cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo field (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def machine_key() -> str:
    """CPU identity (vendor, family, model, name), thread count and torch version: what the timing depends on."""
    fields = cpuinfo()
    cpu = " / ".join(fields.get(k, "") for k in ("vendor_id", "cpu family", "model", "model name")).strip(" /")
    return f"{cpu or platform.processor() or platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def cpu_flags() -> frozenset[str]:
    """The ISA flags /proc/cpuinfo lists (empty where there is none); a hypervisor may hide some."""
    return frozenset(cpuinfo().get("flags", "").split())


def has_bf16_units() -> bool:
    """Whether bf16 matmuls run on hardware: not an x86-64 CPU, or one listing AVX512-BF16 or AMX-BF16.
    Without them oneDNN emulates bf16 with fp32 FMAs (3-4x slower than fp32 on an AVX-512 Xeon)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return True
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def _with_autograd(calibrate: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Calibrations time backward passes too: run them with autograd on and autocast off, whatever the
    context of the first call that needs a route (an inference forward under `no_grad`, say)."""
    def calibrated(*args: Any, **kwargs: Any) -> dict[str, Any]:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast("cpu", enabled=False):
            return calibrate(*args, **kwargs)
    return calibrated


def _seconds(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _best_times(routes: dict[str, Callable[..., Any]], *args: Any,
                train: Callable[[torch.Tensor], Any]) -> dict[tuple[str, str], float]:
    """Best of `_ROUNDS` seconds per (route, "forward" / "training"): `fn(*args)` under `no_grad`, and
    `train(fn(*args))`; routes interleaved round by round (so a busy machine slows both alike)."""
    best = {(route, metric): float("inf") for route in routes for metric in ("forward", "training")}
    for round_ in range(_ROUNDS + 1):  # round 0 warms up (first-touch allocations, kernel selection)
        for route, fn in routes.items():
            with torch.no_grad():
                forward = _seconds(lambda: fn(*args))
            training = _seconds(lambda: train(fn(*args)))
            if round_ > 0:
                best[route, "forward"] = min(best[route, "forward"], forward)
                best[route, "training"] = min(best[route, "training"], training)
    return best


def _calibrate_linear(routes: dict[str, Callable[..., torch.Tensor]], dtype: torch.dtype) -> dict[str, Any]:
    """GFLOP/s of each linear on a `CALIBRATION_SHAPE` matmul in `dtype`, forward alone and forward + backward,
    interleaved round by round, best of `_ROUNDS`; "route" is the second only where it wins both by `MARGIN`."""
    rows, k, n = CALIBRATION_SHAPE
    generator = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(shape, generator=generator).to(dtype).requires_grad_() for shape in ((rows, k), (n, k), (n,)))
    best = _best_times(routes, x, w, b, train=lambda y: y.float().sum().backward())
    flops = {"forward": 2 * rows * k * n, "training": 3 * 2 * rows * k * n}
    result: dict[str, Any] = {route: {f"{m}_gflops": round(flops[m] / best[route, m] / 1e9, 1) for m in flops}
                              for route in routes}
    default, other = routes
    result["route"] = other if all(best[default, m] >= MARGIN * best[other, m] for m in flops) else default
    return result


@_with_autograd
def calibrate_gemm(onednn_linear: Callable[..., torch.Tensor],
                   default_linear: Callable[..., torch.Tensor] = F.linear) -> dict[str, Any]:
    """Time `default_linear` (PyTorch's route) and `onednn_linear` on fp32 `CALIBRATION_SHAPE` (`_calibrate_linear`)."""
    return _calibrate_linear({"torch": default_linear, "onednn": onednn_linear}, torch.float32)


@_with_autograd
def calibrate_bf16_gemm(widened_linear: Callable[..., torch.Tensor],
                        native_linear: Callable[..., torch.Tensor] = F.linear) -> dict[str, Any]:
    """Time `native_linear` (PyTorch's bf16 GEMM) and `widened_linear` on bf16 `CALIBRATION_SHAPE` (`_calibrate_linear`)."""
    return _calibrate_linear({"native": native_linear, "widened": widened_linear}, torch.bfloat16)


@_with_autograd
def calibrate_gelu(compiled: Callable[[torch.Tensor], torch.Tensor],
                   eager: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """Time `eager` (aten's tanh GELU) and `compiled` on `GELU_CALIBRATION_SHAPE` in fp32, forward alone and
    forward + backward, interleaved round by round, best of `_ROUNDS`; a compile failure chooses `aten`."""
    x = torch.randn(GELU_CALIBRATION_SHAPE, generator=torch.Generator().manual_seed(0), requires_grad=True)
    grad = torch.ones_like(x)
    try:
        with torch.no_grad():
            compiled(x)
        compiled(x).backward(grad)
    except Exception as error:  # noqa: BLE001 - no C++ compiler, unsupported platform: keep PyTorch's kernel
        return {"route": "aten", "error": f"{type(error).__name__}: {error}"[:200]}
    routes = {"aten": eager, "compiled": compiled}
    best = _best_times(routes, x, train=lambda y: y.backward(grad))
    result: dict[str, Any] = {route: {f"{m}_ms": round(1e3 * best[route, m], 3) for m in ("forward", "training")}
                              for route in routes}
    faster = all(best["aten", m] >= MARGIN * best["compiled", m] for m in ("forward", "training"))
    result["route"] = "compiled" if faster else "aten"
    return result


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Merge fields into one machine's entry; an unwritable cache only costs a calibration in the next process."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        previous = data.get(key)
        data[key] = {**(previous if isinstance(previous, dict) else {}), **entry}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def _route(field: str, env: str, choices: tuple[str, ...], calibrate: Callable[[], dict[str, Any]]) -> str:
    """`env` if set, else this machine's cached `field`, else a fresh calibration (cached); once per process."""
    if field not in _routes:
        forced = os.environ.get(env, "auto").strip().lower() or "auto"
        if forced not in (*choices, "auto"):
            raise ConfigError(f"{env}={forced!r} is not allowed; choose one of {[*choices, 'auto']}")
        if forced != "auto":
            _routes[field] = forced
        else:
            path, key = vivit_home() / "backends.json", machine_key()
            entry = _read_cache(path).get(key)
            if not (isinstance(entry, dict) and entry.get(field) in choices):
                measured = calibrate()
                entry = {field: measured.pop("route"), f"{field}_timings": measured,
                         f"{field}_measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                _write_cache(path, key, entry)
            _routes[field] = entry[field]
    return _routes[field]


def gemm_route(onednn_linear: Callable[..., torch.Tensor]) -> str:
    """The fp32 CPU GEMM route of this machine: `VIVIT_GEMM`, else the cached or a fresh calibration."""
    return _route("gemm", GEMM_ENV, GEMM_ROUTES, lambda: calibrate_gemm(onednn_linear))


def bf16_gemm_route(widened_linear: Callable[..., torch.Tensor]) -> str:
    """The bf16 CPU GEMM route of this machine: `VIVIT_BF16_GEMM`, else the cached or a fresh calibration."""
    return _route("bf16_gemm", BF16_GEMM_ENV, BF16_GEMM_ROUTES, lambda: calibrate_bf16_gemm(widened_linear))


def gelu_route(compiled: Callable[[torch.Tensor], torch.Tensor], eager: Callable[[torch.Tensor], torch.Tensor]) -> str:
    """The CPU tanh-GELU kernel of this machine: `VIVIT_GELU`, else the cached or a fresh calibration."""
    return _route("gelu", GELU_ENV, GELU_ROUTES, lambda: calibrate_gelu(compiled, eager))


def constant_under_compile(fn: Callable[[], str]) -> Callable[[], str]:
    """Mark a route function as `torch.compiler.assume_constant_result` does (called eagerly by a tracing
    `torch.compile`, its result a constant of the graph), without importing `torch._dynamo`, which that call
    imports: 1-1.4 s of every `import vivit` on a 2-core Xeon. The attribute is the one the decorator sets
    (torch/_dynamo/decorators.py); `tests/test_backends.py` checks that the two agree."""
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


def reset() -> None:
    """Forget this process's decisions (the next large matmul or GELU reads the cache or calibrates again)."""
    _routes.clear()
