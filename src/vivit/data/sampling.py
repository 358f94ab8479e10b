"""Which frames make a clip: random training clips, the official uniform rule, evenly spaced test clips.

Videos shorter than a clip's span are padded by repeating their last frame (indices are clamped to the last
frame; uniform sampling repeats every frame evenly instead), so a clip always has `num_frames` frames and
time never runs backwards.
"""

from __future__ import annotations

import numpy as np

from vivit.errors import ConfigError


def clip_span(num_frames: int, frame_stride: int) -> int:
    """Frames covered by a clip of `num_frames` taken every `frame_stride` frames."""
    if num_frames < 1 or frame_stride < 1:
        raise ConfigError(f"num_frames and frame_stride must be >= 1, got {num_frames} and {frame_stride}")
    return (num_frames - 1) * frame_stride + 1


def clip_indices(video_frames: int, num_frames: int, frame_stride: int, start: int) -> np.ndarray:
    """`num_frames` indices from `start` every `frame_stride`, clamped to the last frame (pads short videos)."""
    return np.minimum(start + np.arange(num_frames) * frame_stride, video_frames - 1)


def random_clip(video_frames: int, num_frames: int, frame_stride: int, rng: np.random.Generator) -> np.ndarray:
    """Training clip: a uniformly random start among those that keep the clip inside the video (temporal jitter)."""
    last_start = max(video_frames - clip_span(num_frames, frame_stride), 0)
    return clip_indices(video_frames, num_frames, frame_stride, int(rng.integers(0, last_start + 1)))


def eval_clips(video_frames: int, num_frames: int, frame_stride: int, num_clips: int) -> list[np.ndarray]:
    """Test clips: `num_clips` starts evenly spaced (linspace) from the first to the last possible start."""
    last_start = max(video_frames - clip_span(num_frames, frame_stride), 0)
    starts = np.round(np.linspace(0, last_start, num_clips)) if num_clips > 1 else [last_start // 2]
    return [clip_indices(video_frames, num_frames, frame_stride, int(s)) for s in starts]


def uniform_indices(video_frames: int, num_frames: int, offset: float = 0.0) -> np.ndarray:
    """Uniform frame sampling (Sec. 3.2) as the official `sample_frames_uniformly`
    (scenic/common_lib/video_utils.py): positions `arange(T/(n+1), T, T/(n+1))` in float32, rounded half
    to even, clipped to T - 1; n >= T takes every frame.

    Where the official float32 `arange` also yields its end point (position ~T, clipped to T - 1: n + 1
    frames, e.g. T=8, n=2 -> [3, 5, 7]) we keep its first n positions. For n > T, where the official takes
    only the T frames, every frame is repeated evenly (`k * T // n`) so that a clip has n frames.
    `offset` in [-0.5, 0.5] shifts every position by that fraction of the spacing T / (n + 1) (n < T only):
    0 is the official rule; training draws it at random, multi-clip testing spreads it evenly.
    """
    if num_frames >= video_frames:
        return np.arange(num_frames) * video_frames // num_frames
    spacing = video_frames / (num_frames + 1)
    positions = np.arange(spacing, video_frames, spacing, dtype=np.float32)[:num_frames]
    if offset:
        positions = positions + np.float32(offset * spacing)
    return np.clip(np.round(positions), 0, video_frames - 1).astype(np.int64)


def random_uniform(video_frames: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Training variant of uniform sampling: the whole grid shifted by a random fraction of its spacing."""
    return uniform_indices(video_frames, num_frames, float(rng.uniform(-0.5, 0.5)))


def eval_uniform(video_frames: int, num_frames: int, num_clips: int) -> list[np.ndarray]:
    """`num_clips` uniform grids with offsets evenly spread in (-0.5, 0.5); one clip is the official rule."""
    offsets = (np.arange(num_clips) + 0.5) / num_clips - 0.5
    return [uniform_indices(video_frames, num_frames, float(o)) for o in offsets]
