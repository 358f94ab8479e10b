"""Hugging Face transformers ViViT (`VivitModel`, `VivitForVideoClassification`) <-> ours (Model 1).

HF only implements Model 1 with a tubelet tokeniser and a cls token. Its inputs are `pixel_values`
(B, T, C, H, W); ours are (B, C, T, H, W): `video = pixel_values.transpose(1, 2)`.
Both key generations are read: transformers 5.x (`layers.i.attention.q_proj`, `mlp.fc1`) and 4.x
(`encoder.layer.i.attention.attention.query`, `intermediate.dense`). The mapping goes through the
timm layout (`blocks.i.attn.qkv`, ...), which HF's image `ViTModel` shares (see `image_vit`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vivit.config import ViViTConfig
from vivit.errors import ConfigError, VivitError
from vivit.model.vivit import ViViT
from vivit.weights.store import LoadReport, block_depth, build, read_state_dict, sibling_config, strip_wrapper_prefix

# HF 5.x block sub-module -> timm/ours block sub-module (each has .weight and .bias).
BLOCK_V5 = {"layernorm_before": "norm1", "attention.o_proj": "attn.proj", "layernorm_after": "norm2",
            "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
QKV_V5 = ("attention.q_proj", "attention.k_proj", "attention.v_proj")  # fused into attn.qkv in this order
# HF 4.x block sub-module -> 5.x block sub-module.
BLOCK_V4_TO_V5 = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
                  "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj",
                  "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
                  "layernorm_before": "layernorm_before", "layernorm_after": "layernorm_after"}
# HF activation name -> our gelu_approximation.
HF_ACTIVATIONS = {"gelu_fast": "tanh", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
IGNORED = ("pooler.",)  # HF's optional pre-logits pooler (VivitModel/ViTModel): no ViViT counterpart
NAMES = ("v5", "v4")


def _table(depth: int) -> dict[str, str]:
    """HF 5.x key -> timm-layout key for every tensor except the separate q/k/v projections."""
    table = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed"}
    for p in ("weight", "bias"):
        table[f"embeddings.patch_embeddings.projection.{p}"] = f"patch_embed.proj.{p}"
        table[f"layernorm.{p}"] = f"norm.{p}"
        for i in range(depth):
            table.update({f"layers.{i}.{hf}.{p}": f"blocks.{i}.{ours}.{p}" for hf, ours in BLOCK_V5.items()})
    return table


def _rename(key: str, prefix: str, table: Mapping[str, str], new_prefix: str) -> str:
    m = re.match(rf"{re.escape(prefix)}(\d+)\.(.+)\.(weight|bias)$", key)
    if m and m.group(2) in table:
        return f"{new_prefix}{m.group(1)}.{table[m.group(2)]}.{m.group(3)}"
    return key


def v5_to_v4(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename transformers 5.x keys (`layers.i...`) to 4.x keys (`encoder.layer.i...`); others unchanged
    (the inverse of the renaming `hf_to_timm` applies on reading)."""
    inverse = {v5: v4 for v4, v5 in BLOCK_V4_TO_V5.items()}
    return {_rename(k, "layers.", inverse, "encoder.layer."): v for k, v in sd.items()}


