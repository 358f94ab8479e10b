"""Our Model 2 and Model 3 against vit-pytorch's ViViT (`factorized_encoder`, `factorized_self_attention`)
at matched width, depth, heads, MLP size, tubelet and classifier.

The architectures differ in details (vit-pytorch: no qkv bias, LayerNorms around the patch projection,
exact GELU), so weights are not shared; parameter counts are reported next to the timings. A third contender,
"ours, their choices", is our model with vit-pytorch's choices (`qkv_bias=False, gelu_approximation="none"`):
it separates what the official semantics cost from what the implementation does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

import vivit
from timing import forward_and_train, speedup, summarise
from vivit.config import ViViTConfig
from vivit.profile import count_parameters

VARIANTS = {"fe": "factorized_encoder", "fsa": "factorized_self_attention"}
ALIKE = "ours, their choices"


def load_module() -> ModuleType:
    """`vit_pytorch.vivit` without the package `__init__` (which imports the unused torchvision)."""
    spec = importlib.util.find_spec("vit_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("vit-pytorch is not installed: pip install --no-deps vit-pytorch")
    path = Path(next(iter(spec.submodule_search_locations))) / "vivit.py"
    module_spec = importlib.util.spec_from_file_location("vit_pytorch_vivit", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def build_theirs(cfg: ViViTConfig) -> torch.nn.Module:
    """vit-pytorch's ViViT with our config's sizes ("fe": cls pooling; "fsa": mean pooling, as ours)."""
    fsa = cfg.variant == "fsa"
    return load_module().ViViT(
        image_size=cfg.image_size, image_patch_size=cfg.tubelet[1:], frames=cfg.num_frames,
        frame_patch_size=cfg.tubelet[0], num_classes=cfg.num_classes, dim=cfg.width, spatial_depth=cfg.depth,
        temporal_depth=cfg.depth if fsa else cfg.temporal_depth, heads=cfg.num_heads,
        dim_head=cfg.width // cfg.num_heads, mlp_dim=cfg.mlp_dim, pool="mean" if fsa else "cls",
        channels=cfg.in_channels, variant=VARIANTS[cfg.variant],
    )


def compare(cfg: ViViTConfig, rounds: int, train_rounds: int, batch: int = 1) -> dict:
    """Forward (inference mode) and, if train_rounds, a training step of ours vs vit-pytorch, interleaved."""
    torch.manual_seed(0)
    ours, theirs = vivit.ViViT(cfg), build_theirs(cfg)
    alike = vivit.ViViT(cfg.replace(qkv_bias=False, gelu_approximation="none"))  # vit-pytorch's choices
    video = torch.randn(batch, cfg.in_channels, cfg.num_frames, *cfg.image_size)  # both read (B, C, T, H, W)
    target = torch.randint(cfg.num_classes, (batch,))
    result = {"params_ours": count_parameters(ours),
              "params_theirs": count_parameters(theirs)}
    models = {"ours": ours, ALIKE: alike, "theirs": theirs}
    times = forward_and_train({name: (m, lambda m=m: m(video)) for name, m in models.items()}, target, rounds,
                              train_rounds)
    for kind, t in times.items():
        result[f"{kind}_ms"] = summarise(t)
        result[f"{kind}_speedup"] = speedup(t["ours"], t["theirs"])
        result[f"{kind}_speedup_alike"] = speedup(t[ALIKE], t["theirs"])
    return result
