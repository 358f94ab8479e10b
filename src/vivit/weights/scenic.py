"""Official Scenic (Flax) ViViT checkpoints <-> ours, for Models 1-4 and the factorised encoder.

The parameter tree (REFERENCE.md): `embedding/{kernel,bias}`, `cls` (Model 1) or `cls_SpatialTransformer`
/ `cls_TemporalTransformer` (FE), `Transformer/` or `SpatialTransformer/` + `TemporalTransformer/` with
`posembed_input/pos_embedding`, `encoder_norm` and `encoderblock_i/...`, and `output_projection`.
Depths, widths, heads, `representation_size` (`pre_logits`) and a `token` classifier (a cls parameter)
are read from the tree. What the tree cannot tell is given as arguments: the frame count of a Model 1/3/4
checkpoint (official: 32), Model 4 vs Model 1 (same parameters), the Model 3 attention order (official
default `time_space`), the classifier of a tree without cls (`0`, `gap`, `gmp` or `gsp`: official
default `gap`, assumed with a warning) and the input size of a non-square token grid.
Checkpoints are msgpack files; `restore_checkpoint` reads them with the `msgpack` package alone
(the `scenic` extra), decoding Flax's array encoding, so neither flax nor jax is needed.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vivit.config import ViViTConfig
from vivit.errors import ConfigError, VivitError
from vivit.model.vivit import ViViT
from vivit.weights.store import LoadReport, block_depth, build

Tree = dict[str, Any]

# Block layouts: our sub-module -> (Scenic sub-tree, kind). Kinds: ln, dense, mha.
JOINT_BLOCK = {"norm1": ("LayerNorm_0", "ln"), "attn": ("MultiHeadDotProductAttention_0", "mha"),
               "norm2": ("LayerNorm_1", "ln"), "mlp.fc1": ("MlpBlock_0/Dense_0", "dense"),
               "mlp.fc2": ("MlpBlock_0/Dense_1", "dense")}
FSA_BLOCK = {"norm_space": ("LayerNorm_space", "ln"), "attn_space": ("MultiHeadDotProductAttention_space", "mha"),
             "norm_time": ("LayerNorm_time", "ln"), "attn_time": ("MultiHeadDotProductAttention_time", "mha"),
             "norm_mlp": ("LayerNorm_mlp", "ln"), "mlp.fc1": ("MlpBlock/Dense_0", "dense"),
             "mlp.fc2": ("MlpBlock/Dense_1", "dense")}
# Our encoder -> (Scenic sub-tree, Scenic cls parameter), per variant family.
ENCODERS = {"fe": {"spatial": ("SpatialTransformer", "cls_SpatialTransformer"),
                   "temporal": ("TemporalTransformer", "cls_TemporalTransformer")},
            "other": {"encoder": ("Transformer", "cls")}}


# Reading msgpack checkpoints ----------------------------------------------------------------------
def _ext_hook(code: int, data: bytes) -> Any:
    """Flax's msgpack extension types: 1 = ndarray, 2 = complex, 3 = numpy scalar; an array is the
    msgpack-packed tuple (shape, dtype name, raw bytes)."""
    import msgpack

    if code in (1, 3):
        shape, dtype, buffer = msgpack.unpackb(data, raw=False)
        if dtype == "bfloat16":  # not a numpy dtype: widen the raw 16 bits to float32
            bits = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32).reshape(shape)
        else:
            array = np.frombuffer(buffer, dtype=np.dtype(dtype)).reshape(shape)
        return array if code == 1 else array[()]
    if code == 2:
        real, imag = msgpack.unpackb(data, raw=False)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


# msgpack decoding of a Flax checkpoint (its array extension types), read whole or streamed.
UNPACK_OPTIONS = dict(ext_hook=_ext_hook, raw=False, strict_map_key=False)


def require_msgpack() -> Any:
    """The `msgpack` module, or a VivitError naming the extra that installs it."""
    try:
        import msgpack
    except ImportError as e:
        raise VivitError("reading Scenic checkpoints needs msgpack: pip install 'vivit[scenic]'") from e
    return msgpack


def _unchunk(tree: Any) -> Any:
    """Flax splits arrays over 1 GiB into {'__msgpack_chunked_array__', 'shape', 'chunks'}."""
    if not isinstance(tree, dict):
        return tree
    if "__msgpack_chunked_array__" in tree:
        shape = [tree["shape"][str(i)] for i in range(len(tree["shape"]))]
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return np.concatenate(chunks).reshape(shape)
    return {k: _unchunk(v) for k, v in tree.items()}


def restore_checkpoint(path: str | Path) -> Tree:
    """Read a Flax msgpack checkpoint into a nested dict of numpy arrays (no flax, no jax)."""
    msgpack = require_msgpack()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    try:
        tree = msgpack.unpackb(path.read_bytes(), **UNPACK_OPTIONS)
    except (ValueError, msgpack.UnpackException) as e:
        raise VivitError(f"{path} is not a Flax msgpack checkpoint: {e}") from e
    return _unchunk(tree)


def params_of(tree: Tree) -> Tree:
    """The model parameters of a train state: ['optimizer']['target'], ['params'] or the tree itself."""
    if isinstance(tree.get("optimizer"), dict) and "target" in tree["optimizer"]:
        tree = tree["optimizer"]["target"]
    elif isinstance(tree.get("params"), dict):
        tree = tree["params"]
    return tree.get("params", tree) if "embedding" not in tree else tree


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    out: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def unflatten(flat: Mapping[str, np.ndarray]) -> Tree:
    tree: Tree = {}
    for key, v in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


# Layer conversions ---------------------------------------------------------------------------------
def tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.float32))


def layer_to_ours(flat: Mapping[str, np.ndarray], src: str, kind: str) -> dict[str, torch.Tensor]:
    """One Scenic layer -> our tensors (suffixes weight/bias, or qkv.*/proj.* for attention)."""
    if kind == "ln":
        return {"weight": tensor(flat[f"{src}/scale"]), "bias": tensor(flat[f"{src}/bias"])}
    if kind == "dense":
        return {"weight": tensor(flat[f"{src}/kernel"]).T, "bias": tensor(flat[f"{src}/bias"])}
    d = flat[f"{src}/query/kernel"].shape[0]
    qkv = [tensor(flat[f"{src}/{n}/kernel"]).reshape(d, -1).T for n in ("query", "key", "value")]  # (d, H, hd) -> (H*hd, d)
    qkv_bias = [tensor(flat[f"{src}/{n}/bias"]).reshape(-1) for n in ("query", "key", "value")]  # (H, hd) -> H*hd
    out = tensor(flat[f"{src}/out/kernel"])  # (H, hd, d)
    return {"qkv.weight": torch.cat(qkv), "qkv.bias": torch.cat(qkv_bias),
            "proj.weight": out.reshape(-1, out.shape[-1]).T, "proj.bias": tensor(flat[f"{src}/out/bias"])}


def layer_to_scenic(sd: Mapping[str, torch.Tensor], ours: str, dst: str, kind: str, heads: int) -> dict[str, np.ndarray]:
    """Inverse of `layer_to_ours`; `heads` restores the (H, hd) split of the attention kernels."""
    n = lambda k: sd[f"{ours}.{k}"].detach().float().numpy()  # noqa: E731
    if kind == "ln":
        return {f"{dst}/scale": n("weight"), f"{dst}/bias": n("bias")}
    if kind == "dense":
        return {f"{dst}/kernel": n("weight").T, f"{dst}/bias": n("bias")}
    d = n("proj.weight").shape[0]
    out = {}
    for name, w, b in zip(("query", "key", "value"), np.split(n("qkv.weight"), 3), np.split(n("qkv.bias"), 3), strict=True):
        out[f"{dst}/{name}/kernel"] = w.T.reshape(d, heads, -1)
        out[f"{dst}/{name}/bias"] = b.reshape(heads, -1)
    out[f"{dst}/out/kernel"] = n("proj.weight").T.reshape(heads, -1, d)
    out[f"{dst}/out/bias"] = n("proj.bias")
    return out


def _depth(flat: Mapping[str, Any], encoder: str) -> int:
    return block_depth(flat, rf"{re.escape(encoder)}/encoderblock_(\d+)/")


def _block_layout(flat: Mapping[str, Any], encoder: str) -> dict[str, tuple[str, str]]:
    return FSA_BLOCK if f"{encoder}/encoderblock_0/LayerNorm_space/scale" in flat else JOINT_BLOCK


def encoder_to_ours(flat: Mapping[str, np.ndarray], src: str, dst: str) -> dict[str, torch.Tensor]:
    """A Scenic `Transformer`-style sub-tree (pos-embed, blocks, final norm) -> our `dst` encoder keys."""
    out = {f"{dst}.pos_embed": tensor(flat[f"{src}/posembed_input/pos_embedding"])}
    out.update({f"{dst}.norm.{k}": v for k, v in layer_to_ours(flat, f"{src}/encoder_norm", "ln").items()})
    layout = _block_layout(flat, src)
    for i in range(_depth(flat, src)):
        for ours, (scenic, kind) in layout.items():
            layer = layer_to_ours(flat, f"{src}/encoderblock_{i}/{scenic}", kind)
            out.update({f"{dst}.blocks.{i}.{ours}.{k}": v for k, v in layer.items()})
    return out


def embedding_to_ours(flat: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Conv kernel (t, h, w, C, D) or 2D (h, w, C, D) -> our Conv3d weight (D, C, t, h, w)."""
    kernel = tensor(flat["embedding/kernel"])
    kernel = kernel.permute(4, 3, 0, 1, 2) if kernel.ndim == 5 else kernel.permute(3, 2, 0, 1).unsqueeze(2)
    return {"tokenizer.proj.weight": kernel, "tokenizer.proj.bias": tensor(flat["embedding/bias"])}