def hf_to_timm(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A HF ViT/ViViT encoder state dict (no model prefix, either key generation) -> timm layout,
    plus the source keys used. Works for image ViTs (Conv2d patch kernel) and ViViT (Conv3d)."""
    original = {_rename(k, "encoder.layer.", BLOCK_V4_TO_V5, "layers."): k for k in sd}  # 5.x name -> source name
    sd5 = {new: sd[old] for new, old in original.items()}
    depth = block_depth(sd5, r"layers\.(\d+)\.")
    table = _table(depth)
    out = {timm: sd5[hf] for hf, timm in table.items() if hf in sd5}
    used = [hf for hf in table if hf in sd5]
    for i in range(depth):
        for p in ("weight", "bias"):
            parts = [f"layers.{i}.{name}.{p}" for name in QKV_V5]
            if all(k in sd5 for k in parts):
                out[f"blocks.{i}.attn.qkv.{p}"] = torch.cat([sd5[k] for k in parts])
                used += parts
    return out, [original[k] for k in used]


def timm_to_hf(sd: Mapping[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Timm layout -> HF 5.x encoder keys (the inverse of `hf_to_timm`); a qkv_bias=False model has no
    q/k/v biases (transformers' `VivitConfig(qkv_bias=False)` builds its q/k/v projections without)."""
    out = {hf: sd[timm] for hf, timm in _table(depth).items()}
    for i in range(depth):
        for p in ("weight", "bias"):
            if p == "bias" and f"blocks.{i}.attn.qkv.bias" not in sd:
                continue
            for name, chunk in zip(QKV_V5, sd[f"blocks.{i}.attn.qkv.{p}"].chunk(3), strict=True):
                out[f"layers.{i}.{name}.{p}"] = chunk
    return out


def timm_to_ours(sd: Mapping[str, torch.Tensor], encoder: str = "encoder") -> dict[str, torch.Tensor]:
    """Timm layout -> our keys: the tokeniser takes `patch_embed.proj`, the named encoder the rest."""
    def rename(key: str) -> str:
        return key.replace("patch_embed.proj.", "tokenizer.proj.") if key.startswith("patch_embed.") else f"{encoder}.{key}"

    return {rename(k): v for k, v in sd.items()}


# What transformers assumes for a field config.json leaves out: the defaults of its `VivitConfig`
# (transformers/models/vivit/configuration_vivit.py, class VivitConfig: the google/vivit-b-16x2-kinetics400 sizes).
HF_DEFAULTS: dict[str, Any] = {
    "image_size": 224, "num_frames": 32, "tubelet_size": [2, 16, 16], "num_channels": 3, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu_fast",
    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": 1e-6, "qkv_bias": True,
}


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# HF field -> (valid?, what it must be) for the fields that are not positive integers.
HF_CHECKS = {
    "image_size": (lambda v: _count(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_count, v))),
                   "a positive integer (or [height, width])"),
    "tubelet_size": (lambda v: isinstance(v, (list, tuple)) and len(v) == 3 and all(map(_count, v)),
                     "[t, h, w] of positive integers"),
    "hidden_act": (lambda v: isinstance(v, str) and v in HF_ACTIVATIONS, f"one of {sorted(HF_ACTIVATIONS)}"),
    "hidden_dropout_prob": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "attention_probs_dropout_prob": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "layer_norm_eps": (lambda v: _number(v) and v > 0, "a positive number"),
    "qkv_bias": (lambda v: isinstance(v, bool), "true or false"),
}


def _hf_field(c: Mapping[str, Any], name: str) -> Any:
    """Field `name` of a HF config dict, transformers' default when absent; a bad value is a ConfigError naming it."""
    value = c.get(name, HF_DEFAULTS[name])
    valid, what = HF_CHECKS.get(name, (_count, "a positive integer"))
    if not valid(value):
        raise ConfigError(f"HF config field {name}={value!r} is not {what}; fix config.json (or leave the field out "
                          f"for transformers' default {HF_DEFAULTS[name]!r})")
    return value


def config_from_hf(hf_config: Any, num_classes: int | None = None) -> ViViTConfig:
    """Our config for a HF `VivitConfig` (object or dict): sizes, tubelet, frames, qkv bias, eps, GELU. Fields
    left out take transformers' `VivitConfig` defaults (`HF_DEFAULTS`), as `from_pretrained` does."""
    c = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
    if c.get("model_type", "vivit") != "vivit":
        raise ConfigError(f"HF config has model_type={c['model_type']!r}; expected 'vivit' (for image ViTs use image_vit)")
    f = {name: _hf_field(c, name) for name in HF_DEFAULTS}
    if num_classes is None:
        labels = c.get("id2label") or {}
        num_classes = len(labels) if isinstance(labels, Mapping) else 0
        num_classes = num_classes or c.get("num_labels", 0)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"HF config field num_labels={num_classes!r} is not an integer >= 0")
    return ViViTConfig(
        variant="st", classifier="token", tokenizer="tubelet", num_classes=num_classes,
        num_frames=f["num_frames"], image_size=f["image_size"], tubelet=tuple(f["tubelet_size"]),
        in_channels=f["num_channels"], width=f["hidden_size"], depth=f["num_hidden_layers"],
        num_heads=f["num_attention_heads"], mlp_dim=f["intermediate_size"], qkv_bias=f["qkv_bias"],
        layer_norm_eps=f["layer_norm_eps"], gelu_approximation=HF_ACTIVATIONS[f["hidden_act"]],
        dropout=f["hidden_dropout_prob"], attention_dropout=f["attention_probs_dropout_prob"],
    )


