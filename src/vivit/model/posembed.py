"""Positional embeddings: tiling a 2D ViT embedding over time and resampling to another token grid.

Embeddings are (1, prefix + prod(grid), D) with tokens ordered time-major and any cls entry first.
Resampling runs in float64, with the prefix (cls) kept apart: space is resized per frame (bicubic by
default), time per spatial position (linear by default), so a 2D grid never mixes with time.
The `_aligned` modes align the corner samples (torch `align_corners=True`), which is what the official
code's `scipy.ndimage.zoom(order=1)` computes (Scenic `model_utils.interpolate_positional_embeddings`,
`interpolate_1d_positional_embeddings`); temporal `tile` repeats the whole frame sequence, as the
official `tile_positional_embeddings` does when a video checkpoint changes frame count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

SPATIAL_MODES = ("bicubic", "bilinear", "bilinear_aligned")
TEMPORAL_MODES = ("linear", "linear_aligned", "tile")


def split_prefix(pos: torch.Tensor, num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pos[:, :num_prefix], pos[:, num_prefix:]


def tile_over_time(pos2d: torch.Tensor, num_frames: int, num_prefix: int = 1) -> torch.Tensor:
    """Repeat a 2D ViT embedding (1, prefix + h*w, D) n_t times along the token axis (Sec. 3.4)."""
    prefix, grid = split_prefix(pos2d, num_prefix)
    return torch.cat([prefix, grid.repeat(1, num_frames, 1)], dim=1)


def resample(
    pos: torch.Tensor,
    src_grid: tuple[int, ...],
    dst_grid: tuple[int, ...],
    num_prefix: int = 0,
    spatial_mode: str = "bicubic",
    temporal_mode: str = "linear",
) -> torch.Tensor:
    """Resample an embedding laid out on `src_grid` ((t, h, w), (h, w) or (t,)) onto `dst_grid`:
    space with one of SPATIAL_MODES, time with one of TEMPORAL_MODES."""
    if spatial_mode not in SPATIAL_MODES or temporal_mode not in TEMPORAL_MODES:
        raise ValueError(f"resample modes {spatial_mode!r}, {temporal_mode!r}: choose from {SPATIAL_MODES}, {TEMPORAL_MODES}")
    if tuple(src_grid) == tuple(dst_grid):
        return pos
    if len(src_grid) != len(dst_grid):
        raise ValueError(f"cannot resample a {len(src_grid)}-D grid {src_grid} to {dst_grid}")
    prefix, grid = split_prefix(pos, num_prefix)
    if grid.shape[1] != math.prod(src_grid):
        raise ValueError(f"positional embedding has {grid.shape[1]} tokens, grid {src_grid} needs {math.prod(src_grid)}")
    dtype = grid.dtype
    x = grid.double()  # as scipy.ndimage.zoom: float64 arithmetic, cast back once
    if len(src_grid) == 1:
        x = _resize_time(rearrange(x, "1 t d -> 1 1 t d"), dst_grid[0], temporal_mode)
    else:
        if len(src_grid) == 2:
            src_grid, dst_grid = (1, *src_grid), (1, *dst_grid)
        x = rearrange(x, "1 (t h w) d -> t d h w", t=src_grid[0], h=src_grid[1])
        if src_grid[1:] != dst_grid[1:]:
            mode = spatial_mode.removesuffix("_aligned")
            x = F.interpolate(x, size=dst_grid[1:], mode=mode, align_corners=spatial_mode.endswith("_aligned"))
        x = _resize_time(rearrange(x, "t d h w -> 1 (h w) t d"), dst_grid[0], temporal_mode)
    x = rearrange(x, "1 s t d -> 1 (t s) d")
    return torch.cat([prefix, x.to(dtype)], dim=1)


def _resize_time(x: torch.Tensor, t_new: int, mode: str = "linear") -> torch.Tensor:
    """Linear interpolation (or whole-sequence tiling) along the frame axis of (1, S, T, D)."""
    t = x.shape[2]
    if t == t_new:
        return x
    if mode == "tile":
        if t_new % t:
            raise ValueError(f"temporal tile repeats all {t} frames: {t_new} frames is not a multiple of {t}")
        return x.repeat(1, 1, t_new // t, 1)
    s = x.shape[1]
    y = F.interpolate(rearrange(x, "1 s t d -> 1 (s d) t"), size=t_new, mode="linear", align_corners=mode == "linear_aligned")
    return rearrange(y, "1 (s d) t -> 1 s t d", s=s)
