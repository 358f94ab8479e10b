"""Training checkpoints: one `.pt` of plain tensors and containers (loadable with weights_only=True),
written atomically (`vivit.engine.atomic`), with every RNG state needed to resume exactly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import yaml

from vivit.config import ViViTConfig
from vivit.engine.atomic import atomic_write
from vivit.engine.config import TRAIN_CONFIG_FILE
from vivit.errors import ConfigError, VivitError
from vivit.textfiles import read_text
from vivit.model import ViViT

FORMAT = "vivit-train-checkpoint"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save written atomically: a killed writer never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (weights_only=True); a foreign file raises VivitError naming it."""
    from vivit.weights.store import torch_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch_load(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise VivitError(f"{path} is not a vivit training checkpoint (no '{FORMAT}' marker)")
    return state


def check_resumable(ckpt: dict[str, Any], model_config: dict[str, Any], schedule: dict[str, int], path: Path) -> None:
    """Resuming needs the same architecture, and the same batch size, accumulation, process count and
    epoch length: ConfigError naming the fields that differ."""
    saved = ckpt["model_config"]
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs config {v!r}" for k, v in model_config.items() if saved.get(k) != v]
    if diff:
        raise ConfigError(f"cannot resume from {path}: it is another architecture ({'; '.join(diff[:3])})")
    saved = ckpt.get("schedule", {})
    diff = [f"{k}: checkpoint {saved[k]} vs now {v}" for k, v in schedule.items() if k in saved and saved[k] != v]
    if diff:
        raise ConfigError(f"cannot resume from {path}: the run's schedule differs ({'; '.join(diff)}); "
                          "resume with the same batch size, grad_accum, process count and data")


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states as tensors and plain containers."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (torch.from_numpy(np_state[1].astype(np.int64)), *(x for x in np_state[2:])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore `rng_state()`. CUDA states are restored for the devices present: a checkpoint written on
    a machine with more GPUs resumes on one with fewer (each step re-seeds every device anyway)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


class LoadedModel(NamedTuple):
    model: ViViT
    classes: list[str]
    train_config: dict[str, Any]  # the run's TrainConfig as a dict; empty for a folder without train_config.yaml


def load_model(path: str | Path, quiet: bool = False) -> LoadedModel:
    """A model in eval mode, its class names and training config from a checkpoint (.pt), a pretrained folder
    or a registry name (`quiet`: no download progress)."""
    path = Path(path)
    if path.is_dir():
        return _load_pretrained_folder(path)
    if not path.exists():
        from vivit.zoo.pretrained import is_registered, load_registered

        if is_registered(str(path)):  # a pretrained model's name (`vivit models`)
            return load_registered(str(path), quiet=quiet)
    state = load_checkpoint(path)
    model = ViViT(ViViTConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return LoadedModel(model.eval(), list(state["classes"]), state.get("config", {}))


def _load_pretrained_folder(path: Path) -> LoadedModel:
    """Our folder (class names from labels.txt) or a transformers folder (from its config's id2label)."""
    import vivit

    model = vivit.load_pretrained(path)
    classes = model.labels or [str(i) for i in range(model.config.num_classes)]
    train_config = path / TRAIN_CONFIG_FILE  # written by `vivit train` beside its best weights
    config = yaml.safe_load(read_text(train_config)) if train_config.is_file() else {}
    return LoadedModel(model.eval(), classes, config)
