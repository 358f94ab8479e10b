"""Interleaved timing: contenders run in turn, round after round, so a noisy shared machine slows
them alike; we report per-contender medians and the median of per-round ratios."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from vivit.allocator import keep_freed_memory
from vivit.model.linear import onednn_gemm, widened_bf16_gemm


PRECISIONS = ("fp32", "bf16")
precision = "fp32"  # of every forward and training step timed in this process; set by `setup`


def setup(threads: int, dtype: str = "fp32") -> None:
    """Same settings for every contender in the process: threads, denormals, the allocator, and fp32 or
    bf16 autocast (matmuls and attention in bf16, the rest in fp32, as `run.precision=bf16` trains)."""
    global precision
    if dtype not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {dtype!r}")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    keep_freed_memory()  # as the vivit commands run (vivit.allocator); for every contender of the process
    precision = dtype


def autocast() -> contextlib.AbstractContextManager:
    """The process's precision as a context: bf16 CPU autocast, or nothing for fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


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
        with torch.inference_mode(), autocast():
            forward()

    return run


def train_step_fn(model: torch.nn.Module, forward: Callable[[], torch.Tensor], target: torch.Tensor) -> Callable[[], None]:
    """One training step: forward, cross-entropy, backward, plain SGD step, gradients freed."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run() -> None:
        with autocast():
            loss = torch.nn.functional.cross_entropy(forward(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def our_contenders(fn: Callable[[], None]) -> dict[str, Callable[[], None]]:
    """Our contender, and the same call with our linears on PyTorch's own GEMM, whatever route `vivit.backends`
    measured: MKL in fp32 (`onednn_gemm(False)`), its bf16 kernel in bf16 (`widened_bf16_gemm(False)`). It shows
    what the routing (`vivit.model.linear`) contributes, and that it never makes our model slower."""
    default = onednn_gemm if precision == "fp32" else widened_bf16_gemm

    def default_gemm() -> None:
        with default(False):
            fn()

    return {"ours": fn, "ours, PyTorch GEMM": default_gemm}


def forward_and_train(models: dict[str, tuple[torch.nn.Module, Callable[[], torch.Tensor]]], target: torch.Tensor,
                      rounds: int, train_rounds: int) -> dict[str, dict[str, list[float]]]:
    """Interleaved ms of inference-mode forwards and, if train_rounds, training steps of each (model, its forward);
    "ours" runs as `our_contenders`. Each kind's steps are made just before its rounds (forward_fn sets eval mode,
    train_step_fn train mode)."""
    steps = {"forward": (rounds, forward_fn), "train": (train_rounds, lambda m, f: train_step_fn(m, f, target))}
    times = {}
    for kind, (rounds_, step) in steps.items():
        if rounds_:
            made = {name: step(model, forward) for name, (model, forward) in models.items()}
            times[kind] = interleave(our_contenders(made.pop("ours")) | made, rounds_)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items()}
