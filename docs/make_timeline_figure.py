"""Make docs/timeline.png: a tiny Model 2 trained on three brightness levels, run along a 48 s synthetic video.

    python docs/make_timeline_figure.py [WORKDIR]      # about a minute on 2 CPU cores

Training clips: 8 frames of 16 px at 8 fps, a level (dark 60, mid 125, bright 190) under Gaussian noise. The long
video: 8 s each of dark, mid and bright, a 16 s fade from bright to dark, then 8 s of mid.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from vivit.cli import main as vivit
from vivit.data.encode import write_video

LEVELS = {"dark": 60, "bright": 190, "mid": 125}
FPS, SIZE, NOISE = 8, 16, 25


def noisy(levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (T, SIZE, SIZE, 3) frames of the given brightness per frame, under noise."""
    return np.clip(levels[:, None, None, None] + rng.normal(0, NOISE, (len(levels), SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def main(work: Path) -> None:
    rng = np.random.default_rng(0)
    for name, level in LEVELS.items():
        for i in range(24):
            split = "val" if i < 6 else "train"
            write_video(work / "data" / split / name / f"{i:03d}.mp4", noisy(np.full(8, level), rng), fps=FPS,
                        options={"crf": "0"})
    fade = np.linspace(LEVELS["bright"], LEVELS["dark"], 16 * FPS)
    levels = np.concatenate([np.full(8 * FPS, LEVELS[k]) for k in ("dark", "mid", "bright")]
                            + [fade, np.full(8 * FPS, LEVELS["mid"])])
    write_video(work / "long.mp4", noisy(levels, rng), fps=FPS, options={"crf": "0"})
    overrides = {
        "model.name": "vivit-ti-16x2-fe",
        "model.overrides": "{width: 32, depth: 1, num_heads: 2, mlp_dim: 64, tubelet: [2, 8, 8], temporal_depth: 1}",
        "data.train": work / "data", "data.num_frames": 8, "data.frame_stride": 1, "data.image_size": 16,
        "data.num_workers": 0, "data.augment": "{flip: 0.0, color_jitter: 0.0}", "optim.name": "adamw",
        "optim.lr": 0.003, "optim.base_batch_size": "null", "schedule.epochs": 8, "schedule.warmup_epochs": 0.5,
        "run.batch_size": 8, "run.out": work / "run", "run.deterministic": "true", "run.tensorboard": "false",
    }
    assert vivit(["train", *(f"{k}={v}" for k, v in overrides.items())]) == 0
    assert vivit(["predict", str(work / "run" / "last.pt"), str(work / "long.mp4"), "--timeline", "--window-stride",
                  "0.5", "--smooth", "3", "--top-k", "2", "--timeline-out", str(work), "--quiet"]) == 0
    shutil.copy(work / "long.mp4.timeline.png", Path(__file__).parent / "timeline.png")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
