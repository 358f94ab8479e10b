"""Our Model 1 against transformers' `VivitForVideoClassification` (SDPA attention) with equal weights.

The HF model is built from our config, its weights are converted into ours, and the logits are
compared before anything is timed. Weights go through `vivit.weights.hf.from_hf`, as a user's would.
"""

from __future__ import annotations

import torch
from transformers import VivitConfig, VivitForVideoClassification

import vivit
from timing import forward_and_train, speedup, summarise
from vivit.config import ViViTConfig
from vivit.profile import count_parameters
from vivit.weights import hf as hf_weights


def hf_config(cfg: ViViTConfig) -> VivitConfig:
    """The HF config of the same Model 1 (tubelet, token classifier, tanh GELU, same eps), SDPA attention."""
    return VivitConfig(**hf_weights.hf_config(cfg), attn_implementation="sdpa")


def convert(hf: VivitForVideoClassification, config: ViViTConfig) -> vivit.ViViT:
    """Our Model 1 holding the HF model's weights, through the library's converter."""
    return hf_weights.from_hf(hf, config)


def build_pair(cfg: ViViTConfig, seed: int = 0) -> tuple[vivit.ViViT, VivitForVideoClassification]:
    """A randomly initialised HF model (non-zero head, so logits are informative) and ours with its weights."""
    torch.manual_seed(seed)
    hf = VivitForVideoClassification(hf_config(cfg)).eval()
    return convert(hf, cfg).eval(), hf


@torch.inference_mode()
def max_abs_diff(ours: vivit.ViViT, hf: VivitForVideoClassification, video: torch.Tensor) -> float:
    """Largest logit difference; HF reads (B, T, C, H, W), ours (B, C, T, H, W)."""
    return (ours(video) - hf(pixel_values=video.transpose(1, 2).contiguous()).logits).abs().max().item()


def compare(cfg: ViViTConfig, rounds: int, train_rounds: int, batch: int = 1) -> dict:
    """Forward (inference mode) and, if train_rounds, a training step of ours vs HF, interleaved; equal inputs and
    weights."""
    ours, hf = build_pair(cfg)
    video = torch.randn(batch, cfg.in_channels, cfg.num_frames, *cfg.image_size)
    pixel_values = video.transpose(1, 2).contiguous()  # HF's own layout, prepared outside the timing
    target = torch.randint(cfg.num_classes, (batch,))
    result = {"max_abs_diff": max_abs_diff(ours, hf, video),
              "params_ours": count_parameters(ours),
              "params_theirs": count_parameters(hf)}
    times = forward_and_train({"ours": (ours, lambda: ours(video)),
                               "theirs": (hf, lambda: hf(pixel_values=pixel_values).logits)}, target, rounds, train_rounds)
    for kind, t in times.items():
        result[f"{kind}_ms"] = summarise(t)
        result[f"{kind}_speedup"] = speedup(t["ours"], t["theirs"])
    return result
