"""Initialise any ViViT variant from a 2D image ViT (Sec. 3.4, "Initialisation by leveraging pretrained models").

Sources, recognised by their keys and first brought to the timm layout (`patch_embed.proj`, `cls_token`,
`pos_embed`, `blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`):
- big_vision / original Google ViT `.npz` ('/'-joined Flax names, as in Scenic);
- timm state dicts (safetensors);
- HF `ViTModel` / `ViTForImageClassification` state dicts (5.x or 4.x names) or the modules themselves.
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
from typing import Any, NamedTuple

import torch
from torch import nn

from vivit.config import ViViTConfig
from vivit.errors import ConfigError, VivitError
from vivit.model import posembed
from vivit.model.tokenizers import TUBELET_INITS
from vivit.model.vivit import ViViT
from vivit.weights import hf, scenic
from vivit.weights.store import LoadReport, block_depth, load_state_dict, read_state_dict, sibling_config

FSA_TEMPORAL_INITS = ("copy", "zero")
POS_INTERPOLATIONS = ("bicubic", "bilinear")
# Image-classifier parts (and HF's masked-image token) that a video model leaves unused.
IGNORABLE = ("head", "fc_norm", "pre_logits", "pooler", "classifier", "embeddings.mask_token")
# Image block sub-module -> Model 3 block sub-modules that receive it.
FSA_FROM_IMAGE = {"norm1": ("norm_space", "norm_time"), "attn.qkv": ("attn_space.qkv", "attn_time.qkv"),
                  "attn.proj": ("attn_space.proj", "attn_time.proj"), "norm2": ("norm_mlp",),
                  "mlp.fc1": ("mlp.fc1",), "mlp.fc2": ("mlp.fc2",)}
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}  # ViT Ti/S/B/L/H


class ImageViT(NamedTuple):
    """An image ViT in timm layout, with the source keys it came from and those left unused."""

    state: dict[str, torch.Tensor]
    used: list[str]
    unused: list[str]
    source: str
    num_heads: int | None


def _from_big_vision(sd: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], set[str], int]:
    arrays = {k.removeprefix("params/"): v.numpy() if isinstance(v, torch.Tensor) else v for k, v in sd.items()}
    flat = scenic.TrackedTree(arrays)
    enc = scenic.encoder_to_ours(flat, "Transformer", "x")
    out = {k.removeprefix("x."): v for k, v in enc.items()}
    kernel = scenic.tensor(flat["embedding/kernel"])  # (h, w, C, D)
    out["patch_embed.proj.weight"] = kernel.permute(3, 2, 0, 1)
    out["patch_embed.proj.bias"] = scenic.tensor(flat["embedding/bias"])
    if "cls" in flat:
        out["cls_token"] = scenic.tensor(flat["cls"])
    heads = flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"].shape[1]
    return out, {f"params/{k}" if f"params/{k}" in sd else k for k in flat.read}, heads


def _from_timm(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
    keep = {k: v for k, v in sd.items()
            if k.startswith(("patch_embed.proj.", "blocks.", "norm.")) or k in ("cls_token", "pos_embed")}
    return keep, set(keep)


def read_image_vit(source: Any) -> ImageViT:
    """Any supported image ViT (module, state dict, .npz/.safetensors/.bin file or folder) -> timm layout."""
    heads = None
    if isinstance(source, ImageViT):
        return source
    if isinstance(source, nn.Module):
        heads = getattr(getattr(source, "config", None), "num_attention_heads", None)
        name, sd = type(source).__name__, source.state_dict()
    elif isinstance(source, Mapping):
        name, sd = "image ViT state dict", dict(source)
    else:
        name, sd = str(source), read_state_dict(source)
        heads = (sibling_config(source) or {}).get("num_attention_heads")
    keys = list(sd)
    if any("Transformer/encoderblock_0/" in k for k in keys):
        state, used, heads = _from_big_vision(sd)
        name += " (big_vision layout)"
    elif "blocks.0.attn.qkv.weight" in keys:
        state, used = _from_timm(sd)
        name += " (timm layout)"
    elif any(k.removeprefix("vit.").startswith(("layers.0.", "encoder.layer.0.")) for k in keys):
        prefix = "vit." if any(k.startswith("vit.") for k in keys) else ""
        state, used_hf = hf.hf_to_timm({k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)})
        used = {prefix + k for k in used_hf}
        name += " (HF ViT layout)"
    else:
        raise VivitError(f"{name}: not a recognised image ViT (big_vision .npz, timm or HF ViTModel); keys start {keys[:5]}")
    unused = sorted(set(keys) - used)
    foreign = [k for k in unused if not k.removeprefix("vit.").startswith(IGNORABLE)]
    if foreign:
        raise VivitError(f"{name}: tensors with no ViViT counterpart: {foreign[:8]} (a ViT variant with extra layers?)")
    return ImageViT(state, sorted(used), unused, name, heads)


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
