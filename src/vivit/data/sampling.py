"""Which frames make a clip: random training clips, the official uniform rule, evenly spaced test clips.

Clips follow the official ViViT loader (dmvr/modalities.py `add_image`, as scenic/projects/vivit/data/
video_tfrecord_dataset.py builds it): training takes `sample_sequence` with a random offset, one test clip
`sample_sequence`'s central window and several `sample_linspace_sequence` (dmvr/processors.py). Videos shorter
than a clip's span loop back to frame 0, as `sample_or_pad_sequence_indices` with `repeat_sequence=True` tiles
the frame range; uniform sampling repeats every frame evenly instead. A clip always has `num_frames` frames.
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
    """`num_frames` indices from `start` every `frame_stride`, looping back to frame 0 past the last frame
    (official `sample_or_pad_sequence_indices`, dmvr/processors.py: the tiled range 0..T-1)."""
    return (start + np.arange(num_frames) * frame_stride) % video_frames


def random_clip(video_frames: int, num_frames: int, frame_stride: int, rng: np.random.Generator) -> np.ndarray:
    """Training clip (temporal jitter): a start uniform in [0, max(T - (n - 1) s, 1)), as the official
    `_get_random_sampling_offset` (dmvr/processors.py) draws it; the clip stays inside the video when it fits."""
    last_start = max(video_frames - clip_span(num_frames, frame_stride), 0)
    return clip_indices(video_frames, num_frames, frame_stride, int(rng.integers(0, last_start + 1)))


def eval_clips(video_frames: int, num_frames: int, frame_stride: int, num_clips: int) -> list[np.ndarray]:
    """Test clips as the official loader: with room = max(T - n s, 0), one clip starts at room // 2 (official
    `sample_sequence` with random=False) and k > 1 clips at linspace(0, room, k) truncated to int (official
    `sample_linspace_sequence`; its float32 linspace truncates to these integers, checked for T < 200000, k <= 12)."""
    clip_span(num_frames, frame_stride)  # validates both
    room = max(video_frames - num_frames * frame_stride, 0)
    starts = np.arange(num_clips) * room // (num_clips - 1) if num_clips > 1 else [room // 2]
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
