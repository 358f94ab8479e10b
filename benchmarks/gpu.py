"""`benchmarks/run.py --device cuda`: the four variants at ViViT-B and ViViT-L on one GPU in bf16.

Per model: training-step and inference throughput (clips/s, tokens/s) under bf16 autocast, MFU against the
card's dense bf16 peak (the datasheet figure where the card is listed in `DATASHEET_BF16_TFLOPS`, and the
measured peak of a large bf16 matmul), the SDPA kernels the forward actually ran (read from the profiler's
op names, then confirmed by running the forward again restricted to that backend with
`torch.nn.attention.sdpa_kernel`), and a training step of Model 1 under DistributedDataParallel on one GPU
(a one-process group on 127.0.0.1) next to the plain step. Results: results/cuda-GPU/latest.{md,json}.
Every function also runs on the CPU (`device="cpu"`), which is how the suite checks them without a GPU.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import vivit
from vivit.profile import count_flops

VARIANTS = ("st", "fe", "fsa", "fdp")
SIZES = ("b", "l")
# dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s, matched in the device name
DATASHEET_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
                         "L4": 121.0, "A10": 125.0}
SDPA_OPS = {"_scaled_dot_product_flash_attention": "flash", "_scaled_dot_product_efficient_attention":
            "memory-efficient", "_scaled_dot_product_cudnn_attention": "cudnn", "_scaled_dot_product_attention_math":
            "math", "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)"}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "memory-efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH, "flash (CPU)": SDPBackend.FLASH_ATTENTION}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of `fn` over `iters` calls after `warmup` calls, the device synchronised around each."""
    times = []
    for i in range(warmup + iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def matmul_peak_tflops(device: torch.device, n: int = 8192, iters: int = 10) -> float:
    """Measured bf16 matmul throughput of an (n x n) @ (n x n) product, TFLOP/s."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    return 2 * n**3 / seconds_per_call(lambda: a @ b, device, 2, iters) / 1e12


def datasheet_tflops(name: str) -> float | None:
    """The card's dense bf16 peak from `DATASHEET_BF16_TFLOPS` (first listed name contained in `name`)."""
    return next((tflops for key, tflops in DATASHEET_BF16_TFLOPS.items() if key in name), None)


def sdpa_kernels(model: torch.nn.Module, video: torch.Tensor) -> dict[str, object]:
    """The SDPA kernels one bf16 forward ran (profiler op names), and whether the forward runs with SDPA
    restricted to that kernel alone (`sdpa_kernel`), which rules out a silent fallback to another."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.inference_mode(), autocast(video.device):
            model(video)
    used = sorted({SDPA_OPS[e.name.removeprefix("aten::")] for e in prof.events()
                   if e.name.removeprefix("aten::") in SDPA_OPS})
    confirmed = {}
    for name in used:
        try:
            with torch.inference_mode(), autocast(video.device), sdpa_kernel([BACKENDS[name]]):
                model(video)
            confirmed[name] = True
        except RuntimeError:
            confirmed[name] = False
    return {"used": used, "runs_restricted_to_it": confirmed}


def throughput(model: torch.nn.Module, video: torch.Tensor, warmup: int, iters: int) -> dict[str, float]:
    """Training step (bf16 autocast forward and loss, backward, AdamW) and inference forward: seconds each."""
    device = video.device
    target = torch.zeros(video.shape[0], dtype=torch.long, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def train_step() -> None:
        with autocast(device):
            loss = F.cross_entropy(model(video), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer() -> None:
        with torch.inference_mode(), autocast(device):
            model(video)

    model.train()
    train_s = seconds_per_call(train_step, device, warmup, iters)
    model.eval()
    return {"train_s": train_s, "forward_s": seconds_per_call(infer, device, warmup, iters)}


def ddp_step(model: torch.nn.Module, video: torch.Tensor, warmup: int, iters: int) -> dict[str, float]:
    """Training step of `model` under DistributedDataParallel in a one-process group (nccl on CUDA, gloo on
    the CPU; loopback only), next to the same step without it."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    plain = throughput(model, video, warmup, iters)["train_s"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl" if video.device.type == "cuda" else "gloo",
                            init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(model, device_ids=[video.device.index] if video.device.type == "cuda" else None)
        ddp = throughput(wrapped, video, warmup, iters)["train_s"]
    finally:
        dist.destroy_process_group()
    return {"plain_train_s": plain, "ddp_train_s": ddp, "ddp_overhead": ddp / plain - 1}


def tokens_per_clip(model: vivit.ViViT) -> int:
    """Patch tokens one clip becomes (n_t * n_h * n_w)."""
    n_t, n_h, n_w = model.config.grid
    return n_t * n_h * n_w


def measure_model(name: str, batch: int, device: torch.device, peak_tflops: float, warmup: int, iters: int,
                  **overrides) -> dict[str, object]:
    """One row: sizes, clips/s and tokens/s in training and inference, MFU of each against `peak_tflops`."""
    torch.manual_seed(0)
    model = vivit.create_model(name, **overrides).to(device)
    cfg = model.config
    video = torch.randn(batch, cfg.in_channels, cfg.num_frames, *cfg.image_size, device=device)
    flops = count_flops(cfg, batch)  # the forward as it runs; a training step is about 3x
    row: dict[str, object] = {"model": name, "batch": batch, "frames": cfg.num_frames, "forward_gflops": flops / 1e9}
    try:
        row |= sdpa_kernels(model, video)
        t = throughput(model, video, warmup, iters)
    except torch.OutOfMemoryError:
        return row | {"error": f"out of memory at batch {batch}"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for kind, seconds, work in (("train", t["train_s"], 3 * flops), ("forward", t["forward_s"], flops)):
        row |= {f"{kind}_ms": 1e3 * seconds, f"{kind}_clips_per_s": batch / seconds,
                f"{kind}_tokens_per_s": batch * tokens_per_clip(model) / seconds,
                f"{kind}_mfu": work / seconds / (peak_tflops * 1e12)}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return row


def run(device: torch.device, batch: int, frames: int, variants=VARIANTS, sizes=SIZES, warmup: int = 3,
        iters: int = 10, **overrides) -> dict[str, object]:
    """Every variant at every size, the matmul peak and the DDP step; a JSON-ready dict."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    measured = matmul_peak_tflops(device, 8192 if device.type == "cuda" else 256)
    sheet = datasheet_tflops(name)
    peak = sheet or measured
    rows = [measure_model(f"vivit-{size}-16x2-{variant}", batch, device, peak, warmup, iters,
                          num_frames=frames, num_classes=400, **overrides)
            for size in sizes for variant in variants]
    ddp_model = vivit.create_model(f"vivit-{sizes[0]}-16x2-st", num_frames=frames, num_classes=400, **overrides).to(device)
    cfg = ddp_model.config
    video = torch.randn(batch, cfg.in_channels, cfg.num_frames, *cfg.image_size, device=device)
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "device": name,
            "torch": torch.__version__, "cuda": torch.version.cuda, "datasheet_bf16_tflops": sheet,
            "matmul_bf16_tflops": measured, "peak_used": "datasheet" if sheet else "measured matmul",
            "rows": rows, "ddp": {"model": f"vivit-{sizes[0]}-16x2-st", "batch": batch,
                                  **ddp_step(ddp_model, video, warmup, iters)}}


def markdown(result: dict) -> str:
    """The results as the README shows them."""
    lines = [f"Measured {result['date']} on {result['device']} (torch {result['torch']}, CUDA {result['cuda']}); bf16 "
             f"autocast, 224 px, tubelet 2x16x16, 400 classes. bf16 peak: datasheet "
             f"{result['datasheet_bf16_tflops'] or 'unknown'} TFLOP/s, measured 8192^2 matmul "
             f"{result['matmul_bf16_tflops']:.0f} TFLOP/s; MFU against the {result['peak_used']} "
             "(a training step counted as 3x the forward's FLOPs).", "",
             "| model | batch | train clips/s | train tokens/s | train MFU | forward clips/s | forward MFU | SDPA kernel | peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | {r['error']} | | | | | | |")
            continue
        kernels = ", ".join(f"{k}{'' if ok else ' (fails alone)'}" for k, ok in r["runs_restricted_to_it"].items())
        lines.append(f"| {r['model']} | {r['batch']} | {r['train_clips_per_s']:.1f} | {r['train_tokens_per_s']:,.0f} | "
                     f"{r['train_mfu']:.0%} | {r['forward_clips_per_s']:.1f} | {r['forward_mfu']:.0%} | {kernels} | "
                     f"{r.get('peak_memory_gib', float('nan')):.1f} |")
    d = result["ddp"]
    lines += ["", f"DDP on one GPU, {d['model']} batch {d['batch']}: {1e3 * d['ddp_train_s']:.0f} ms per training step, "
                  f"plain {1e3 * d['plain_train_s']:.0f} ms ({d['ddp_overhead']:+.1%})."]
    return "\n".join(lines) + "\n"


def gpu_slug(name: str) -> str:
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(batch: int, frames: int, out: Path | None, results: Path) -> int:
    """Measure on the first CUDA device and write latest.{md,json}; one error line and exit 2 without CUDA."""
    if not torch.cuda.is_available():
        print("error: --device cuda needs a CUDA GPU; torch.cuda.is_available() is False on this machine", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    torch.backends.cuda.matmul.allow_tf32 = True
    result = run(device, batch, frames)
    out = out or results / gpu_slug(result["device"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(result, indent=1))
    (out / "latest.md").write_text(markdown(result))
    print(markdown(result))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit("run it as: python benchmarks/run.py --device cuda")
