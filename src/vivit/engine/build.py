"""Everything a run is made of, built from a `TrainConfig`: device and precision, datasets and loaders
(through `vivit.data`), the model with its initialisation."""

from __future__ import annotations

import dataclasses
import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager

import torch

from vivit.engine.checkpoint import load_checkpoint
from vivit.engine.config import DataSection, ModelSection, RunSection
from vivit.errors import ConfigError
from vivit.model import ViViT, create_model

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` is the process's CUDA device when there is one, else the CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not allowed; choose one of ['auto', 'cpu', 'cuda']")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available; use cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def resolve_precision(run: RunSection, device: torch.device) -> str:
    """`auto` is bf16 on a CUDA device that supports it, fp32 otherwise (always fp32 on CPU)."""
    if run.precision != "auto":
        return run.precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


CUBLAS_WORKSPACE = ":4096:8"  # PyTorch "Reproducibility" notes: deterministic cuBLAS (CUDA >= 10.2) needs it


def use_deterministic_algorithms() -> None:
    """Deterministic kernels everywhere; on CUDA cuBLAS also needs CUBLAS_WORKSPACE_CONFIG, read when its
    first handle is made, so it is set here (before any CUDA work) unless already set."""
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            warnings.warn(f"run.deterministic: CUDA was initialised before CUBLAS_WORKSPACE_CONFIG was set; "
                          f"export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} before starting Python", stacklevel=2)
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, precision: str) -> ContextManager:
    """Mixed-precision context for the forward pass; fp32 runs without autocast."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def augment_config(data: DataSection) -> Any:
    from vivit.data import AugmentConfig

    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = sorted(set(data.augment) - known)
    if unknown:
        raise ConfigError(f"unknown config key(s) data.augment.{unknown[0]}; allowed: {', '.join(sorted(known))}")
    try:
        return AugmentConfig(**_listless(data.augment))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"data.augment: {e}") from None


def build_datasets(data: DataSection, image_size: int | None = None,
                   splits: dict[str, int] | None = None) -> tuple[Any, Any | None]:
    """Training dataset (random clips, augmentation) and validation dataset (val_clips x val_crops views);
    `splits` (a multi-head model's {name: classes}) reads one label per split."""
    from vivit.data import build_dataset

    size = image_size or data.image_size
    common = dict(num_frames=data.num_frames, frame_stride=data.frame_stride, image_size=size, splits=splits)
    train = build_dataset(data.train, split=data.train_split, train=True, augment=augment_config(data), **common)
    if data.val_split is None and data.val is None:
        return train, None
    val = build_dataset(
        data.val or data.train, split=data.val_split, train=False, classes=train.classes, augment=augment_config(data),
        num_clips=data.val_clips, num_crops=data.val_crops, **common,
    )
    return train, val


def build_model(model_cfg: ModelSection, data: DataSection, num_classes: int) -> ViViT:
    """The configured preset sized to the data, initialised from `model.init` when given."""
    model = create_model(
        model_cfg.name, num_classes=num_classes, num_frames=data.num_frames, image_size=data.image_size,
        drop_path=model_cfg.drop_path, **_listless(model_cfg.overrides),
    )
    if model_cfg.init:
        initialise(model, model_cfg, data)
    if model_cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def initialise(model: ViViT, model_cfg: ModelSection, data: DataSection | None = None) -> None:
    """Load `model.init`: a training checkpoint, pretrained folder or registry model name (`vivit models`)
    of this architecture (a different head is re-initialised), or image ViT weights inflated to 3D (Sec. 3.4).
    A pretrained model whose preprocessing differs from this run's `data` section is named in a warning."""
    path = Path(model_cfg.init)
    kind = model_cfg.init_kind
    if not path.exists():
        from vivit.zoo.pretrained import is_registered

        if not is_registered(model_cfg.init):
            raise FileNotFoundError(f"model.init not found: {path} is no file, folder or model name of `vivit models`")
        kind = "pretrained" if kind == "auto" else kind
    if kind == "auto":
        kind = "pretrained" if (path / "config.json").is_file() else "checkpoint" if path.suffix == ".pt" else "image_vit"
    if kind == "image_vit":
        from vivit.weights.image_vit import init_from_image_vit

        init_from_image_vit(model, path, tubelet_init=model_cfg.tubelet_init, recipe=model_cfg.init_recipe,
                            pos_size_change=model_cfg.pos_size_change)
        return
    if kind == "pretrained":
        import vivit

        cfg = model.config  # positional embeddings are resampled to this run's frames and size
        pretrained = vivit.load_pretrained(model_cfg.init, num_frames=cfg.num_frames, image_size=cfg.image_size)
        if data is not None and getattr(pretrained, "preprocess", None) is not None:
            warn_preprocessing(model_cfg.init, pretrained.preprocess, data)
        state = pretrained.state_dict()
    else:
        state = load_checkpoint(path)["model"]
    load_matching(model, state, source=str(path))


def warn_preprocessing(name: str, preprocess: Any, data: DataSection) -> None:
    """Fine-tuning works best on inputs made as the model's own: name each setting this run changes."""
    augment = augment_config(data)
    ours = {"frame stride": (preprocess.stride, data.frame_stride),
            "short side": (dataclasses.replace(augment, short_side=preprocess.short_side).resize_to(preprocess.crop),
                           augment.resize_to(data.image_size)),
            "normalisation": (preprocess.normalisation, augment.normalization)}
    changed = [f"{k} {theirs} -> {mine}" for k, (theirs, mine) in ours.items() if theirs != mine]
    if changed:
        warnings.warn(f"model.init={name} was trained with other preprocessing than this run's data section: "
                      f"{'; '.join(changed)} (set data.frame_stride / data.augment to match)", stacklevel=2)


def load_matching(model: ViViT, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`; only the classifier head may differ (then it keeps its fresh init).
    Any other missing, extra or mis-shaped tensor means another architecture: ConfigError naming it."""
    own = model.state_dict()
    head = {k for k in own if k.startswith("head.")}
    problems = [f"missing {k}" for k in own if k not in state and k not in head]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k} is {tuple(state[k].shape)} here {tuple(v.shape)}"
        for k, v in own.items() if k in state and k not in head and state[k].shape != v.shape
    ]
    if problems:
        raise ConfigError(
            f"checkpoint {source} is another architecture than {model.config.variant!r} "
            f"width {model.config.width} depth {model.config.depth}: {len(problems)} tensor(s) differ, "
            f"first: {problems[0]}"
        )
    keep_head = all(k in state and state[k].shape == own[k].shape for k in head)
    model.load_state_dict({k: (state[k] if k in state and (keep_head or k not in head) else own[k]) for k in own})


def _listless(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
