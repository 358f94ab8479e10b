"""Typed model configuration and the named presets (paper Table 1 sizes x the four variants)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vivit.errors import ConfigError

VARIANTS = {
    "st": "spatio-temporal joint attention (Model 1)",
    "fe": "factorised encoder (Model 2)",
    "fsa": "factorised self-attention (Model 3)",
    "fdp": "factorised dot-product attention (Model 4)",
}
TOKENIZERS = ("tubelet", "uniform_frame")
# Pooling before the head (official ViViT.__call__): cls token, token 0 without a cls (the first patch),
# mean / max / sum over all tokens.
CLASSIFIERS = ("token", "0", "gap", "gmp", "gsp")
TOKEN_FREE_CLASSIFIERS = ("gap", "gmp", "gsp")  # what Models 3 and 4 allow
TEMPORAL_POOLS = ("transformer", "avg")
FSA_ORDERS = ("space_time", "time_space")
GELU_APPROXIMATIONS = ("tanh", "none")


@dataclass(frozen=True)
class ViViTConfig:
    """Everything that defines a ViViT model. Invalid values fail here, naming the field."""

    variant: str = "st"                      # one of VARIANTS
    num_classes: int = 400                   # classifier outputs; 0 = no head (features only)
    class_splits: tuple[int, ...] | None = None  # multi-head (e.g. (300, 97)): the logits split along the last axis
    split_names: tuple[str, ...] | None = None   # a name per split, e.g. ("noun", "verb"); None = "1", "2", ...
    num_frames: int = 32                     # input frames T
    image_size: tuple[int, int] = (224, 224)  # input (H, W); an int means square
    in_channels: int = 3
    tokenizer: str = "tubelet"               # "tubelet" (Sec. 3.2, Fig. 3) or "uniform_frame" (Fig. 2)
    tubelet: tuple[int, int, int] = (2, 16, 16)  # (t, h, w); uniform_frame needs t = 1
    width: int = 768                         # hidden size d
    depth: int = 12                          # encoder layers L (spatial encoder L_s for "fe")
    num_heads: int = 12
    mlp_dim: int = 3072
    temporal_depth: int = 4                  # "fe": temporal encoder layers L_t (paper default 4)
    temporal_width: int | None = None        # "fe": temporal encoder width; None = width
    temporal_heads: int | None = None        # "fe": None = num_heads
    temporal_mlp_dim: int | None = None      # "fe": None = mlp_dim
    temporal_pool: str = "transformer"       # "fe": "transformer" or "avg" (average-pool baseline)
    classifier: str = "token"                # one of CLASSIFIERS; "fe" pools each frame and then time with it
    representation_size: int | None = None   # pre-logits Dense + tanh before the head (official); None = none
    fsa_order: str = "space_time"            # "fsa": paper order; the official code defaults to time_space
    fsa_zero_init_temporal: bool = False     # "fsa": zero the temporal attention output (paper: identity at start)
    dropout: float = 0.0                     # after pos-embed, attention output and MLP
    attention_dropout: float = 0.0
    drop_path: float = 0.0                   # stochastic depth; layer l drops with rate * l / (L - 1)
    drop_path_rescale: bool = False          # kept branch x 1 / (1 - p) (common DropPath); official: not rescaled
    head_dropout: float = 0.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    gelu_approximation: str = "tanh"         # the official code and HF use the tanh approximation
    dynamic_size: bool = False               # accept other T/H/W by resampling positional embeddings

    def __post_init__(self) -> None:
        if isinstance(self.image_size, int):
            object.__setattr__(self, "image_size", (self.image_size, self.image_size))
        object.__setattr__(self, "image_size", tuple(self.image_size))
        object.__setattr__(self, "tubelet", tuple(self.tubelet))
        check_choice("variant", self.variant, tuple(VARIANTS))
        check_choice("tokenizer", self.tokenizer, TOKENIZERS)
        check_choice("classifier", self.classifier, CLASSIFIERS)
        check_choice("temporal_pool", self.temporal_pool, TEMPORAL_POOLS)
        check_choice("fsa_order", self.fsa_order, FSA_ORDERS)
        check_choice("gelu_approximation", self.gelu_approximation, GELU_APPROXIMATIONS)
        if len(self.image_size) != 2 or len(self.tubelet) != 3:
            raise ConfigError(f"image_size must be (H, W) and tubelet (t, h, w); got {self.image_size}, {self.tubelet}")
        for name in ("num_frames", "in_channels", "width", "depth", "num_heads", "mlp_dim", "temporal_depth"):
            _positive(name, getattr(self, name), allow_zero=name == "temporal_depth")
        for name in ("temporal_width", "temporal_heads", "temporal_mlp_dim", "representation_size"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0 (0 = no head), got {self.num_classes}")
        self._check_splits()
        if any(v <= 0 for v in (*self.image_size, *self.tubelet)):
            raise ConfigError(f"image_size and tubelet must be positive, got {self.image_size}, {self.tubelet}")
        for name in ("dropout", "attention_dropout", "drop_path", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.tokenizer == "uniform_frame" and self.tubelet[0] != 1:
            raise ConfigError(f"tokenizer='uniform_frame' embeds single frames: tubelet must be (1, h, w), got {self.tubelet}")
        self._check_tubelet_fits()
        if self.width % self.num_heads:
            raise ConfigError(f"width {self.width} must be divisible by num_heads {self.num_heads}")
        if self.variant == "fe" and self.temporal_pool == "transformer":
            if self.temporal_depth == 0:
                raise ConfigError("temporal_depth=0 with variant 'fe' means no temporal encoder: set temporal_pool='avg'")
            if self.temporal_dim % self.temporal_num_heads:
                raise ConfigError(f"temporal_width {self.temporal_dim} must be divisible by temporal_heads {self.temporal_num_heads}")
        if self.variant in ("fsa", "fdp") and self.classifier not in TOKEN_FREE_CLASSIFIERS:
            raise ConfigError(f"variant '{self.variant}' groups tokens by space and time: classifier={self.classifier!r} "
                              f"is not allowed; choose one of {list(TOKEN_FREE_CLASSIFIERS)}")
        if self.variant == "fdp" and self.num_heads < 2:
            raise ConfigError("variant 'fdp' splits heads between time and space: num_heads must be >= 2")

    def _check_tubelet_fits(self) -> None:
        """Each input axis is a whole number of tubelets: num_frames by t, image_size (H, W) by (h, w)."""
        sizes = {"num_frames": self.num_frames, "image_size[0]": self.image_size[0], "image_size[1]": self.image_size[1]}
        for (name, size), axis, step in zip(sizes.items(), "thw", self.tubelet):
            if size % step:
                fits = [d for d in range(1, size + 1) if size % d == 0]
                raise ConfigError(f"{name}={size} does not fit tubelet={self.tubelet} (t, h, w): its {axis} size {step} "
                                  f"must divide {name}; set {name} to a multiple of {step}, or the tubelet's {axis} to "
                                  f"one of {fits[:12]}{' ...' if len(fits) > 12 else ''}")

    def _check_splits(self) -> None:
        """class_splits: positive ints summing to num_classes; split_names: unique, one per split (Scenic's
        default names "1", "2", ... when not given)."""
        if self.class_splits is None:
            if self.split_names is not None:
                raise ConfigError(f"split_names {list(self.split_names)} need class_splits (the size of each split)")
            return
        splits = tuple(self.class_splits) if isinstance(self.class_splits, (list, tuple)) else ()
        if not splits or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in splits):
            raise ConfigError(f"class_splits must be a list of positive integers, got {self.class_splits!r}")
        if sum(splits) != self.num_classes:
            raise ConfigError(f"class_splits {list(splits)} sum to {sum(splits)}, not num_classes={self.num_classes}; "
                              f"set num_classes={sum(splits)} or class_splits=None (one head)")
        names = tuple(self.split_names) if self.split_names is not None else tuple(str(i + 1) for i in range(len(splits)))
        if len(names) != len(splits) or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"split_names must be {len(splits)} different non-empty names, one per class split "
                              f"{list(splits)}, got {list(names)}")
        object.__setattr__(self, "class_splits", splits)
        object.__setattr__(self, "split_names", names)

    # Derived sizes -------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (n_t, n_h, n_w) of the configured input."""
        t, h, w = self.tubelet
        return self.num_frames // t, self.image_size[0] // h, self.image_size[1] // w

    @property
    def splits(self) -> dict[str, int]:
        """Name -> size of each split of the logits; a single head is one split named "class"."""
        if self.class_splits is None:
            return {"class": self.num_classes}
        return dict(zip(self.split_names, self.class_splits))

    @property
    def temporal_dim(self) -> int:
        return self.temporal_width or self.width

    @property
    def temporal_num_heads(self) -> int:
        return self.temporal_heads or self.num_heads

    @property
    def temporal_mlp(self) -> int:
        return self.temporal_mlp_dim or self.mlp_dim

    def replace(self, **overrides: Any) -> "ViViTConfig":
        """A copy with fields changed; unknown fields raise ConfigError naming them."""
        _check_fields(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ViViTConfig":
        _check_fields(d)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _check_fields(d: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(ViViTConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown model config field(s) {unknown}; allowed: {sorted(known)}")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ConfigError unless `value` is one of `allowed`, naming the option and the choices."""
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    if not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be an integer {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# Presets ------------------------------------------------------------------------------------------
# ViT sizes (paper Table 1 and ViT): width, depth, heads, mlp.
SIZES: dict[str, dict[str, int]] = {
    "ti": dict(width=192, depth=12, num_heads=3, mlp_dim=768),
    "s": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
    "b": dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
    "l": dict(width=1024, depth=24, num_heads=16, mlp_dim=4096),
    "h": dict(width=1280, depth=32, num_heads=16, mlp_dim=5120),
}
VARIANT_DEFAULTS: dict[str, dict[str, Any]] = {
    "st": dict(variant="st", classifier="token"),
    "fe": dict(variant="fe", classifier="token"),
    "fe-avg": dict(variant="fe", classifier="token", temporal_pool="avg"),
    "fsa": dict(variant="fsa", classifier="gap"),
    "fdp": dict(variant="fdp", classifier="gap"),
}
PRESETS: dict[str, ViViTConfig] = {
    f"vivit-{size}-16x2-{kind}": ViViTConfig(tubelet=(2, 16, 16), **dims, **VARIANT_DEFAULTS[kind])
    for size, dims in SIZES.items()
    for kind in VARIANT_DEFAULTS
}
