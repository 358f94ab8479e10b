"""Image-ViT checkpoints as they are published, recognised by sentinel keys and read into the timm layout
(`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.i.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`).

Flax layouts ('/'-joined names, under any prefix such as `opt/target/` or `params/`, from an `.npz`, a
nested parameter tree or a Flax msgpack train state; one table each in `FLAX_LAYOUTS`):
- `vit-npz`: the original Google ViT and AugReg `.npz` (`ViT-B_16.npz`), pre-Linen numbering
  `LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`;
- `big_vision`: Linen numbering, top-level `pos_embedding` (`Transformer/pos_embedding` before 2022) over
  the patch grid only, `MAPHead_0` pooling heads; blocks stacked by `nn.scan` are unstacked;
- `scenic`: Linen numbering under `Transformer/posembed_input` with an `output_projection` head
  (`scenic/projects/baselines/vit.py`, `ViT`); `linen`: the same with a `head`.
PyTorch layouts: timm state dicts and HF `ViTModel` / `ViTForImageClassification` (transformers 5.x or 4.x).
Recognition follows timm's `_load_weights` (`timm/models/vision_transformer.py`: prefix sentinels,
`MultiHeadDotProductAttention_1` vs `_0`) and big_vision's `fix_old_checkpoints` (`big_vision/models/vit.py`:
where the positional embedding lives). Classifier heads are left unused and reported; any other
leftover tensor, or a missing one, is an error naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from vivit.errors import ConfigError, VivitError
from vivit.weights import hf, scenic
from vivit.weights.store import (INDEX_SUFFIX, PICKLE_SUFFIXES, block_depth, read_state_dict, sibling_config,
                                 strip_wrapper_prefix)

# Image-classifier parts of the PyTorch layouts (and HF's masked-image token) that a video model leaves unused.
IGNORABLE = ("head", "fc_norm", "pre_logits", "pooler", "classifier", "attn_pool", "embeddings.mask_token")
# timm block sub-module -> (Flax sub-tree, kind) for the pre-Linen numbering of the original ViT code.
PRE_LINEN_BLOCK = {"norm1": ("LayerNorm_0", "ln"), "attn": ("MultiHeadDotProductAttention_1", "mha"),
                   "norm2": ("LayerNorm_2", "ln"), "mlp.fc1": ("MlpBlock_3/Dense_0", "dense"),
                   "mlp.fc2": ("MlpBlock_3/Dense_1", "dense")}
LINEN_BLOCK = scenic.JOINT_BLOCK  # LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0
POSEMBED_INPUT = "Transformer/posembed_input/pos_embedding"
SCAN_BLOCK = "Transformer/encoderblock/"  # big_vision `scan=True`: one block sub-tree, leading depth axis
# The image classifier's pre-logits Dense (+ tanh), kept in the timm layout under PRE_LOGITS so that a video model
# with `representation_size` can take it (as the official init does); it stays "unused" otherwise.
PRE_LOGITS = "pre_logits.fc"
PRE_LOGITS_SOURCES = {"flax": "pre_logits", "timm": "pre_logits.fc", "hf": "pooler.dense"}


class FlaxLayout(NamedTuple):
    """How one Flax ViT family names its tensors (keys relative to the checkpoint's prefix)."""

    description: str
    sentinels: tuple[str, ...]  # all present <=> this layout (tried in FLAX_LAYOUTS order)
    block: Mapping[str, tuple[str, str]]  # timm block sub-module -> (sub-tree of encoderblock_i, kind)
    pos: str  # positional embedding; without a cls entry when its length is a square
    heads: tuple[str, ...]  # top-level sub-trees of image heads: reported unused


FLAX_LAYOUTS = {
    "vit-npz": FlaxLayout("original Google ViT / AugReg .npz (pre-Linen names, also under opt/target/ or params/)",
                          ("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel",),
                          PRE_LINEN_BLOCK, POSEMBED_INPUT, ("head", "pre_logits")),
    "big_vision": FlaxLayout("big_vision ViT (params/, top-level pos_embedding, MAPHead_0)", ("pos_embedding",),
                             LINEN_BLOCK, "pos_embedding", ("head", "pre_logits", "MAPHead_0")),
    "big_vision-2021": FlaxLayout("big_vision ViT before 2022 (Transformer/pos_embedding)",
                                  ("Transformer/pos_embedding",), LINEN_BLOCK, "Transformer/pos_embedding", ("head", "pre_logits", "MAPHead_0")),
    "scenic": FlaxLayout("Scenic ViT (output_projection head; .npz or Flax msgpack train state)",
                         (POSEMBED_INPUT, "output_projection/kernel"), LINEN_BLOCK, POSEMBED_INPUT,
                         ("output_projection", "pre_logits", "MAPHead_0")),
    "linen": FlaxLayout("Linen ViT (MultiHeadDotProductAttention_0 under Transformer/posembed_input)",
                        (POSEMBED_INPUT,), LINEN_BLOCK, POSEMBED_INPUT, ("head", "pre_logits", "MAPHead_0")),
}
TORCH_LAYOUTS = {"timm": "timm state dict / safetensors (blocks.i.attn.qkv)",
                 "hf-v5": "HF ViTModel, transformers 5.x names (layers.i.attention.q_proj)",
                 "hf-v4": "HF ViTModel, transformers 4.x names (encoder.layer.i.attention.attention.query)"}
LAYOUTS = {**{k: v.description for k, v in FLAX_LAYOUTS.items()}, **TORCH_LAYOUTS}
BLOCK_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
MSGPACK_SUFFIXES = ("", ".msgpack")  # Flax writes `checkpoint_<step>` files without a suffix


class ImageViT(NamedTuple):
    """An image ViT in timm layout, with the source keys it came from and those left unused."""

    state: dict[str, torch.Tensor]
    used: list[str]
    unused: list[str]
    source: str
    num_heads: int | None  # None where the source does not tell (timm, HF without a config)
    layout: str = ""  # a key of LAYOUTS
    hf_config: dict[str, Any] | None = None  # the source's transformers config (config.json), when it has one
    wrapper_prefix: str = ""  # the DDP / torch.compile prefix removed from every source key (`strip_wrapper_prefix`)

    @property
    def qkv_bias(self) -> bool:
        """Whether the q/k/v projections have biases (timm / HF `qkv_bias=False` models have none)."""
        return "blocks.0.attn.qkv.bias" in self.state

    def check_heads(self, num_heads: int) -> None:
        """Refuse a model whose head count differs from the one the source states."""
        if self.num_heads is not None and self.num_heads != num_heads:
            raise VivitError(f"{self.source}: the image ViT has {self.num_heads} attention heads, the model "
                             f"{num_heads}; build the model with num_heads={self.num_heads}")

    def check_qkv_bias(self, qkv_bias: bool) -> None:
        """Refuse a model whose q/k/v biases the source lacks, or lacking those the source has."""
        if qkv_bias != self.qkv_bias:
            raise ConfigError(f"{self.source}: the image ViT has qkv_bias={self.qkv_bias} (q/k/v biases "
                              f"{'present' if self.qkv_bias else 'absent'}), the model qkv_bias={qkv_bias}; "
                              f"build the model with qkv_bias={self.qkv_bias}")


class _Read(NamedTuple):
    state: dict[str, torch.Tensor]
    used: set[str]
    ignorable: set[str]  # source keys outside the model that may stay unused (heads, optimiser state)
    num_heads: int | None
    layout: str


# Flax layouts -------------------------------------------------------------------------------------------
def _numpy(v: Any) -> np.ndarray:
    return v.detach().float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)


