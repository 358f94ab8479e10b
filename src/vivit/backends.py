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

_gemm_route: str | None = None  # decided once per process


def vivit_home() -> Path:
    """Where vivit keeps machine-local state: `$VIVIT_HOME`, else `~/.cache/vivit`."""
    return Path(os.environ.get("VIVIT_HOME") or Path.home() / ".cache" / "vivit")


def machine_key() -> str:
    """CPU identity (vendor, family, model, name), thread count and torch version: what the timing depends on."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in ("vendor_id", "cpu family", "model", "model name") and name not in fields:
                fields[name] = value.strip()
    except OSError:
        pass
    cpu = " / ".join(fields.get(k, "") for k in ("vendor_id", "cpu family", "model", "model name")).strip(" /")
    return f"{cpu or platform.processor() or platform.machine()} | {torch.get_num_threads()} threads | torch {torch.__version__}"


def _seconds(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def calibrate_gemm(onednn_linear: Callable[..., torch.Tensor],
                   default_linear: Callable[..., torch.Tensor] = F.linear) -> dict[str, Any]:
    """Time `default_linear` (PyTorch's route) and `onednn_linear` on `CALIBRATION_SHAPE`, forward alone and forward + backward:
    routes interleaved round by round (so a busy machine slows both alike), best of `_ROUNDS` each."""
    rows, k, n = CALIBRATION_SHAPE
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, k, generator=generator, requires_grad=True)
    w = torch.randn(n, k, generator=generator, requires_grad=True)
    b = torch.randn(n, generator=generator, requires_grad=True)
    routes = {"torch": default_linear, "onednn": onednn_linear}
    best = {(route, metric): float("inf") for route in routes for metric in ("forward", "training")}
    for round_ in range(_ROUNDS + 1):  # round 0 warms up (first-touch allocations, kernel selection)
        for route, fn in routes.items():
            with torch.no_grad():
                forward = _seconds(lambda: fn(x, w, b))
            training = _seconds(lambda: fn(x, w, b).sum().backward())
            if round_ > 0:
                best[route, "forward"] = min(best[route, "forward"], forward)
                best[route, "training"] = min(best[route, "training"], training)
    flops = {"forward": 2 * rows * k * n, "training": 3 * 2 * rows * k * n}
    result: dict[str, Any] = {route: {f"{m}_gflops": round(flops[m] / best[route, m] / 1e9, 1) for m in flops}
                              for route in routes}
    faster = all(best["torch", m] >= MARGIN * best["onednn", m] for m in flops)
    result["route"] = "onednn" if faster else "torch"
    return result


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Add one machine's entry; an unwritable cache only costs a calibration in the next process."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def gemm_route(onednn_linear: Callable[..., torch.Tensor]) -> str:
    """The fp32 CPU GEMM route of this machine: `VIVIT_GEMM`, else the cached or a fresh calibration."""
    global _gemm_route
    if _gemm_route is None:
        forced = os.environ.get(GEMM_ENV, "auto").strip().lower() or "auto"
        if forced not in (*GEMM_ROUTES, "auto"):
            raise ConfigError(f"{GEMM_ENV}={forced!r} is not allowed; choose one of {[*GEMM_ROUTES, 'auto']}")
        if forced != "auto":
            _gemm_route = forced
        else:
            path, key = vivit_home() / "backends.json", machine_key()
            entry = _read_cache(path).get(key)
            if not (isinstance(entry, dict) and entry.get("gemm") in GEMM_ROUTES):
                measured = calibrate_gemm(onednn_linear)
                entry = {"gemm": measured.pop("route"), **measured,
                         "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                _write_cache(path, key, entry)
            _gemm_route = entry["gemm"]
    return _gemm_route


def reset() -> None:
    """Forget this process's decisions (the next large matmul reads the cache or calibrates again)."""
    global _gemm_route
    _gemm_route = None
