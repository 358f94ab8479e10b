"""Typed training configuration: a frozen `TrainConfig` with five sections, loaded from YAML or TOML
plus `section.key=value` overrides; unknown keys and wrong types fail naming the field."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vivit.engine.atomic import atomic_write
from vivit.errors import ConfigError
from vivit.textfiles import read_text

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
SPLIT_LOSSES = ("mean", "sum")  # multi-head loss over the class splits; "mean" is the official loss_function
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
INIT_KINDS = ("auto", "checkpoint", "pretrained", "image_vit")
TUBELET_INITS = ("central_frame", "inflate", "random")


@dataclass(frozen=True)
class ModelSection:
    """Which ViViT to build; frames, size and classes come from the data section."""

    name: str = "vivit-b-16x2-fe"            # a preset of vivit.list_models()
    overrides: dict = field(default_factory=dict)  # any ViViTConfig field, e.g. {depth: 4, temporal_depth: 2}
    drop_path: float = 0.0                    # stochastic depth rate (Eq. 10)
    init: str | None = None                   # image ViT weights, a pretrained folder or a training checkpoint
    init_kind: str = "auto"                   # one of INIT_KINDS; auto guesses from the path
    tubelet_init: str = "central_frame"       # 2D -> 3D kernel init when init_kind is image_vit (Eq. 8-9)
    init_recipe: str = "default"              # image_vit: ours, or "scenic" (the official init_from_train_state)
    pos_size_change: str = "resize_tile"      # image_vit, recipe scenic: official positional_embed_size_change
    grad_checkpointing: bool = False
    compile: bool = False                     # wrap the model in torch.compile


@dataclass(frozen=True)
class DataSection:
    """Where the videos are and how clips are sampled (see vivit.data.build_dataset)."""

    train: str = "data"                       # folder, list file (.txt) or Kinetics-style .csv
    val: str | None = None                    # None = the train source with val_split
    train_split: str | None = "train"         # train/val/test sub-folder or CSV split; null or "none": no split
    val_split: str | None = "val"             # null or "none": the whole `val` source, no validation without val
    num_frames: int = 32
    frame_stride: int = 2
    image_size: int = 224
    num_workers: int = 4
    val_clips: int = 1                        # views used by the per-epoch validation (eval uses --views)
    val_crops: int = 1
    augment: dict = field(default_factory=dict)  # AugmentConfig fields, e.g. {flip: 0.0}

    def __post_init__(self) -> None:  # "none" is the spelling of null that TOML and the command line have
        from vivit.data.sources import parse_split

        for name in ("train_split", "val_split"):
            object.__setattr__(self, name, parse_split(getattr(self, name)))


@dataclass(frozen=True)
class OptimSection:
    """Optimiser and regularisation (paper Table 7: SGD momentum 0.9, clip 1.0, no weight decay)."""

    name: str = "sgd"                         # one of OPTIMIZERS
    lr: float = 0.1                           # base learning rate, for base_batch_size clips per step
    base_batch_size: int | None = 64          # lr scales by batch_size / base_batch_size; None = no scaling
    momentum: float = 0.9                     # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    weight_decay: float = 0.0                 # not applied to biases, norms, cls tokens, positional embeddings
    clip_grad_norm: float | None = 1.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0                  # 0 = off
    split_loss: str = "mean"                  # multi-head: mean of the splits' losses (official loss_function) or sum


@dataclass(frozen=True)
class ScheduleSection:
    """Learning-rate schedule over optimiser steps: linear warmup then cosine decay."""

    name: str = "cosine"                      # one of SCHEDULES
    epochs: int = 30
    max_steps: int | None = None              # stop (and end the schedule) after this many optimiser steps
    warmup_epochs: float = 2.5
    min_lr: float = 0.0


@dataclass(frozen=True)
class RunSection:
    """Batching, precision, logging and checkpointing."""

    out: str = "runs/train"
    seed: int = 0
    batch_size: int = 64                      # clips per optimiser step over all processes and accumulation steps
    grad_accum: int = 1
    precision: str = "auto"                   # auto: bf16 on CUDA if supported, fp32 on CPU
    device: str = "auto"
    deterministic: bool = False               # deterministic algorithms (bitwise-reproducible resume on CPU)
    eval_every: int = 1                       # epochs between validations; 0 = only at the end
    save_every_steps: int = 0                 # also write last.pt every N steps (resume mid-epoch)
    keep_last: bool = True
    keep_best: bool = True
    log_every: int = 10                       # steps between CSV/TensorBoard rows
    max_nonfinite_steps: int = 3              # stop after this many consecutive steps with a NaN/inf loss or gradient
    overwrite: bool = False                   # replace a previous run in `out` (else only --resume may use it)
    tensorboard: bool = True                  # when the tensorboard package is installed


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return {s.name: _plain(dataclasses.asdict(getattr(self, s.name))) for s in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from nested dicts; unknown keys and wrong types raise ConfigError naming the key."""
        if not isinstance(d, dict):
            raise ConfigError(f"a training config must be a mapping of sections, got {type(d).__name__}")
        _reject_unknown(d, [f.name for f in dataclasses.fields(cls)], "")
        sections = {}
        for f in dataclasses.fields(cls):
            section_cls = f.default_factory  # type: ignore[misc]
            values = d.get(f.name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section '{f.name}' must be a mapping, got {values!r}")
            _reject_unknown(values, [g.name for g in dataclasses.fields(section_cls)], f"{f.name}.")
            hints = typing.get_type_hints(section_cls)
            sections[f.name] = section_cls(**{k: _coerce(f"{f.name}.{k}", v, hints[k]) for k, v in values.items()})
        return cls(**sections)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) file, apply `section.key=value` overrides, validate."""
    d: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        text = read_text(path)
        try:
            d = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
        except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    for item in overrides:
        apply_override(d, item)
    return TrainConfig.from_dict(d)


def apply_override(d: dict[str, Any], item: str) -> None:
    """`optim.lr=0.1` -> d['optim']['lr'] = 0.1 (the value is typed as a YAML scalar or flow collection).
    A mapping merges into the mapping already there: `model.overrides={depth: 4}` keeps the file's other overrides."""
    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.lr=0.05")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: '{p}' is not a section")
    old = node.get(parts[-1])
    node[parts[-1]] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value