def _flax_prefix(keys: list[str]) -> str | None:
    """The path above `embedding/kernel` ('', 'params/', 'opt/target/', ...), or None if there is none."""
    found = [k[: -len("embedding/kernel")] for k in keys if k == "embedding/kernel" or k.endswith("/embedding/kernel")]
    return min(found, key=len) if found else None


def _unprefixed(sd: Mapping[str, Any], prefix: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Arrays under `prefix` with it removed, scan-stacked blocks split into `encoderblock_i`
    (big_vision's `scan_to_pyloop`), and each new key's source key."""
    arrays, origin = {}, {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        rel, array = key[len(prefix):], _numpy(value)
        if rel.startswith(SCAN_BLOCK):
            for i, layer in enumerate(array):
                name = f"Transformer/encoderblock_{i}/{rel.removeprefix(SCAN_BLOCK)}"
                arrays[name], origin[name] = layer, key
        else:
            arrays[rel], origin[rel] = array, key
    return arrays, origin


def _flax_to_timm(flat: scenic.TrackedTree, layout: FlaxLayout) -> dict[str, torch.Tensor]:
    kernel = scenic.tensor(flat["embedding/kernel"])  # (h, w, C, D); a video tubelet kernel has t in front
    out = {"patch_embed.proj.weight": kernel.movedim((-1, -2), (0, 1)),
           "patch_embed.proj.bias": scenic.tensor(flat["embedding/bias"])}
    pos = scenic.tensor(flat[layout.pos])
    if "cls" in flat:
        out["cls_token"] = scenic.tensor(flat["cls"])
        if math.isqrt(pos.shape[1]) ** 2 == pos.shape[1]:  # big_vision adds it before prepending cls: entry 0
            pos = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    out["pos_embed"] = pos
    out.update({f"norm.{k}": v for k, v in scenic.layer_to_ours(flat, "Transformer/encoder_norm", "ln").items()})
    if f"{PRE_LOGITS_SOURCES['flax']}/kernel" in flat:
        dense = scenic.TrackedTree(flat)  # a copy: read without marking the source keys used
        out.update({f"{PRE_LOGITS}.{k}": v for k, v in
                    scenic.layer_to_ours(dense, PRE_LOGITS_SOURCES["flax"], "dense").items()})
    for i in range(block_depth(flat, r"Transformer/encoderblock_(\d+)/")):
        for ours, (sub, kind) in layout.block.items():
            layer = scenic.layer_to_ours(flat, f"Transformer/encoderblock_{i}/{sub}", kind)
            out.update({f"blocks.{i}.{ours}.{k}": v for k, v in layer.items()})
    return out


def _read_flax(sd: Mapping[str, Any], prefix: str, name: str) -> _Read | None:
    arrays, origin = _unprefixed(sd, prefix)
    key = next((k for k, lay in FLAX_LAYOUTS.items() if all(s in arrays for s in lay.sentinels)), None)
    if key is None:
        return None
    layout, flat = FLAX_LAYOUTS[key], scenic.TrackedTree(arrays)
    try:
        state = _flax_to_timm(flat, layout)
        heads = flat[f"Transformer/encoderblock_0/{layout.block['attn'][0]}/query/kernel"].shape[1]  # (D, H, hd)
    except scenic.MissingTensorError as e:
        raise VivitError(f"{name} ({layout.description}): no tensor {prefix}{e.key}") from None
    used = {origin[k] for k in flat.read}
    ignorable = {origin[k] for k in arrays if k.split("/")[0] in layout.heads}
    ignorable |= {k for k in sd if not k.startswith(prefix)}  # optimiser state and the like beside the model
    return _Read(state, used, ignorable - used, heads, key)


# PyTorch layouts -------------------------------------------------------------------------------------------
def _read_timm(sd: Mapping[str, torch.Tensor]) -> _Read:
    keep = {k: v for k, v in sd.items()
            if k.startswith(("patch_embed.proj.", "blocks.", "norm.")) or k in ("cls_token", "pos_embed")}
    extra = {k: v for k, v in sd.items() if k.startswith(PRE_LOGITS_SOURCES["timm"] + ".")}
    return _Read({**keep, **extra}, set(keep), {k for k in sd if k.startswith(IGNORABLE)}, None, "timm")


def _read_hf(sd: Mapping[str, torch.Tensor], heads: int | None) -> _Read:
    prefix = "vit." if any(k.startswith("vit.") for k in sd) else ""
    state, used = hf.hf_to_timm({k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)})
    ignorable = {k for k in sd if k.removeprefix(prefix).startswith(IGNORABLE)}
    layout = "hf-v4" if any(k.removeprefix(prefix).startswith("encoder.layer.") for k in sd) else "hf-v5"
    pooler = f"{prefix}{PRE_LOGITS_SOURCES['hf']}."  # HF's pooler: tanh(Dense(cls)), the converted pre-logits
    state.update({PRE_LOGITS + k.removeprefix(pooler[:-1]): v for k, v in sd.items() if k.startswith(pooler)})
    return _Read(state, {prefix + k for k in used}, ignorable, heads, layout)


def timm_depth(state: Mapping[str, torch.Tensor]) -> int:
    """The number of blocks of a timm-layout state dict (`blocks.i.`)."""
    return block_depth(state, r"blocks\.(\d+)\.")


def _missing(state: Mapping[str, torch.Tensor]) -> list[str]:
    """timm-layout tensors every ViViT encoder needs that `state` lacks; the q/k/v bias may be absent from
    every block (a `qkv_bias=False` model), not from some."""
    depth = timm_depth(state)
    need = ["patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias"]
    need += [f"blocks.{i}.{part}.{p}" for i in range(depth) for part in BLOCK_PARTS for p in ("weight", "bias")]
    if not any(f"blocks.{i}.attn.qkv.bias" in state for i in range(depth)):
        need = [k for k in need if not k.endswith(".attn.qkv.bias")]
    return [k for k in need if k not in state]


# Entry point ---------------------------------------------------------------------------------------------------
def _load(source: Any) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """(description, flat state dict, the config of a HF module or the config.json beside a file) of a module,
    mapping or file."""
    if isinstance(source, nn.Module):
        config = getattr(source, "config", None)
        return type(source).__name__, source.state_dict(), config.to_dict() if hasattr(config, "to_dict") else None
    if isinstance(source, Mapping):
        if any(isinstance(v, Mapping) for v in source.values()):  # a nested Flax tree or train state
            return "Flax parameter tree", scenic.flatten(scenic.params_of(dict(source))), None
        return "image ViT state dict", dict(source), None
    path = Path(source)
    if path.is_file() and path.suffix in MSGPACK_SUFFIXES:
        return str(path), scenic.flatten(scenic.params_of(scenic.restore_checkpoint(path))), None
    readable = path.suffix in (".npz", ".safetensors", *PICKLE_SUFFIXES) or path.name.endswith(INDEX_SUFFIX)
    if path.is_file() and not readable:
        raise VivitError(f"{path}: unknown weights format {path.suffix!r}; image ViTs are read from .npz, "
                         f".safetensors, {', '.join(PICKLE_SUFFIXES)}, a sharded checkpoint's *{INDEX_SUFFIX} "
                         "or a Flax msgpack checkpoint (no suffix)")
    return str(path), read_state_dict(path), sibling_config(path)


def read_image_vit(source: Any) -> ImageViT:
    """Any supported image ViT (module, state dict, Flax tree, .npz/.safetensors/.bin file, HF folder or
    Flax msgpack checkpoint) -> timm layout, with the layout recognised and the source keys used / unused
    (named without a DDP / torch.compile prefix that every key carries: it is removed and kept in `wrapper_prefix`)."""
    if isinstance(source, ImageViT):
        return source
    name, sd, config = _load(source)
    sd, wrapper_prefix = strip_wrapper_prefix(sd)
    heads = (config or {}).get("num_attention_heads")
    hf_config = config if config is not None and "model_type" in config else None  # a transformers config
    keys = list(sd)
    prefix = _flax_prefix(keys)
    read = _read_flax(sd, prefix, name) if prefix is not None else None
    if read is None and "blocks.0.attn.qkv.weight" in sd:
        read = _read_timm(sd)
    elif read is None and any(re.match(r"(vit\.)?(layers|encoder\.layer)\.0\.", k) for k in keys):
        read = _read_hf(sd, heads)
    if read is None:
        raise VivitError(f"{name}: not a recognised image ViT; layouts understood: {'; '.join(LAYOUTS.values())} "
                         f"(its keys start {keys[:4]})")
    source_name = f"{name} ({read.layout} layout)"
    if missing := _missing(read.state):
        raise VivitError(f"{source_name}: no tensor for {missing[:4]} (timm names){' ...' if len(missing) > 4 else ''}")
    kernel = read.state["patch_embed.proj.weight"]
    if kernel.ndim != 4:
        raise VivitError(f"{source_name}: patch kernel of shape {tuple(kernel.shape)} is not an image ViT's "
                         "(D, C, h, w): a video checkpoint? load it with from_scenic / from_hf")
    unused = sorted(set(keys) - read.used)
    if foreign := [k for k in unused if k not in read.ignorable]:
        raise VivitError(f"{source_name}: tensors with no ViViT counterpart: {foreign[:8]} "
                         "(a ViT variant with extra layers?)")
    return ImageViT(read.state, sorted(read.used), unused, source_name, read.num_heads, read.layout, hf_config,
                    wrapper_prefix)
