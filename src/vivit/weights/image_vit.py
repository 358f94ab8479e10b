"""Initialise any ViViT variant from a 2D image ViT (Sec. 3.4, "Initialisation by leveraging pretrained models").

Sources (original Google ViT / AugReg `.npz`, big_vision, Scenic ViT `.npz` or msgpack train state, Linen,
timm, HF `ViTModel`) are recognised and brought to the timm layout by `image_layouts.read_image_vit`.
Then: the tokeniser gets the 2D kernel by `central_frame` (Eq. 9), `inflate` (Eq. 8) or `random`;
positional embeddings are resized (bicubic by default, `bilinear` as the official code) when the patch
grid differs and tiled over time; Models 1 and 4 take the image blocks as they are; the FE spatial
encoder takes them and its temporal encoder stays freshly initialised; Model 3 copies the image
attention into both spatial and temporal attention (`fsa_temporal_init="copy"`, official default) or
zero-initialises the temporal output projection (`"zero"`, the paper: identity at start).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from vivit.config import ViViTConfig
from vivit.errors import ConfigError, VivitError
from vivit.model import posembed
from vivit.model.tokenizers import TUBELET_INITS
from vivit.model.vivit import ViViT
from vivit.weights.image_layouts import ImageViT, read_image_vit
from vivit.weights.store import LoadReport, block_depth, load_state_dict

FSA_TEMPORAL_INITS = ("copy", "zero")
POS_INTERPOLATIONS = ("bicubic", "bilinear")
# Image block sub-module -> Model 3 block sub-modules that receive it.
FSA_FROM_IMAGE = {"norm1": ("norm_space", "norm_time"), "attn.qkv": ("attn_space.qkv", "attn_time.qkv"),
                  "attn.proj": ("attn_space.proj", "attn_time.proj"), "norm2": ("norm_mlp",),
                  "mlp.fc1": ("mlp.fc1",), "mlp.fc2": ("mlp.fc2",)}
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}  # ViT Ti/S/B/L/H


def _depth(state: Mapping[str, torch.Tensor]) -> int:
    return block_depth(state, r"blocks\.(\d+)\.")


def config_for_image_vit(image: ImageViT, variant: str = "st", num_frames: int = 32, **overrides: Any) -> ViViTConfig:
    """A ViViT config matching an image ViT's sizes: width, depth, heads, MLP, patch and image size."""
    s = image.state
    width, _, ph, pw = s["patch_embed.proj.weight"].shape
    side = math.isqrt(s["pos_embed"].shape[1] - int("cls_token" in s))
    kw: dict[str, Any] = dict(
        variant=variant, num_frames=num_frames, image_size=(side * ph, side * pw), tubelet=(2, ph, pw),
        width=width, depth=_depth(s), num_heads=image.num_heads or HEADS_BY_WIDTH.get(width, 0),
        mlp_dim=s["blocks.0.mlp.fc1.weight"].shape[0], classifier="gap" if variant in ("fsa", "fdp") else "token",
    )
    kw.update(overrides)
    image.check_heads(kw["num_heads"])
    if kw["num_heads"] == 0:
        raise ConfigError(f"cannot tell the head count of a width-{width} image ViT: pass num_heads")
    return ViViTConfig(**kw)


def _pos_embed(image_pos: torch.Tensor, has_cls: bool, grid: tuple[int, ...], num_prefix: int, mode: str) -> torch.Tensor:
    """Image embedding (1, [cls] + h*w, D) -> the encoder's (1, prefix + prod(grid), D): resized in space,
    tiled over time (Sec. 3.4); the cls entry is kept when the encoder has a cls token."""
    cls, patches = posembed.split_prefix(image_pos.float(), int(has_cls))
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise VivitError(f"image positional embedding has {patches.shape[1]} patch tokens: not a square grid")
    spatial = grid[-2:]
    patches = posembed.resample(patches, (side, side), spatial, 0, spatial_mode=mode)
    if len(grid) == 3:
        patches = posembed.tile_over_time(patches, grid[0], num_prefix=0)
    if not num_prefix:
        return patches
    return torch.cat([cls if has_cls else patches.new_zeros(1, 1, patches.shape[-1]), patches], dim=1)