TRAIN_CONFIG_FILE = "train_config.yaml"  # stored beside exported weights: how their videos were preprocessed


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML text (loadable by load_config)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(dump_config(config), encoding="utf-8")


def validate(c: TrainConfig) -> None:
    """Value checks that types alone cannot express; each names the field and the allowed values."""
    from vivit.model import list_models
    from vivit.weights.image_vit import POS_SIZE_CHANGES, RECIPES

    _choice("model.name", c.model.name, list_models())
    _choice("model.init_kind", c.model.init_kind, INIT_KINDS)
    _choice("model.tubelet_init", c.model.tubelet_init, TUBELET_INITS)
    _choice("model.init_recipe", c.model.init_recipe, RECIPES)
    _choice("model.pos_size_change", c.model.pos_size_change, POS_SIZE_CHANGES)
    _choice("optim.name", c.optim.name, OPTIMIZERS)
    _choice("optim.split_loss", c.optim.split_loss, SPLIT_LOSSES)
    _choice("schedule.name", c.schedule.name, SCHEDULES)
    _choice("run.precision", c.run.precision, PRECISIONS)
    _choice("run.device", c.run.device, DEVICES)
    for name in ("data.num_frames", "data.frame_stride", "data.image_size", "data.val_clips", "data.val_crops",
                 "run.batch_size", "run.grad_accum", "run.log_every", "run.max_nonfinite_steps"):
        _at_least(name, _get(c, name), 1)
    for name in ("data.num_workers", "schedule.epochs", "run.eval_every", "run.save_every_steps", "run.seed"):
        _at_least(name, _get(c, name), 0)
    for name in ("optim.lr", "optim.weight_decay", "optim.mixup_alpha", "schedule.warmup_epochs", "schedule.min_lr"):
        _at_least(name, _get(c, name), 0)
    for name in ("model.drop_path", "optim.label_smoothing", "optim.momentum"):
        if not 0.0 <= _get(c, name) < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {_get(c, name)}")
    for name in ("optim.base_batch_size", "schedule.max_steps", "optim.clip_grad_norm"):
        if _get(c, name) is not None and _get(c, name) <= 0:
            raise ConfigError(f"{name} must be > 0 or null, got {_get(c, name)}")
    if c.run.seed >= 2**32:
        raise ConfigError(f"run.seed must be < 2**32, got {c.run.seed}")
    if c.schedule.epochs == 0 and c.schedule.max_steps is None:
        raise ConfigError("schedule.epochs is 0 and schedule.max_steps is null: nothing to train")
    if c.run.batch_size % c.run.grad_accum:
        raise ConfigError(f"run.batch_size {c.run.batch_size} must be divisible by run.grad_accum {c.run.grad_accum}")
    for key in ("num_frames", "image_size", "num_classes", "drop_path"):
        if key in c.model.overrides:
            source = "model.drop_path" if key == "drop_path" else "the data" if key == "num_classes" else f"data.{key}"
            raise ConfigError(f"model.overrides.{key} is set by {source}; remove it from model.overrides")


# Helpers ------------------------------------------------------------------------------------------
def _get(c: TrainConfig, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(c, section), key)


def _choice(name: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        hint = difflib.get_close_matches(str(value), list(allowed), n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{name}={value!r} is not allowed{suggestion}; choose one of {list(allowed)}")


def _at_least(name: str, value: Any, low: float) -> None:
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value!r}")


def _reject_unknown(d: dict[str, Any], known: list[str], prefix: str) -> None:
    for key in d:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggestion} (allowed: {', '.join(prefix + k for k in known)})")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field's type hint; ints and numeric strings are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if origin is tuple and isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    expected = origin or hint
    if expected is dict and value is None:
        return {}
    if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
        type_name = {tuple: f"a list of {len(args)} numbers"}.get(expected, getattr(expected, "__name__", str(expected)))
        raise ConfigError(f"{name} must be {type_name}, got {value!r} ({type(value).__name__})")
    return value


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
