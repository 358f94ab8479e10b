"""Our Model 1 against transformers' `VivitForVideoClassification` (SDPA attention) with equal weights.

The HF model is built from our config, its weights are converted into ours, and the logits are
compared before anything is timed. `convert` is the one line to switch to `vivit.weights.hf.from_hf`.
"""

from __future__ import annotations

import torch
from transformers import VivitConfig, VivitForVideoClassification

import vivit
from timing import forward_fn, interleave, speedup, summarise, train_step_fn
from vivit.config import ViViTConfig

# HF 5.x block sub-module -> ours; q/k/v are fused into attn.qkv in this order.
BLOCK = {"layernorm_before": "norm1", "attention.o_proj": "attn.proj", "layernorm_after": "norm2",
         "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
QKV = ("attention.q_proj", "attention.k_proj", "attention.v_proj")


def hf_config(cfg: ViViTConfig) -> VivitConfig:
    """The HF config of the same Model 1 (tubelet, token classifier, tanh GELU, same eps)."""
    return VivitConfig(
        num_frames=cfg.num_frames, image_size=cfg.image_size[0], tubelet_size=list(cfg.tubelet),
        hidden_size=cfg.width, num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.mlp_dim, hidden_act="gelu_fast", layer_norm_eps=cfg.layer_norm_eps,
        qkv_bias=cfg.qkv_bias, num_labels=cfg.num_classes, attn_implementation="sdpa",
    )


def from_hf(hf: VivitForVideoClassification, config: ViViTConfig) -> vivit.ViViT:
    """Our Model 1 holding the weights of a HF ViViT classifier (strict key match)."""
    sd = hf.state_dict()
    out = {
        "tokenizer.proj.weight": sd["vivit.embeddings.patch_embeddings.projection.weight"],
        "tokenizer.proj.bias": sd["vivit.embeddings.patch_embeddings.projection.bias"],
        "encoder.cls_token": sd["vivit.embeddings.cls_token"],
        "encoder.pos_embed": sd["vivit.embeddings.position_embeddings"],
        "encoder.norm.weight": sd["vivit.layernorm.weight"],
        "encoder.norm.bias": sd["vivit.layernorm.bias"],
        "head.weight": sd["classifier.weight"],
        "head.bias": sd["classifier.bias"],
    }
    for i in range(config.depth):
        hf_block, block = f"vivit.layers.{i}", f"encoder.blocks.{i}"
        for p in ("weight", "bias"):
            out.update({f"{block}.{ours}.{p}": sd[f"{hf_block}.{theirs}.{p}"] for theirs, ours in BLOCK.items()})
            out[f"{block}.attn.qkv.{p}"] = torch.cat([sd[f"{hf_block}.{name}.{p}"] for name in QKV])
    model = vivit.ViViT(config)
    model.load_state_dict(out, strict=True)
    return model


convert = from_hf  # once merged: `from vivit.weights.hf import from_hf as convert`


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
    """Forward (inference mode) and training step of ours vs HF, interleaved; equal inputs and weights."""
    ours, hf = build_pair(cfg)
    video = torch.randn(batch, cfg.in_channels, cfg.num_frames, *cfg.image_size)
    pixel_values = video.transpose(1, 2).contiguous()  # HF's own layout, prepared outside the timing
    target = torch.randint(cfg.num_classes, (batch,))
    result = {"max_abs_diff": max_abs_diff(ours, hf, video),
              "params_ours": sum(p.numel() for p in ours.parameters()),
              "params_theirs": sum(p.numel() for p in hf.parameters())}
    fwd = interleave({"ours": forward_fn(ours, lambda: ours(video)),
                      "theirs": forward_fn(hf, lambda: hf(pixel_values=pixel_values).logits)}, rounds)
    train = interleave({"ours": train_step_fn(ours, lambda: ours(video), target),
                        "theirs": train_step_fn(hf, lambda: hf(pixel_values=pixel_values).logits, target)}, train_rounds)
    result["forward_ms"] = summarise(fwd)
    result["forward_speedup"] = speedup(fwd["ours"], fwd["theirs"])
    result["train_ms"] = summarise(train)
    result["train_speedup"] = speedup(train["ours"], train["theirs"])
    return result
