"""Model profile: parameters, FLOPs and MACs (attention included), forward latency, peak memory.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on the `meta` device, so a
full-size model costs no memory or time; there attention runs as explicit matmuls and is counted.
MACs = FLOPs / 2 (the paper's "FLOPs" are close to MAC counts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from vivit.cli import print_json
from vivit.config import ViViTConfig
from vivit.errors import ConfigError
from vivit.model import ViViT, create_model
from vivit.model.encoders import every_token

# Paper Table 2: ViViT-B/16x2, 32x224x224, K400 (400 classes), FE temporal depth 4; runtime on TPU-v3.
PAPER_TABLE2 = {
    "vivit-b-16x2-st": dict(name="Model 1: Spatio-temporal", gflops=455.2, params_m=88.9, runtime_ms=58.9),
    "vivit-b-16x2-fe": dict(name="Model 2: Factorised encoder", gflops=284.4, params_m=115.1, runtime_ms=17.4),
    "vivit-b-16x2-fsa": dict(name="Model 3: Factorised self-attention", gflops=372.3, params_m=117.3, runtime_ms=31.7),
    "vivit-b-16x2-fdp": dict(name="Model 4: Factorised dot-product", gflops=277.1, params_m=88.9, runtime_ms=22.9),
    "vivit-b-16x2-fe-avg": dict(name="Model 2: Average-pool baseline", gflops=283.9, params_m=86.7, runtime_ms=17.3),
}


@dataclass
class Profile:
    model: str
    input_shape: tuple[int, ...]
    params: int
    flops: int
    macs: int
    latency_ms: float | None = None
    peak_memory_mb: float | None = None  # the rise during the forward passes (`peak_memory`)
    device: str | None = None            # where latency and memory were measured (cpu or cuda)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(config: ViViTConfig, batch: int = 1, official: bool = False) -> int:
    """Forward FLOPs of one batch (multiply and add counted separately), computed on `meta`: of the forward as
    it runs, or (`official`) with every token through every block, as the official model and the paper count
    (a token classifier's last block computes its token alone here: `vivit.model.encoders.every_token`)."""
    with torch.device("meta"):
        model = ViViT(config).eval()
        video = torch.empty(batch, config.in_channels, config.num_frames, *config.image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), every_token(model) if official else nullcontext():
        model(video)
    return counter.get_total_flops()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(model: torch.nn.Module, video: torch.Tensor, warmup: int = 1, iters: int = 5) -> float:
    """Median forward time in milliseconds (inference mode)."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            _sync(video.device)
            start = time.perf_counter()
            model(video)
            _sync(video.device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak memory (MiB) used inside the block: the CUDA allocator's peak on GPU; on Linux CPUs the
    rise of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)."""
    result: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result["peak_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        return
    status = Path("/proc/self/status")
    if not status.exists():
        yield result
        return
    Path("/proc/self/clear_refs").write_text("5")
    base = _vm_kb("VmRSS")
    yield result
    result["peak_mb"] = (_vm_kb("VmHWM") - base) / 1024


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def model_for(spec: str, **overrides) -> torch.nn.Module:
    """A preset (`vivit profile --list`) with overrides, or the architecture of a model NAME, CHECKPOINT or
    FOLDER (freshly initialised: weights change no count or timing)."""
    from vivit.model import list_models

    if spec in list_models():
        return create_model(spec, **overrides)
    from vivit.engine.checkpoint import load_model

    return ViViT(load_model(spec, quiet=True).model.config.replace(**overrides))


def profile_model(
    name: str,
    batch: int = 1,
    device: str = "cpu",
    latency: bool = True,
    iters: int = 3,
    official: bool = False,
    **overrides,
) -> Profile:
    """Profile a preset or a model NAME, CHECKPOINT or FOLDER (`model_for`) with overrides (e.g. num_frames,
    image_size, num_classes); FLOPs as `count_flops(official=...)`. `peak_memory_mb`: the rise of memory during the timed forward passes above
    what the model and input already hold (`peak_memory`)."""
    model = model_for(name, **overrides)
    cfg = model.config
    shape = (batch, cfg.in_channels, cfg.num_frames, *cfg.image_size)
    flops = count_flops(cfg, batch, official)
    prof = Profile(name, shape, count_parameters(model), flops, flops // 2)
    if latency:
        from vivit.engine.build import resolve_device  # ConfigError for cuda without a CUDA device

        dev = resolve_device(device)
        model = model.to(dev).eval()
        video = torch.randn(shape, device=dev)
        with peak_memory(dev) as mem:
            prof.latency_ms = measure_latency(model, video, warmup=1, iters=iters)
        prof.peak_memory_mb, prof.device = mem.get("peak_mb"), dev.type
    return prof


def table2(latency: bool = False, device: str = "cpu", say: Callable[[str], None] | None = None) -> list[dict]:
    """The five rows of the paper's Table 2, ours next to the paper's; `say` hears of each row as it starts
    (full-size forward passes take seconds each on a CPU)."""
    rows = []
    for i, (name, paper) in enumerate(PAPER_TABLE2.items(), 1):
        if say is not None:
            say(f"[{i}/{len(PAPER_TABLE2)}] {name}" + (f": timing the forward pass on {device}" if latency else ""))
        p = profile_model(name, num_classes=400, temporal_depth=4, latency=latency, device=device, iters=1,
                          official=True)
        rows.append(dict(preset=name, **{f"paper_{k}": v for k, v in paper.items()}, params_m=p.params / 1e6,
                         gmacs=p.macs / 1e9, gflops=p.flops / 1e9, latency_ms=p.latency_ms))
    return rows


def format_table2(rows: list[dict]) -> str:
    lines = [
        "ViViT-B/16x2, 32x224x224, 400 classes, FE temporal depth 4 (paper Table 2; paper 'GFLOPs' ~ our GMACs)",
        f"{'model':36s} {'params M':>9s} {'paper':>7s} {'GMACs':>8s} {'GFLOPs':>8s} {'paper GFLOPs':>13s}"
        + (f" {'ms':>9s} {'paper TPU ms':>12s}" if rows and rows[0]["latency_ms"] is not None else ""),
    ]
    for r in rows:
        line = (f"{r['paper_name']:36s} {r['params_m']:9.2f} {r['paper_params_m']:7.1f} {r['gmacs']:8.1f} "
                f"{r['gflops']:8.1f} {r['paper_gflops']:13.1f}")
        if r["latency_ms"] is not None:
            line += f" {r['latency_ms']:9.1f} {r['paper_runtime_ms']:12.1f}"
        lines.append(line)
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL", help="a preset (`vivit profile --list`), or the "
                                                              "architecture of a model NAME, CHECKPOINT or FOLDER")
    parser.add_argument("--model", dest="model_option", metavar="NAME|CHECKPOINT|FOLDER",
                        help="the same as MODEL (every command that uses a model takes --model)")
    parser.add_argument("--table", action="store_true", help="the paper's Table 2, ours beside the paper's numbers")
    parser.add_argument("--list", action="store_true", help="list the presets")
    parser.add_argument("--frames", type=int, help="input frames (default: the preset's)")
    parser.add_argument("--size", type=int, help="input height = width (default: the preset's)")
    parser.add_argument("--classes", type=int, help="number of classes (default: the preset's)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where latency is measured")
    parser.add_argument("--iters", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--no-latency", action="store_true", help="count only; skip the timed forward passes")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--quiet", action="store_true", help="no progress lines (--table)")


def run(args: argparse.Namespace) -> int:
    from vivit.model import list_models

    if args.list:
        if args.json:
            print_json(list_models())
        else:
            print("\n".join(list_models()))
        return 0
    if args.table:
        say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        rows = table2(latency=not args.no_latency, device=args.device, say=say)
        if args.json:
            print_json(rows)
        else:
            print(format_table2(rows))
        return 0
    if args.model and args.model_option:
        raise ConfigError(f"vivit profile: MODEL {args.model!r} and --model {args.model_option!r}: give one")
    args.model = args.model or args.model_option
    if not args.model:
        raise ConfigError("vivit profile: give a MODEL (preset, NAME, CHECKPOINT or FOLDER), --table or --list")
    overrides = {k: v for k, v in dict(num_frames=args.frames, image_size=args.size, num_classes=args.classes).items() if v}
    p = profile_model(args.model, batch=args.batch, device=args.device, latency=not args.no_latency, iters=args.iters, **overrides)
    if args.json:
        print_json(asdict(p))
        return 0
    print(f"model        {p.model}\ninput        {tuple(p.input_shape)}\nparameters   {p.params / 1e6:.2f} M")
    print(f"FLOPs        {p.flops / 1e9:.2f} G  (MACs {p.macs / 1e9:.2f} G)")
    if p.latency_ms is not None:
        print(f"latency      {p.latency_ms:.1f} ms on {p.device} (median of {args.iters})")
    if p.peak_memory_mb is not None:
        what = "CUDA allocator peak" if p.device == "cuda" else "peak resident set"
        print(f"peak memory  {p.peak_memory_mb:.0f} MiB (the rise of the {what} during the forward, above the "
              "weights and input)")
    return 0