# Whole models ---------------------------------------------------------------------------------------
class MissingTensorError(VivitError):
    """A tensor a converter needs is not in the checkpoint (`key`: its name in the flat tree)."""

    def __init__(self, key: str, source: str | None = None) -> None:
        super().__init__(f"{source}: missing tensor {key}" if source else f"missing tensor {key}")
        self.key = key


class TrackedTree(dict):
    """A flat tree that remembers which keys were read, so leftovers can be reported; reading an absent
    key raises MissingTensorError naming it."""

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise MissingTensorError(key)
        self.read.add(key)
        return super().__getitem__(key)


def convert_params(params: Tree) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Scenic parameter tree -> (our state dict, Scenic keys used). Unknown keys raise, naming them."""
    flat = TrackedTree(flatten(params))
    family = "fe" if "SpatialTransformer/posembed_input/pos_embedding" in flat else "other"
    out = embedding_to_ours(flat)
    for ours, (scenic, cls) in ENCODERS[family].items():
        if f"{scenic}/posembed_input/pos_embedding" in flat:
            out.update(encoder_to_ours(flat, scenic, ours))
            if cls in flat:
                out[f"{ours}.cls_token"] = tensor(flat[cls])
    for ours, theirs in (("pre_logits", "pre_logits"), ("head", "output_projection")):
        if f"{theirs}/kernel" in flat:
            out.update({f"{ours}.{k}": v for k, v in layer_to_ours(flat, theirs, "dense").items()})
    unknown = sorted(set(flat) - flat.read)
    if unknown:
        raise VivitError(f"Scenic tree has parameters with no ViViT counterpart: {unknown[:8]}")
    return out, sorted(flat.read)


def scenic_classifier(has_cls: bool, classifier: str | None) -> str:
    """The official classifier of a tree: a cls parameter exists for "token" only; "0", "gap", "gmp" and
    "gsp" leave no trace, so a tree without cls takes `classifier` (None: assume the official default "gap")."""
    if has_cls:
        if classifier not in (None, "token"):
            raise ConfigError(f"classifier={classifier!r}, but the Scenic tree has a cls token: its classifier is 'token'")
        return "token"
    if classifier == "token":
        raise ConfigError("classifier='token', but the Scenic tree has no cls token: pass one of '0', 'gap', 'gmp', 'gsp'")
    if classifier is None:
        warnings.warn("Scenic tree without cls token: assuming classifier='gap' (the official default); the tree cannot "
                      "tell it from '0', 'gmp' or 'gsp': pass classifier= as the checkpoint's config says", stacklevel=3)
        return "gap"
    return classifier  # ViViTConfig checks the value


def _image_size(spatial: int, patch: tuple[int, int], source_size: int | tuple[int, int] | None,
                where: str) -> tuple[int, int]:
    """Input (H, W) whose patch grid has `spatial` tokens per frame: `source_size` checked, or a square grid."""
    if source_size is None:
        side = math.isqrt(spatial)
        if side * side != spatial:
            raise ConfigError(f"Scenic positional embedding has {spatial} tokens per frame{where}, not a square grid: "
                              "pass the checkpoint's input size source_size=(H, W)")
        return side * patch[0], side * patch[1]
    size = (source_size, source_size) if isinstance(source_size, int) else tuple(source_size)
    if len(size) != 2 or (size[0] // patch[0]) * (size[1] // patch[1]) != spatial:
        raise ConfigError(f"source_size={source_size} does not fit the Scenic positional embedding: it has {spatial} "
                          f"tokens per frame{where}, patches {patch[0]}x{patch[1]}")
    return size


def config_from_scenic(params: Tree, num_frames: int = 32, variant: str | None = None,
                       fsa_order: str = "time_space", classifier: str | None = None,
                       source_size: int | tuple[int, int] | None = None) -> ViViTConfig:
    """Infer our config from a Scenic parameter tree. `num_frames` is needed for Models 1/3/4 (tokens
    = frames/t x h x w) and the FE average-pool baseline; `variant="fdp"` tells Model 4 from Model 1;
    `classifier` is needed for a tree without cls ("0", "gap", "gmp", "gsp"; None assumes "gap" with a
    warning); `source_size` (H, W) for a non-square token grid."""
    flat = TrackedTree(flatten(params))  # a tensor the config needs and the tree lacks: MissingTensorError
    if "embedding/kernel" not in flat:
        raise VivitError(f"not a Scenic ViViT tree: no embedding/kernel (top-level keys: {sorted(params)[:8]})")
    kernel = flat["embedding/kernel"]
    tubelet = tuple(kernel.shape[:3]) if kernel.ndim == 5 else (1, *kernel.shape[:2])
    width = kernel.shape[-1]
    fe = "SpatialTransformer/posembed_input/pos_embedding" in flat
    main = "SpatialTransformer" if fe else "Transformer"
    attn = "MultiHeadDotProductAttention_space" if _block_layout(flat, main) is FSA_BLOCK else "MultiHeadDotProductAttention_0"
    mlp = "MlpBlock" if attn.endswith("space") else "MlpBlock_0"
    classifier = scenic_classifier(("cls_SpatialTransformer" if fe else "cls") in flat, classifier)
    kw: dict[str, Any] = dict(
        tokenizer="tubelet" if kernel.ndim == 5 else "uniform_frame", tubelet=tubelet, width=width,
        in_channels=kernel.shape[-2], depth=_depth(flat, main),
        num_heads=flat[f"{main}/encoderblock_0/{attn}/query/kernel"].shape[1],
        mlp_dim=flat[f"{main}/encoderblock_0/{mlp}/Dense_0/kernel"].shape[1],
        num_classes=flat["output_projection/kernel"].shape[1] if "output_projection/kernel" in flat else 0,
        representation_size=flat["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in flat else None,
        classifier=classifier, layer_norm_eps=1e-6, gelu_approximation="tanh",
    )
    prefix = int(classifier == "token")
    pos = flat[f"{main}/posembed_input/pos_embedding"].shape[1] - prefix
    if fe:
        kw.update(variant="fe", temporal_pool="avg", num_frames=num_frames)
        if "TemporalTransformer/posembed_input/pos_embedding" in flat:
            t = "TemporalTransformer/encoderblock_0"
            kw.update(temporal_pool="transformer", temporal_depth=_depth(flat, "TemporalTransformer"),
                      temporal_heads=flat[f"{t}/MultiHeadDotProductAttention_0/query/kernel"].shape[1],
                      temporal_mlp_dim=flat[f"{t}/MlpBlock_0/Dense_0/kernel"].shape[1],
                      num_frames=(flat["TemporalTransformer/posembed_input/pos_embedding"].shape[1] - prefix) * tubelet[0])
        spatial, where = pos, ""
    else:
        kw.update(variant=variant or ("fsa" if attn.endswith("space") else "st"), num_frames=num_frames)
        if kw["variant"] == "fsa":
            kw["fsa_order"] = fsa_order
        n_t = num_frames // tubelet[0]
        if n_t == 0 or pos % n_t:
            raise ConfigError(f"Scenic positional embedding has {pos} tokens: not a whole number of frames for "
                              f"{num_frames} frames / tubelet {tubelet[0]}; pass the checkpoint's frame count (source_frames)")
        spatial, where = pos // n_t, f" ({pos} over {n_t} token frames from source_frames={num_frames})"
    kw["image_size"] = _image_size(spatial, tubelet[1:], source_size, where)
    return ViViTConfig(**kw)


def to_scenic_flat(sd: Mapping[str, torch.Tensor], config: ViViTConfig) -> dict[str, np.ndarray]:
    """Our state dict -> flat Scenic tree ('a/b/c' keys); the inverse of `convert_params`."""
    n = lambda k: sd[k].detach().float().numpy()  # noqa: E731
    kernel = n("tokenizer.proj.weight")  # (D, C, t, h, w)
    flat = {"embedding/kernel": kernel.transpose(2, 3, 4, 1, 0) if config.tokenizer == "tubelet"
            else kernel[:, :, 0].transpose(2, 3, 1, 0), "embedding/bias": n("tokenizer.proj.bias")}
    family = "fe" if config.variant == "fe" else "other"
    for ours, (scenic, cls) in ENCODERS[family].items():
        if f"{ours}.pos_embed" not in sd:
            continue
        heads = config.temporal_num_heads if ours == "temporal" else config.num_heads
        layout = FSA_BLOCK if config.variant == "fsa" else JOINT_BLOCK
        flat[f"{scenic}/posembed_input/pos_embedding"] = n(f"{ours}.pos_embed")
        flat.update(layer_to_scenic(sd, f"{ours}.norm", f"{scenic}/encoder_norm", "ln", heads))
        depth = config.temporal_depth if ours == "temporal" else config.depth
        for i in range(depth):
            for name, (sub, kind) in layout.items():
                flat.update(layer_to_scenic(sd, f"{ours}.blocks.{i}.{name}", f"{scenic}/encoderblock_{i}/{sub}", kind, heads))
        if f"{ours}.cls_token" in sd:
            flat[cls] = n(f"{ours}.cls_token")
    for ours, theirs in (("pre_logits", "pre_logits"), ("head", "output_projection")):
        if f"{ours}.weight" in sd:
            flat.update(layer_to_scenic(sd, ours, theirs, "dense", 0))
    return flat


def to_scenic(model: ViViT) -> Tree:
    """Our model -> a nested Scenic parameter tree (numpy arrays), as `optimizer/target` holds it."""
    if model.config.variant == "fe" and model.config.temporal_dim != model.config.width:
        raise ConfigError("Scenic's factorised encoder has one width: temporal_width must equal width")
    return unflatten(to_scenic_flat(model.state_dict(), model.config))


def load_scenic(src: str | Path | Tree, source_frames: int = 32, variant: str | None = None,
                fsa_order: str = "time_space", *, classifier: str | None = None,
                source_size: int | tuple[int, int] | None = None, **overrides: Any) -> tuple[ViViT, LoadReport]:
    """`from_scenic` plus the load report."""
    tree = restore_checkpoint(src) if isinstance(src, (str, Path)) else src
    params = params_of(tree)
    source = str(src) if isinstance(src, (str, Path)) else "Scenic parameter tree"
    try:
        config = config_from_scenic(params, source_frames, variant, fsa_order, classifier, source_size)
        ours, used = convert_params(params)
    except MissingTensorError as e:
        raise MissingTensorError(e.key, source) from None
    model, report = build(config, ours, source, **overrides)
    report.used = used
    if classifier is None and config.classifier != "token":
        report.notes.append("classifier 'gap' assumed (the tree cannot tell it from '0', 'gmp', 'gsp')")
    return model, report


def from_scenic(src: str | Path | Tree, source_frames: int = 32, variant: str | None = None,
                fsa_order: str = "time_space", *, classifier: str | None = None,
                source_size: int | tuple[int, int] | None = None, **overrides: Any) -> ViViT:
    """A ViViT from an official Scenic checkpoint (msgpack path, train state or parameter tree) trained
    on `source_frames` frames (official: 32; an FE tree tells its own) with `classifier` (needed for a
    tree without cls: "0", "gap", "gmp", "gsp"; None assumes "gap" and warns) at input `source_size`
    (H, W) (needed for a non-square token grid). Overrides (e.g. `num_frames=16`, `dynamic_size=True`)
    adapt the model; positional embeddings are resampled. A multi-head checkpoint (Epic-Kitchens) has one
    output_projection of sum(class_splits) logits: pass `class_splits=(300, 97), split_names=("noun", "verb")`
    (official `ViViTMultiHeadClassificationModel`; the tree cannot tell its splits)."""
    return load_scenic(src, source_frames, variant, fsa_order, classifier=classifier, source_size=source_size,
                       **overrides)[0]