@torch.no_grad()
def init_from_image_vit(
    model: ViViT,
    source: Any,
    tubelet_init: str = "central_frame",
    fsa_temporal_init: str = "copy",
    pos_interpolation: str = "bicubic",
) -> LoadReport:
    """Initialise `model` (any variant, either tokeniser) from an image ViT; returns what was used,
    left unused (classifier heads) and not loaded (FE temporal encoder, head)."""
    for name, value, allowed in (("tubelet_init", tubelet_init, TUBELET_INITS),
                                 ("fsa_temporal_init", fsa_temporal_init, FSA_TEMPORAL_INITS),
                                 ("pos_interpolation", pos_interpolation, POS_INTERPOLATIONS)):
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")
    image = read_image_vit(source)
    s, cfg = image.state, model.config
    image.check_heads(cfg.num_heads)
    if _depth(s) != cfg.depth:
        raise VivitError(f"{image.source}: image ViT has {_depth(s)} blocks, the model's (spatial) depth is {cfg.depth}")
    kernel, own = s["patch_embed.proj.weight"], model.tokenizer.proj.weight
    if (kernel.shape[0], kernel.shape[1], *kernel.shape[2:]) != (own.shape[0], own.shape[1], *own.shape[3:]):
        raise VivitError(f"{image.source}: patch_embed.proj.weight {tuple(kernel.shape)} does not fit "
                         f"tokenizer.proj.weight {tuple(own.shape)} (D, C, t, h, w)")
    model.tokenizer.load_image_kernel(kernel, s["patch_embed.proj.bias"], tubelet_init)
    ours = {k: v.detach().clone() for k, v in model.tokenizer.state_dict(prefix="tokenizer.").items()}
    enc_name = "spatial" if cfg.variant == "fe" else "encoder"
    encoder = getattr(model, enc_name)
    for key, value in s.items():
        if key.startswith("blocks.") and cfg.variant == "fsa":
            _, i, rest = key.split(".", 2)
            module, param = rest.rsplit(".", 1)
            ours.update({f"{enc_name}.blocks.{i}.{dst}.{param}": value for dst in FSA_FROM_IMAGE[module]})
        elif key.startswith(("blocks.", "norm.")):
            ours[f"{enc_name}.{key}"] = value
    if cfg.variant == "fsa" and fsa_temporal_init == "zero":
        for i in range(cfg.depth):
            for param in ("weight", "bias"):
                ours[f"{enc_name}.blocks.{i}.attn_time.proj.{param}"] = torch.zeros_like(s[f"blocks.{i}.attn.proj.{param}"])
    has_cls = "cls_token" in s
    if encoder.cls_token is not None and has_cls:
        ours[f"{enc_name}.cls_token"] = s["cls_token"]
    pos_key = f"{enc_name}.pos_embed"
    ours[pos_key] = _pos_embed(s["pos_embed"], has_cls, encoder.grid, encoder.num_prefix, pos_interpolation)
    report = load_state_dict(model, ours, image.source, allow_missing=("",))
    report.used, report.unexpected = image.used, image.unused
    if s["pos_embed"].shape != ours[pos_key].shape:
        report.resampled = {pos_key: [list(s["pos_embed"].shape), list(ours[pos_key].shape)]}
    tiling = f", tiled over {encoder.grid[0]} frame(s)" if len(encoder.grid) == 3 else ""
    report.notes.append(f"tubelet init {tubelet_init}; positional embedding resized {pos_interpolation}{tiling}")
    if cfg.variant == "fsa":
        report.notes.append(f"temporal attention: {fsa_temporal_init}")
    if has_cls and encoder.cls_token is None:
        report.notes.append("image cls token and its positional entry unused (gap classifier)")
    return report
