"""Initialise any ViViT variant from a 2D image ViT (Sec. 3.4, "Initialisation by leveraging pretrained models").

Sources (original Google ViT / AugReg `.npz`, big_vision, Scenic ViT `.npz` or msgpack train state, Linen,
timm, HF `ViTModel`) are recognised and brought to the timm layout by `image_layouts.read_image_vit`.
Then: the tokeniser gets the 2D kernel by `central_frame` (Eq. 9), `inflate` (Eq. 8) or `random`;
positional embeddings are resized per frame (bicubic by default) when the patch grid differs and tiled
over time; Models 1 and 4 take the image blocks as they are; the FE spatial encoder takes them and its
temporal encoder stays freshly initialised; Model 3 copies the image attention into both spatial and
temporal attention (`fsa_temporal_init="copy"`, official default) or zero-initialises the temporal
output projection (`"zero"`, the paper: identity at start).

`recipe="scenic"` reproduces the official `initialise_from_train_state` (Scenic
`projects/vivit/model_utils.py`, called by `ViViTClassificationModel.init_from_train_state`): the FE
spatial cls token and Model 3's `LayerNorm_time` stay at their initialisation, positional embeddings
follow `init_posemb` with `positional_embed_size_change` (`tile`, `resize`, `resize_tile`) and
`scipy.ndimage.zoom(order=1)` resizing (= `bilinear_aligned`). Every model tensor left at its
initialisation is listed in the report's `missing`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vivit.config import ViViTConfig, check_choice
from vivit.errors import ConfigError, VivitError
from vivit.model import posembed
from vivit.model.tokenizers import TUBELET_INITS
from vivit.model.vivit import ViViT
from vivit.weights.hf import HF_ACTIVATIONS
from vivit.weights.image_layouts import PRE_LOGITS, PRE_LOGITS_SOURCES, ImageViT, read_image_vit, timm_depth
from vivit.weights.store import LoadReport, load_state_dict

FSA_TEMPORAL_INITS = ("copy", "zero")
POS_INTERPOLATIONS = posembed.SPATIAL_MODES
RECIPES = ("default", "scenic")
# Official `init_from.positional_embed_size_change` (Scenic model_utils.init_posemb).
POS_SIZE_CHANGES = ("resize_tile", "tile", "resize")
# Layouts whose positional embedding is not at Transformer/posembed_input: the official init leaves it at init.
POS_NOT_RESTORED = ("big_vision", "big_vision-2021")
# Image block sub-module -> Model 3 block sub-modules that receive it.
FSA_FROM_IMAGE = {"norm1": ("norm_space", "norm_time"), "attn.qkv": ("attn_space.qkv", "attn_time.qkv"),
                  "attn.proj": ("attn_space.proj", "attn_time.proj"), "norm2": ("norm_mlp",),
                  "mlp.fc1": ("mlp.fc1",), "mlp.fc2": ("mlp.fc2",)}
# Official init_encoderblock: LayerNorm_0 -> LayerNorm_space only; LayerNorm_time keeps its init.
FSA_FROM_IMAGE_SCENIC = {**FSA_FROM_IMAGE, "norm1": ("norm_space",)}
HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}  # ViT Ti/S/B/L/H
TUBELET_FRAMES = 2  # frames per tubelet of the official ViViT configs (16x2, 8x2 tubelets)
# transformers' ViTConfig defaults (transformers/models/vit/configuration_vit.py, class ViTConfig): what a
# model_type "vit" config.json that leaves these fields out means.
HF_VIT_DEFAULTS = {"hidden_act": "gelu", "layer_norm_eps": 1e-12}


def config_for_image_vit(image: ImageViT, variant: str = "st", num_frames: int = 32, **overrides: Any) -> ViViTConfig:
    """A ViViT config matching an image ViT's sizes: width, depth, heads, MLP, input channels, q/k/v bias,
    patch and image size. The tubelet takes `TUBELET_FRAMES` frames, or 1 where that does not divide `num_frames`
    (e.g. 1 frame), unless `tubelet` is given. GELU and LayerNorm eps stay the official ViViT's (tanh, 1e-6)
    unless overridden."""
    s = image.state
    width, in_channels, ph, pw = s["patch_embed.proj.weight"].shape
    side = math.isqrt(s["pos_embed"].shape[1] - int("cls_token" in s))
    frames_per_tubelet = TUBELET_FRAMES if num_frames % TUBELET_FRAMES == 0 else 1
    kw: dict[str, Any] = dict(
        variant=variant, num_frames=num_frames, image_size=(side * ph, side * pw), tubelet=(frames_per_tubelet, ph, pw),
        in_channels=in_channels, width=width, depth=timm_depth(s),
        num_heads=image.num_heads or HEADS_BY_WIDTH.get(width, 0), mlp_dim=s["blocks.0.mlp.fc1.weight"].shape[0],
        qkv_bias=image.qkv_bias, classifier="gap" if variant in ("fsa", "fdp") else "token",
    )
    kw.update(overrides)
    image.check_heads(kw["num_heads"])
    image.check_qkv_bias(kw["qkv_bias"])
    if kw["num_heads"] == 0:
        raise ConfigError(f"cannot tell the head count of a width-{width} image ViT: pass num_heads")
    return ViViTConfig(**kw)


def architecture_note(image: ImageViT, config: ViViTConfig) -> str | None:
    """One line when the source's transformers config states another GELU or LayerNorm eps than `config` has:
    what the source says, what the ViViT uses, and the config fields that would match the source."""
    c = image.hf_config
    if c is None:
        return None
    defaults = HF_VIT_DEFAULTS if c.get("model_type") == "vit" else {}
    act, eps = c.get("hidden_act", defaults.get("hidden_act")), c.get("layer_norm_eps", defaults.get("layer_norm_eps"))
    says, uses, match = [], [], []
    if isinstance(act, str) and HF_ACTIVATIONS.get(act) != config.gelu_approximation:
        says.append(f"hidden_act={act!r}")
        uses.append(f"gelu_approximation={config.gelu_approximation!r}")
        match.append(f"gelu_approximation={HF_ACTIVATIONS[act]!r}" if act in HF_ACTIVATIONS else
                     f"(no gelu_approximation computes {act!r})")
    if isinstance(eps, (int, float)) and eps != config.layer_norm_eps:
        says.append(f"layer_norm_eps={eps:g}")
        uses.append(f"layer_norm_eps={config.layer_norm_eps:g}")
        match.append(f"layer_norm_eps={eps:g}")
    if not says:
        return None
    return (f"the source's config says {', '.join(says)}; this ViViT uses {', '.join(uses)} (the official ViViT "
            f"and JAX ViT); to match the source, build it with {', '.join(match)}")


def _square_side(n: int, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise VivitError(f"{what} has {n} patch tokens: not a square grid")
    return side


def _pos_embed(image_pos: torch.Tensor, has_cls: bool, grid: tuple[int, ...], num_prefix: int, mode: str) -> torch.Tensor:
    """Image embedding (1, [cls] + h*w, D) -> the encoder's (1, prefix + prod(grid), D): resized in space,
    tiled over time (Sec. 3.4); the cls entry is kept when the encoder has a cls token (zeros if the image has none)."""
    cls, patches = posembed.split_prefix(image_pos.float(), int(has_cls))
    side = _square_side(patches.shape[1], "image positional embedding")
    spatial = grid[-2:]
    patches = posembed.resample(patches, (side, side), spatial, 0, spatial_mode=mode)
    if len(grid) == 3:
        patches = posembed.tile_over_time(patches, grid[0], num_prefix=0)
    if not num_prefix:
        return patches
    return torch.cat([cls if has_cls else patches.new_zeros(1, 1, patches.shape[-1]), patches], dim=1)


def _zoom_square(grid: torch.Tensor, n_tokens: int, mode: str) -> torch.Tensor:
    """Official `interpolate_positional_embeddings`: a square grid (N, D) resized to side int(sqrt(n_tokens))."""
    side, new = _square_side(len(grid), "image positional embedding"), math.isqrt(n_tokens)
    return posembed.resample(grid[None], (side, side), (new, new), 0, spatial_mode=mode)[0]


def _tile(grid: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Official `tile_positional_embeddings`: the whole sequence (N, D) repeated int(n_tokens / N) times."""
    return grid.repeat(n_tokens // len(grid), 1)


def _scenic_pos_embed(image_pos: torch.Tensor, has_cls: bool, own_pos: torch.Tensor, num_prefix: int,
                      frames: int, size_change: str, mode: str) -> torch.Tensor:
    """Official `init_posemb` (non-temporal encoder): same shape -> copied; else the cls entry is split off
    (the image's, or the model's own initial one when the image has none), the image positions are made
    `n_tokens` long by `size_change` (`resize_tile`: resized to n_tokens // frames, then tiled), cls re-attached."""
    if image_pos.shape == own_pos.shape:
        return image_pos.float().clone()
    grid = image_pos[0, int(has_cls):].float()
    cls = (image_pos[:, :1] if has_cls else own_pos[:, :1]).float()[:, :num_prefix]
    n_tokens = own_pos.shape[1] - num_prefix
    if len(grid) != n_tokens:
        if size_change == "resize":
            grid = _zoom_square(grid, n_tokens, mode)
        elif size_change == "tile":
            grid = _tile(grid, n_tokens)
        else:
            grid = _tile(_zoom_square(grid, n_tokens // frames, mode), n_tokens)
    if len(grid) != n_tokens:
        raise VivitError(f"recipe='scenic', pos_size_change={size_change!r} turns the image's {len(image_pos[0]) - int(has_cls)} "
                         f"positions into {len(grid)}, the model needs {n_tokens} (the official code fails here too): "
                         f"choose another pos_size_change")
    return torch.cat([cls, grid[None]], dim=1)


def _check_options(recipe: str, tubelet_init: str, fsa_temporal_init: str, pos_interpolation: str | None,
                   pos_size_change: str, frames_per_tubelet: int) -> None:
    for name, value, allowed in (("recipe", recipe, RECIPES), ("tubelet_init", tubelet_init, TUBELET_INITS),
                                 ("fsa_temporal_init", fsa_temporal_init, FSA_TEMPORAL_INITS),
                                 ("pos_interpolation", pos_interpolation or "bicubic", POS_INTERPOLATIONS),
                                 ("pos_size_change", pos_size_change, POS_SIZE_CHANGES)):
        check_choice(name, value, allowed)
    if recipe == "default" and pos_size_change != "resize_tile":
        raise ConfigError(f"pos_size_change={pos_size_change!r} is an option of recipe='scenic'; the default recipe "
                          "resizes each frame's grid and tiles it over time (resize_tile)")
    if recipe == "scenic" and fsa_temporal_init != "copy":
        raise ConfigError("recipe='scenic' copies the image attention into the temporal attention (official); "
                          "fsa_temporal_init='zero' needs recipe='default'")
    if recipe == "scenic" and tubelet_init == "random" and frames_per_tubelet > 1:
        raise ConfigError("recipe='scenic' inflates the image kernel (official central_frame_initializer or "
                          "average_frame_initializer): tubelet_init must be 'central_frame' or 'inflate'")


@torch.no_grad()
def init_from_image_vit(
    model: ViViT,
    source: Any,
    tubelet_init: str = "central_frame",
    fsa_temporal_init: str = "copy",
    pos_interpolation: str | None = None,
    recipe: str = "default",
    pos_size_change: str = "resize_tile",
) -> LoadReport:
    """Initialise `model` (any variant, either tokeniser) from an image ViT (Sec. 3.4); `recipe="scenic"`
    reproduces the official `initialise_from_train_state`. `pos_interpolation` defaults to bicubic
    (default recipe) or bilinear_aligned (scenic: `scipy.ndimage.zoom(order=1)`). The report lists the
    source keys used and unused, and every model tensor left at its initialisation (`missing`)."""
    t = model.tokenizer.tubelet[0]
    _check_options(recipe, tubelet_init, fsa_temporal_init, pos_interpolation, pos_size_change, t)
    scenic_recipe = recipe == "scenic"
    interpolation = pos_interpolation or ("bilinear_aligned" if scenic_recipe else "bicubic")
    image = read_image_vit(source)
    s, cfg = image.state, model.config
    image.check_heads(cfg.num_heads)
    image.check_qkv_bias(cfg.qkv_bias)
    if timm_depth(s) != cfg.depth:
        raise VivitError(f"{image.source}: image ViT has {timm_depth(s)} blocks, the model's (spatial) depth is {cfg.depth}")
    kernel, own = s["patch_embed.proj.weight"], model.tokenizer.proj.weight
    if (kernel.shape[0], kernel.shape[1], *kernel.shape[2:]) != (own.shape[0], own.shape[1], *own.shape[3:]):
        raise VivitError(f"{image.source}: patch_embed.proj.weight {tuple(kernel.shape)} does not fit "
                         f"tokenizer.proj.weight {tuple(own.shape)} (D, C, t, h, w)")
    # A depth-1 tubelet is the 2D kernel itself, which the official code copies whatever the init method.
    kernel_init = "central_frame" if t == 1 and (scenic_recipe or tubelet_init != "random") else tubelet_init
    model.tokenizer.load_image_kernel(kernel, s["patch_embed.proj.bias"], kernel_init)
    ours = {k: v.detach().clone() for k, v in model.tokenizer.state_dict(prefix="tokenizer.").items()
            if not (kernel_init == "random" and k == "tokenizer.proj.weight")}
    enc_name = "spatial" if cfg.variant == "fe" else "encoder"
    encoder = getattr(model, enc_name)
    fsa_map = FSA_FROM_IMAGE_SCENIC if scenic_recipe else FSA_FROM_IMAGE
    for key, value in s.items():
        if key.startswith("blocks.") and cfg.variant == "fsa":
            _, i, rest = key.split(".", 2)
            module, param = rest.rsplit(".", 1)
            ours.update({f"{enc_name}.blocks.{i}.{dst}.{param}": value for dst in fsa_map[module]})
        elif key.startswith(("blocks.", "norm.")):
            ours[f"{enc_name}.{key}"] = value
    if cfg.variant == "fsa" and fsa_temporal_init == "zero":
        for i in range(cfg.depth):
            for param in ("weight", "bias"):
                ours[f"{enc_name}.blocks.{i}.attn_time.proj.{param}"] = torch.zeros_like(s[f"blocks.{i}.attn.proj.{param}"])
    has_cls = "cls_token" in s
    # Official: top-level keys are copied by identical name only, so `cls` never reaches `cls_SpatialTransformer`.
    if encoder.cls_token is not None and has_cls and not (scenic_recipe and cfg.variant == "fe"):
        ours[f"{enc_name}.cls_token"] = s["cls_token"]
    pos_key = f"{enc_name}.pos_embed"
    notes = [f"recipe {recipe}; tubelet init {kernel_init}"]
    if scenic_recipe and image.layout in POS_NOT_RESTORED:
        notes.append(f"{pos_key} kept at its initialisation (official: only Transformer/posembed_input is restored, "
                     f"not the pos_embedding of a {image.layout} checkpoint)")
    elif scenic_recipe:
        ours[pos_key] = _scenic_pos_embed(s["pos_embed"], has_cls, encoder.pos_embed, encoder.num_prefix,
                                          cfg.grid[0], pos_size_change, interpolation)
        notes.append(f"positional embedding: official positional_embed_size_change={pos_size_change!r}, {interpolation} resize")
        sensible = _pos_embed(s["pos_embed"], has_cls, encoder.grid, 0, interpolation)
        patches = ours[pos_key][:, encoder.num_prefix:]
        if sensible.shape != patches.shape or not torch.allclose(sensible, patches, atol=1e-6):
            notes.append(f"{pos_key}: the official {pos_size_change!r} rule (reproduced) is not a per-frame resize of "
                         "the image grid tiled over time; resize_tile (Models 1, 3, 4) or resize (FE) is")
    else:
        ours[pos_key] = _pos_embed(s["pos_embed"], has_cls, encoder.grid, encoder.num_prefix, interpolation)
        tiling = f", tiled over {encoder.grid[0]} frame(s)" if len(encoder.grid) == 3 else ""
        notes.append(f"positional embedding resized {interpolation}{tiling}")
    if cfg.variant == "fsa":
        notes.append(f"temporal attention: {fsa_temporal_init}")
    if note := architecture_note(image, cfg):
        notes.append(note)
    if has_cls and encoder.cls_token is None:
        notes.append("image cls token and its positional entry unused (gap classifier)")
    if not has_cls and encoder.cls_token is not None and pos_key in ours:
        notes.append(f"the image has no cls token: {pos_key}[:, 0] (cls entry) is "
                     f"{'its initial value (official)' if scenic_recipe else 'zeros'}")
    used, unused = image.used, image.unused
    if model.pre_logits is not None and f"{PRE_LOGITS}.weight" in s:
        if s[f"{PRE_LOGITS}.weight"].shape != model.pre_logits.weight.shape:
            raise VivitError(f"{image.source}: pre-logits of shape {tuple(s[f'{PRE_LOGITS}.weight'].shape)} do not fit "
                             f"the model's representation_size={cfg.representation_size}")
        ours.update({f"pre_logits.{p}": s[f"{PRE_LOGITS}.{p}"] for p in ("weight", "bias")})
        moved = [k for k in unused if any(src in k for src in PRE_LOGITS_SOURCES.values())]
        used, unused = sorted([*used, *moved]), [k for k in unused if k not in moved]
        notes.append("image pre-logits copied into pre_logits (official, with representation_size)")
    fresh = [k for k in model.state_dict() if k not in ours]
    report = load_state_dict(model, ours, image.source, allow_missing=fresh)
    report.used, report.unexpected, report.notes = used, unused, report.notes + notes
    report.wrapper_prefix = image.wrapper_prefix
    if pos_key in ours and s["pos_embed"].shape != ours[pos_key].shape:
        report.resampled = {pos_key: [list(s["pos_embed"].shape), list(ours[pos_key].shape)]}
    return report
