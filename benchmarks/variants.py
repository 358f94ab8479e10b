"""Our Table-2 row: forward latency of the four variants and the average-pool baseline at one size,
next to the paper's TPU-v3 runtimes, with model FLOP utilisation against this machine's fp32 GEMM peak.

MFU = (forward FLOPs from `vivit.profile.count_flops`) / median forward time / GEMM peak, where the
peak is the faster of two large square fp32 GEMMs timed in the same rounds as the models: PyTorch's own
`torch.matmul` (MKL) and oneDNN's (the kernel `vivit.model.linear` uses); in bf16, a bf16 `torch.matmul`
(oneDNN already) and the widened route's fp32 GEMM on bf16 operands (`vivit.model.linear.widened_bf16_gemm`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

import timing
import vivit
from timing import forward_fn, interleave
from vivit.model.linear import linear, onednn_gemm, widened_bf16_gemm
from vivit.profile import PAPER_TABLE2, count_flops, count_parameters


def gemm_fns(n: int) -> tuple[dict[str, Callable[[], torch.Tensor]], int]:
    """An (n x n) @ (n x n) matmul in the process's precision, each way it can run, and its FLOP count (2 n^3)."""
    if timing.precision == "bf16":
        a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)

        def widened() -> torch.Tensor:
            with widened_bf16_gemm(True):
                return linear(a, b)

        return {"torch.matmul": lambda: torch.matmul(a, b), "widened": widened}, 2 * n**3
    a, b = torch.randn(n, n), torch.randn(n, n)

    def onednn() -> torch.Tensor:
        with onednn_gemm(True, min_macs=0):  # also where it is not the default (non-x86 CPUs)
            return linear(a, b)

    return {"torch.matmul": lambda: torch.matmul(a, b), "oneDNN": onednn}, 2 * n**3


def compare(size: str, rounds: int, gemm_n: int = 4096, **overrides) -> dict:
    """Interleaved forwards of the five Table-2 models (FE temporal depth 4) and the GEMM."""
    models = {name: vivit.create_model(name.replace("-b-", f"-{size}-"), **overrides) for name in PAPER_TABLE2}
    inputs = {name: torch.randn(1, m.config.in_channels, m.config.num_frames, *m.config.image_size) for name, m in models.items()}
    contenders, gemm_flops = gemm_fns(gemm_n)
    gemms = list(contenders)
    contenders.update({name: forward_fn(m, lambda m=m, x=inputs[name]: m(x)) for name, m in models.items()})
    times = interleave(contenders, rounds)
    gemm_gflops = {g: statistics.median(gemm_flops / (t / 1e3) for t in times[g]) / 1e9 for g in gemms}
    peak = max(gemm_gflops.values()) * 1e9
    rows = []
    for name, m in models.items():
        flops = count_flops(m.config)
        ms = statistics.median(times[name])
        rows.append(dict(preset=name.replace("-b-", f"-{size}-"), model=PAPER_TABLE2[name]["name"],
                         params_m=count_parameters(m) / 1e6, gflops=flops / 1e9, latency_ms=ms,
                         gflops_per_s=flops / ms / 1e6, mfu=flops / (ms / 1e3) / peak,
                         paper_runtime_ms=PAPER_TABLE2[name]["runtime_ms"]))
    return {"gemm_n": gemm_n, "gemm_gflops": gemm_gflops, "gemm_peak_gflops": peak / 1e9, "rows": rows}