def hf_config(config: ViViTConfig) -> dict[str, Any]:
    """Keyword arguments for `transformers.VivitConfig` describing the same model as `config`."""
    if (config.variant, config.tokenizer, config.classifier) != ("st", "tubelet", "token"):
        raise ConfigError("HF ViViT implements Model 1 only: variant='st', tokenizer='tubelet', classifier='token'; "
                          f"got {config.variant!r}, {config.tokenizer!r}, {config.classifier!r}")
    if config.image_size[0] != config.image_size[1]:
        raise ConfigError(f"HF ViViT needs a square image_size, got {config.image_size}")
    if config.class_splits:
        raise ConfigError("HF VivitForVideoClassification has one classifier: a multi-head model (class_splits "
                          f"{list(config.class_splits)}) cannot be converted")
    if config.representation_size is not None:
        raise ConfigError("HF VivitForVideoClassification has no pre-logits layer (its classifier reads the cls token): "
                          f"representation_size must be None, got {config.representation_size}")
    return dict(
        hidden_size=config.width, num_hidden_layers=config.depth, num_attention_heads=config.num_heads,
        intermediate_size=config.mlp_dim, num_frames=config.num_frames, image_size=config.image_size[0],
        tubelet_size=list(config.tubelet), num_channels=config.in_channels, num_labels=config.num_classes,
        qkv_bias=config.qkv_bias, layer_norm_eps=config.layer_norm_eps,
        hidden_act="gelu_fast" if config.gelu_approximation == "tanh" else "gelu",
        hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.attention_dropout,
    )


def convert_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """HF ViViT state dict -> (our state dict, source keys used, source keys ignored). Keys that fit
    neither the mapping nor the ignorable pooler raise, naming them."""
    prefix = "vivit." if any(k.startswith("vivit.") for k in sd) else ""
    encoder = {k.removeprefix(prefix): v for k, v in sd.items() if not k.startswith("classifier.")}
    timm, used = hf_to_timm(encoder)
    ours = timm_to_ours(timm)
    ours.update({f"head.{k.split('.')[-1]}": v for k, v in sd.items() if k.startswith("classifier.")})
    used_src = [prefix + k for k in used] + [k for k in sd if k.startswith("classifier.")]
    leftover = sorted(set(sd) - set(used_src))
    ignored = [k for k in leftover if k.removeprefix(prefix).startswith(IGNORED)]
    unknown = sorted(set(leftover) - set(ignored))
    if unknown:
        raise VivitError(f"HF checkpoint has keys with no ViViT counterpart: {unknown[:8]} "
                         "(is it a ViViT checkpoint? only VivitModel / VivitForVideoClassification are supported)")
    return ours, used_src, ignored


def to_hf(model: ViViT, names: str = "v5", classification: bool = True) -> dict[str, torch.Tensor]:
    """Our Model 1 -> a state dict for `VivitForVideoClassification` (or `VivitModel` with
    classification=False, without its pooler), with 5.x or 4.x key names."""
    if names not in NAMES:
        raise ConfigError(f"names={names!r} is not allowed; choose one of {list(NAMES)}")
    hf_config(model.config)  # raises for what HF cannot represent
    sd = model.state_dict()
    timm = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    timm.update({k.replace("tokenizer.proj.", "patch_embed.proj."): v for k, v in sd.items() if k.startswith("tokenizer.")})
    hf = timm_to_hf(timm, model.config.depth)
    hf = v5_to_v4(hf) if names == "v4" else hf
    if not classification:
        return {k: v.clone() for k, v in hf.items()}
    out = {f"vivit.{k}": v.clone() for k, v in hf.items()}
    if model.config.num_classes:
        out.update({"classifier.weight": sd["head.weight"].clone(), "classifier.bias": sd["head.bias"].clone()})
    return out


def read_hf(src: Any, config: Any = None) -> tuple[dict[str, torch.Tensor], Any, str]:
    """(state dict, HF config, description) from a HF model, a state dict, a folder or a weights file."""
    if isinstance(src, nn.Module):
        return src.state_dict(), config if config is not None else src.config, type(src).__name__
    if isinstance(src, Mapping):
        return dict(src), config, "HF state dict"
    return read_state_dict(src), config if config is not None else sibling_config(src), str(src)


