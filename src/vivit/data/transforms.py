"""Clip transforms on torch tensors: every frame of a clip gets the same crop, flip and colour change.

Clips are (T, C, H, W) between decoding and normalisation; the result is float (C, T, H, W).
Work happens on the smallest tensor possible: crops are cut from uint8 frames, converted to float once,
and resized with one `F.interpolate` call per clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vivit.errors import ConfigError

# ITU-R BT.601 luma weights (grayscale, saturation, contrast)
_LUMA = (0.299, 0.587, 0.114)

Normalization = str | tuple[tuple[float, ...], tuple[float, ...]]  # "minus_one_one" or (mean, std) in [0, 1]


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (paper Appendix / Table 7 recipe); probabilities are per clip."""

    scale_jitter: tuple[float, float] = (0.9, 1.33)  # random zoom of the short-side-resized frame before the crop
    flip: float = 0.5  # horizontal flip probability
    color_jitter: float = 0.8  # probability of applying colour jitter
    brightness: float = 0.4  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1  # fraction of a full turn of the chroma plane, drawn from [-h, h]
    grayscale: float = 0.0  # probability of turning the clip gray
    short_side: int | None = None  # resize target of the short side; None: image_size * 256 / 224 rounded
    normalization: Normalization = "minus_one_one"

    def __post_init__(self):
        low, high = self.scale_jitter
        if not 0 < low <= high:
            raise ConfigError(f"scale_jitter must be (low, high) with 0 < low <= high, got {self.scale_jitter}")
        for name in ("flip", "color_jitter", "grayscale"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.normalization != "minus_one_one" and not (
                isinstance(self.normalization, (tuple, list)) and len(self.normalization) == 2):
            raise ConfigError(f"normalization must be 'minus_one_one' or (mean, std), got {self.normalization!r}")

    def resize_to(self, image_size: int) -> int:
        """Short side that frames are decoded at before cropping `image_size` pixels."""
        return self.short_side or round(image_size * 256 / 224)


def normalize(clip: torch.Tensor, normalization: Normalization = "minus_one_one") -> torch.Tensor:
    """Pixels in [0, 1] (channel axis 1 of (T, C, H, W)) to [-1, 1] or to (x - mean) / std."""
    if normalization == "minus_one_one":
        return clip * 2 - 1
    mean, std = (torch.tensor(v, dtype=clip.dtype).view(1, -1, 1, 1) for v in normalization)
    return (clip - mean) / std


def crop(clip: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return clip[..., top:top + height, left:left + width]


def resize(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a float (T, C, H, W) clip in one call, antialiased when shrinking."""
    if clip.shape[-2:] == (height, width):
        return clip
    shrink = height < clip.shape[-2] or width < clip.shape[-1]
    return F.interpolate(clip, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)


def spatial_crops(clip: torch.Tensor, size: int, num_crops: int) -> list[torch.Tensor]:
    """1 centre crop, or 3 crops along the long side: left/centre/right (landscape) or top/middle/bottom."""
    if num_crops not in (1, 3):
        raise ConfigError(f"num_crops must be 1 or 3, got {num_crops}")
    height, width = clip.shape[-2:]
    if min(height, width) < size:
        raise ConfigError(f"frames of {height}x{width} are smaller than the crop size {size}")
    top, left = (height - size) // 2, (width - size) // 2
    if num_crops == 1:
        return [crop(clip, top, left, size, size)]
    if width >= height:
        return [crop(clip, top, x, size, size) for x in (0, left, width - size)]
    return [crop(clip, y, left, size, size) for y in (0, top, height - size)]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _gray(clip: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, dtype=clip.dtype).view(1, 3, 1, 1)
    return (clip * weights).sum(1, keepdim=True)


def _rotate_hue(clip: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the chroma plane of YIQ by `turns` of a full circle (a linear, per-pixel colour map)."""
    rgb_to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angle = 2 * math.pi * turns
    rotation = torch.tensor([[1.0, 0.0, 0.0],
                             [0.0, math.cos(angle), -math.sin(angle)],
                             [0.0, math.sin(angle), math.cos(angle)]])
    matrix = (torch.linalg.inv(rgb_to_yiq) @ rotation @ rgb_to_yiq).to(clip.dtype)
    return torch.einsum("ij,tjhw->tihw", matrix, clip)


def color_jitter(clip: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (in that order) with one factor each for the whole clip; [0, 1] in and out."""
    if cfg.brightness:
        clip = clip * _uniform(generator, 1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        mean = _gray(clip).mean()
        clip = torch.lerp(mean, clip, _uniform(generator, 1 - cfg.contrast, 1 + cfg.contrast))
    if cfg.saturation:
        clip = torch.lerp(_gray(clip), clip, _uniform(generator, 1 - cfg.saturation, 1 + cfg.saturation))
    if cfg.hue:
        clip = _rotate_hue(clip, _uniform(generator, -cfg.hue, cfg.hue))
    return clip.clamp_(0, 1)


def _to_float(clip: torch.Tensor) -> torch.Tensor:
    """uint8 -> float in [0, 1]."""
    return clip.float().div_(255)


def train_transform(frames: torch.Tensor, image_size: int, cfg: AugmentConfig,
                    generator: torch.Generator) -> torch.Tensor:
    """uint8 (T, H, W, C) decoded at the short side -> float (C, T, S, S): scale-jittered random crop, flip, colour."""
    height, width = frames.shape[1:3]
    scale = _uniform(generator, *cfg.scale_jitter)
    # zooming the frame by `scale` then cropping S pixels == cropping S / scale pixels then resizing to S
    side = min(round(image_size / scale), height, width)
    top = int(torch.randint(0, height - side + 1, (), generator=generator))
    left = int(torch.randint(0, width - side + 1, (), generator=generator))
    clip = resize(_to_float(crop(frames.permute(0, 3, 1, 2), top, left, side, side)), image_size, image_size)
    if torch.rand((), generator=generator) < cfg.flip:
        clip = clip.flip(-1)
    if torch.rand((), generator=generator) < cfg.color_jitter:
        clip = color_jitter(clip, cfg, generator)
    if torch.rand((), generator=generator) < cfg.grayscale:
        clip = _gray(clip).expand_as(clip)
    return normalize(clip, cfg.normalization).transpose(0, 1)


def eval_transform(frames: torch.Tensor, image_size: int, num_crops: int,
                   normalization: Normalization = "minus_one_one") -> torch.Tensor:
    """uint8 (T, H, W, C) decoded at the short side -> float (num_crops, C, T, S, S) of fixed crops."""
    views = spatial_crops(frames.permute(0, 3, 1, 2), image_size, num_crops)
    return torch.stack([normalize(_to_float(v), normalization).transpose(0, 1) for v in views])
