"""The `torch.compile` (inductor) path of our Model 1 against eager, forward in inference mode."""

from __future__ import annotations

import time

import torch

import vivit
from timing import autocast, forward_fn, interleave, speedup, summarise
from vivit.config import ViViTConfig


def compare(cfg: ViViTConfig, rounds: int) -> dict:
    """Compile once (timed separately), then interleave eager and compiled forwards of the same model."""
    torch.manual_seed(0)
    model = vivit.ViViT(cfg).eval()
    torch.nn.init.normal_(model.head.weight, std=0.02)  # the zero-initialised head would hide any difference
    compiled = torch.compile(model)
    video = torch.randn(1, cfg.in_channels, cfg.num_frames, *cfg.image_size)
    start = time.perf_counter()
    with torch.inference_mode(), autocast():  # compiled for the precision that is timed
        diff = (compiled(video) - model(video)).float().abs().max().item()
    compile_s = time.perf_counter() - start
    times = interleave({"eager": forward_fn(model, lambda: model(video)),
                        "compiled": forward_fn(compiled, lambda: compiled(video))}, rounds)
    return {"compile_s": compile_s, "max_abs_diff": diff, "forward_ms": summarise(times),
            "speedup": speedup(times["compiled"], times["eager"])}
