"""Pictures of a token-grid map: the clip with the heatmap overlaid (MP4 through PyAV, or GIF), a PNG strip of
sampled frames over their heatmaps, and a plot of per-frame (temporal) importance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vivit.data.encode import write_video  # noqa: E402
from vivit.data.transforms import Normalization  # noqa: E402

COLOURMAP = "jet"
MIN_VIDEO_SIDE = 224  # small clips are enlarged (nearest) to at least this for viewing


def upsample(token_map: torch.Tensor, tubelet: tuple[int, int, int], size: tuple[int, int]) -> np.ndarray:
    """(n_t, n_h, n_w) map -> (T, H, W): each tubelet's value on all its frames, bilinear in space."""
    per_frame = token_map.float().repeat_interleave(tubelet[0], dim=0)[:, None]  # (T, 1, n_h, n_w)
    return F.interpolate(per_frame, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def clip_pixels(clip: torch.Tensor, normalization: Normalization) -> np.ndarray:
    """A model input (C, T, H, W) back to uint8 RGB frames (T, H, W, 3) (the inverse of the normalisation)."""
    x = clip.detach().float().cpu().permute(1, 2, 3, 0)
    if normalization == "minus_one_one":
        x = (x + 1) / 2
    else:
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in normalization)
        x = x * std + mean
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def overlay(frames: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """uint8 (T, H, W, 3) frames blended with the colour-mapped heat (T, H, W), scaled to the clip's maximum."""
    peak = heat.max()
    colours = matplotlib.colormaps[COLOURMAP](heat / peak if peak > 0 else heat)[..., :3] * 255
    return ((1 - alpha) * frames + alpha * colours).round().astype(np.uint8)


def write_overlay(path: Path, frames: np.ndarray, fps: float) -> Path:
    """The overlaid clip as MP4 (H.264) or GIF by the suffix; small clips enlarged to MIN_VIDEO_SIDE."""
    scale = max(1, -(-MIN_VIDEO_SIDE // min(frames.shape[1:3])))
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    if path.suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
        return path
    pad = [(0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)]  # 4:2:0 needs even sides
    return write_video(path, np.pad(frames, pad, mode="edge"), fps=fps, options={"crf": "18"})


def frame_strip(path: Path, frames: np.ndarray, heat: np.ndarray, count: int, title: str) -> Path:
    """PNG: `count` evenly spaced frames (top row) and the same frames with their heatmaps (bottom row)."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    mixed = overlay(frames, heat)
    fig, axes = plt.subplots(2, len(picks), figsize=(1.3 * len(picks), 3.0), squeeze=False)
    for column, t in enumerate(picks):
        for row, image in enumerate((frames[t], mixed[t])):
            axes[row, column].imshow(image, interpolation="nearest")
            axes[row, column].set_axis_off()
        axes[0, column].set_title(f"frame {t}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def temporal_plot(path: Path, importance: np.ndarray, frames_per_token: int, title: str) -> Path:
    """PNG: the map's mass per tubelet time step, as bars over the frames each one covers."""
    starts = np.arange(len(importance)) * frames_per_token
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(starts, 100 * importance, width=frames_per_token, align="edge", edgecolor="white")
    ax.set(xlabel="frame", ylabel="share of the map (%)", title=title, xlim=(0, len(importance) * frames_per_token))
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _save(fig: plt.Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