def load_hf(src: Any, config: Any = None, **overrides: Any) -> tuple[ViViT, LoadReport]:
    """`from_hf` plus the load report. `config`: a HF `VivitConfig`/dict, or our `ViViTConfig`. A DDP /
    torch.compile prefix on every key (`store.strip_wrapper_prefix`) is removed and reported."""
    sd, hf_cfg, source = read_hf(src, config)
    if hf_cfg is None:
        raise ConfigError(f"{source}: a HF config is needed (config.json next to the weights, or config=...)")
    sd, wrapper_prefix = strip_wrapper_prefix(sd)
    ours, used, ignored = convert_state_dict(sd)
    num_classes = ours["head.weight"].shape[0] if "head.weight" in ours else 0
    cfg = hf_cfg if isinstance(hf_cfg, ViViTConfig) else config_from_hf(hf_cfg, num_classes)
    model, report = build(cfg, ours, source, **overrides)
    report.used, report.unexpected, report.wrapper_prefix = used, ignored, wrapper_prefix
    return model, report


def from_hf(src: Any, config: Any = None, **overrides: Any) -> ViViT:
    """A ViViT (Model 1) from HF ViViT weights: a `VivitModel`/`VivitForVideoClassification`, its state
    dict (with `config`), a downloaded folder (config.json + model.safetensors or pytorch_model.bin,
    read with weights_only=True, or their sharded `*.index.json` + shards) or a weights file. Overrides (e.g. `num_frames=16`) adapt the model."""
    return load_hf(src, config, **overrides)[0]


def labels_from_hf(hf_config: Any) -> list[str] | None:
    """Class names from a HF config's id2label, or None when they are HF's LABEL_i placeholders."""
    c = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
    id2label = {int(k): v for k, v in (c.get("id2label") or {}).items()}
    labels = [id2label[i] for i in range(len(id2label))]
    return None if not labels or all(v == f"LABEL_{i}" for i, v in enumerate(labels)) else labels


# A folder for transformers ------------------------------------------------------------------------------
PROCESSOR_FILE = "preprocessor_config.json"
BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, VivitImageProcessor's default `resample`


def image_processor_config(crop: int, short_side: int, normalization: Any = "minus_one_one") -> dict[str, Any]:
    """`VivitImageProcessor` settings for our preprocessing: resize the short side to `short_side`, centre crop
    `crop`, then our normalisation. The processor computes `x * rescale_factor - 1` (offset=True; its video
    processor always subtracts 1) and then, if do_normalize, `(x - mean) / std`: [-1, 1] is rescale_factor
    1/127.5 without normalize (the Hub checkpoint's extra mean = std = 0.5 gives [-3, 1]); our (mean, std) on
    [0, 1] pixels is rescale_factor 1/255 with mean - 1 and std, since (x/255 - 1) - (mean - 1) = x/255 - mean."""
    common = {"image_processor_type": "VivitImageProcessor", "do_resize": True, "size": {"shortest_edge": short_side},
              "resample": BILINEAR, "do_center_crop": True, "crop_size": {"height": crop, "width": crop},
              "do_rescale": True, "offset": True}
    if normalization == "minus_one_one":
        return {**common, "rescale_factor": 1 / 127.5, "do_normalize": False,
                "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0]}
    mean, std = normalization
    return {**common, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [float(m) - 1 for m in mean], "image_std": [float(s) for s in std]}


def hf_folder_config(config: ViViTConfig, labels: list[str]) -> dict[str, Any]:
    """`config.json` of a `VivitForVideoClassification` folder: the architecture and id2label/label2id."""
    if not config.num_classes:
        raise ConfigError("HF VivitForVideoClassification needs a classifier: this model has num_classes=0")
    if len(labels) != config.num_classes or len(set(labels)) != len(labels):
        raise ConfigError(f"HF id2label needs {config.num_classes} distinct class names, got {len(labels)} "
                          f"({len(set(labels))} distinct)")
    return {"architectures": ["VivitForVideoClassification"], "model_type": "vivit", **hf_config(config),
            "id2label": {str(i): name for i, name in enumerate(labels)},
            "label2id": {name: i for i, name in enumerate(labels)}}


def save_hf(model: ViViT, out: str | Path, labels: list[str], processor: Mapping[str, Any]) -> Path:
    """Write a folder `transformers.VivitForVideoClassification.from_pretrained` loads: config.json,
    model.safetensors (4.x key names, which transformers 4.x reads and 5.x converts on loading, as it does
    for the Hub checkpoint) and preprocessor_config.json (`processor`, see `image_processor_config`)."""
    from safetensors.torch import save_file

    from vivit.weights.store import write_folder

    config = hf_folder_config(model.config, labels)
    tensors = {k: v.contiguous() for k, v in to_hf(model, names="v4").items()}

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / PROCESSOR_FILE).write_text(json.dumps(dict(processor), indent=2) + "\n", encoding="utf-8")

    return write_folder(Path(out), write)
