"""Interleaved timing: contenders run in turn, round after round, so a noisy shared machine slows
them alike; we report per-contender medians and the median of per-round ratios."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from vivit.model.linear import onednn_gemm


def setup(threads: int) -> None:
    """Same numerics settings for every contender in the process."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def interleave(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds per call of each contender; each round runs all of them, order reversed every
    other round so slow drifts of the machine cancel."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            elapsed = (time.perf_counter() - start) * 1e3
            if r >= warmup:
                times[name].append(elapsed)
    return times


def speedup(ours: list[float], theirs: list[float]) -> float:
    """Median over rounds of theirs / ours (> 1: ours is faster)."""
    return statistics.median(t / o for o, t in zip(ours, theirs))


def forward_fn(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One inference-mode forward."""
    model.eval()

    def run() -> None:
        with torch.inference_mode():
            forward()

    return run


def train_step_fn(model: torch.nn.Module, forward: Callable[[], torch.Tensor], target: torch.Tensor) -> Callable[[], None]:
    """One training step: forward, cross-entropy, backward, plain SGD step, gradients freed."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run() -> None:
        loss = torch.nn.functional.cross_entropy(forward(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def default_gemm(fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` with our linears on PyTorch's own fp32 GEMM (MKL) instead of oneDNN: shows what the
    oneDNN routing (`vivit.model.linear`) contributes."""

    def run() -> None:
        with onednn_gemm(False):
            fn()

    return run


def summarise(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items()}
