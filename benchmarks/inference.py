"""Inference fast paths of `vivit.engine.inference.prepare_for_inference` against fp32 eager and bf16
autocast, on one process, interleaved: ms per batch, speed-up, and next to it the accuracy drift against
fp32 (top-1 agreement and max |logit difference| over a set of clips).

    .venv/bin/python benchmarks/inference.py --model vivit-b-16x2-st --frames 16 --clips 32 --rounds 5 \
        --out benchmarks/results/MACHINE/inference.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import vivit
from timing import interleave, setup, speedup, summarise
from vivit.engine.inference import prepare_for_inference


def clips(cfg, n: int, seed: int = 0) -> torch.Tensor:
    """`n` random clips in [-1, 1] (the model's input range); the prediction is what is compared."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.in_channels, cfg.num_frames, *cfg.image_size, generator=g) * 2 - 1


def build(name: str, frames: int, classes: int) -> torch.nn.Module:
    """A random model with a non-zero head (the zero-initialised head would hide every difference)."""
    torch.manual_seed(0)
    model = vivit.create_model(name, num_frames=frames, num_classes=classes).eval()
    torch.nn.init.normal_(model.head.weight, std=0.05)
    return model


def contenders(args: argparse.Namespace) -> dict[str, tuple[torch.nn.Module, float]]:
    """name -> (callable model on float videos, seconds spent preparing it, compile included)."""
    out = {}
    kinds = {"fp32": dict(precision="fp32"), "bf16 autocast": None, "bf16 cast once": dict(precision="bf16"),
             "int8 dynamic": dict(quantize="int8")}
    if args.compile:
        kinds["fp32 compiled+frozen"] = dict(compile=True)
    for name, options in kinds.items():
        model = build(args.model, args.frames, args.classes)
        start = time.perf_counter()
        if options is None:  # the per-call autocast that `--precision bf16` ran before
            def run(video, model=model):
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return model(video).float()
            prepared = run
        else:
            prepared = prepare_for_inference(model, **options)
        if options and options.get("compile"):
            prepared(torch.zeros(args.batch, model.config.in_channels, args.frames, *model.config.image_size))
        out[name] = (prepared, time.perf_counter() - start)
    return out


def report(result: dict) -> str:
    """Markdown: the CPU (and its bf16 / int8 extensions), then one row per contender."""
    from predict_e2e import cpu_info

    cpu = result.get("cpu") or cpu_info()
    lines = [f"# Inference paths: {result['model']}, {result['frames']} frames, batch {result['batch']}", "",
             f"CPU: {cpu['model name']} (model {cpu['model']}), {result['threads']} threads; AVX-512 {cpu['avx512f']}, "
             f"AVX512-BF16 {cpu['avx512_bf16']}, AMX {cpu['amx_bf16']}. Load average {result.get('load', '?')}. "
             f"Random weights (head N(0, 0.05)), {result['clips']} random clips for the agreement with fp32.", "",
             "| | ms / batch | speed-up vs fp32 | prepare s | top-1 = fp32 | max abs logit diff (max abs logit) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['ms_per_batch']:.0f} | {r['speedup_vs_fp32']:.2f}x | {r['prepare_s']:.1f} "
                     f"| {r['top1_agreement']:.0%} | {r['max_abs_logit_diff']:.3g} ({r['logit_scale']:.3g}) |")
    return "\n".join(lines + [""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vivit-b-16x2-st")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--classes", type=int, default=400)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--clips", type=int, default=32, help="clips for the agreement with fp32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--compile", action="store_true", help="also time the compiled, frozen fp32 model")
    p.add_argument("--out", type=Path, default=None, help="also write this markdown file")
    args = p.parse_args()
    setup(args.threads)
    models = contenders(args)
    data = clips(models["fp32"][0].config, args.clips)
    logits = {name: torch.cat([m(data[i:i + args.batch]) for i in range(0, len(data), args.batch)])
              for name, (m, _) in models.items()}
    video = data[:args.batch]
    times = interleave({name: (lambda m=m: m(video)) for name, (m, _) in models.items()}, args.rounds)
    ms = summarise(times)
    reference = logits["fp32"]
    rows = {}
    for name in models:
        rows[name] = {"ms_per_batch": round(ms[name], 1), "speedup_vs_fp32": round(speedup(times[name], times["fp32"]), 3),
                      "prepare_s": round(models[name][1], 2),
                      "top1_agreement": float((logits[name].argmax(1) == reference.argmax(1)).float().mean()),
                      "max_abs_logit_diff": float((logits[name] - reference).abs().max()),
                      "logit_scale": float(reference.abs().max())}
    result = {"model": args.model, "frames": args.frames, "batch": args.batch, "clips": args.clips,
              "threads": args.threads, "load": round(os.getloadavg()[0], 2), "rows": rows}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(report(result))


if __name__ == "__main__":
    main()
