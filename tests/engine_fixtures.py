"""Tiny data and configs shared by the engine and CLI tests (a few seconds of CPU each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vivit.data.encode import write_video

# An easy task: the class is the clip's brightness (dark / bright), under noise.
CLASSES = ("bright", "dark")


def write_brightness_videos(root: Path, per_class: int = 12, val_per_class: int = 4, frames: int = 8, size: int = 16) -> Path:
    """root/{train,val}/{bright,dark}/*.mp4, lossless H.264."""
    rng = np.random.default_rng(0)
    for name, level in (("dark", 70), ("bright", 180)):
        for i in range(per_class + val_per_class):
            split = "val" if i < val_per_class else "train"
            video = np.clip(level + rng.normal(0, 30, (frames, size, size, 3)), 0, 255).astype(np.uint8)
            write_video(root / split / name / f"{i:03d}.mp4", video, fps=8, options={"crf": "0"})
    return root


def tiny_overrides(data: Path, out: Path, **extra: object) -> list[str]:
    """`key=value` overrides for a tiny spatio-temporal ViViT (width 32, 1 layer) on 8 frames of 16 px."""
    items = {
        "model.name": "vivit-ti-16x2-st",
        "model.overrides": "{width: 32, depth: 1, num_heads: 2, mlp_dim: 64, tubelet: [2, 8, 8]}",
        "data.train": str(data), "data.num_frames": 8, "data.frame_stride": 1, "data.image_size": 16,
        "data.num_workers": 0, "data.augment": "{flip: 0.0, color_jitter: 0.0}",
        "optim.name": "adamw", "optim.lr": 0.003, "optim.base_batch_size": "null",
        "schedule.epochs": 4, "schedule.warmup_epochs": 0.5,
        "run.batch_size": 8, "run.out": str(out), "run.deterministic": "true", "run.tensorboard": "false",
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def untrained_checkpoint(path: Path, classes: tuple[str, ...] = CLASSES, **state: object) -> Path:
    """A training checkpoint of a freshly initialised tiny model (8 frames of 16 px), without training;
    `state` adds entries (e.g. `config`, the training config as a dict)."""
    from vivit.engine.checkpoint import save_checkpoint
    from vivit.model import create_model

    model = create_model("vivit-ti-16x2-st", num_classes=len(classes), num_frames=8, image_size=16, width=32,
                         depth=1, num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.config.to_dict(),
                           "classes": list(classes), **state})
    return path
