"""Positional embeddings: tiling a 2D ViT embedding over time and resampling to another token grid.

Embeddings are (1, prefix + prod(grid), D) with tokens ordered time-major and any cls entry first.
Resampling runs in float32, with the prefix (cls) kept apart: space is resized bicubically per
frame, time linearly per spatial position (separable, so a 2D grid never mixes with time).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange


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
) -> torch.Tensor:
    """Resample an embedding laid out on `src_grid` ((t, h, w), (h, w) or (t,)) onto `dst_grid`."""
    if tuple(src_grid) == tuple(dst_grid):
        return pos
    if len(src_grid) != len(dst_grid):
        raise ValueError(f"cannot resample a {len(src_grid)}-D grid {src_grid} to {dst_grid}")
    prefix, grid = split_prefix(pos, num_prefix)
    if grid.shape[1] != math.prod(src_grid):
        raise ValueError(f"positional embedding has {grid.shape[1]} tokens, grid {src_grid} needs {math.prod(src_grid)}")
    dtype = grid.dtype
    x = grid.float()
    if len(src_grid) == 1:
        x = _resize_time(rearrange(x, "1 t d -> 1 1 t d"), dst_grid[0])
    else:
        if len(src_grid) == 2:
            src_grid, dst_grid = (1, *src_grid), (1, *dst_grid)
        x = rearrange(x, "1 (t h w) d -> t d h w", t=src_grid[0], h=src_grid[1])
        if src_grid[1:] != dst_grid[1:]:
            x = F.interpolate(x, size=dst_grid[1:], mode=spatial_mode, align_corners=False)
        x = _resize_time(rearrange(x, "t d h w -> 1 (h w) t d"), dst_grid[0])
    x = rearrange(x, "1 s t d -> 1 (t s) d")
    return torch.cat([prefix, x.to(dtype)], dim=1)


def _resize_time(x: torch.Tensor, t_new: int) -> torch.Tensor:
    """Linear interpolation along the frame axis of (1, S, T, D)."""
    if x.shape[2] == t_new:
        return x
    s = x.shape[1]
    y = F.interpolate(rearrange(x, "1 s t d -> 1 (s d) t"), size=t_new, mode="linear", align_corners=False)
    return rearrange(y, "1 (s d) t -> 1 s t d", s=s)
