"""The YUV training path (read_clip_yuv -> train/eval transforms, VideoDataset items) against ffmpeg's own frames.

Fixtures: tests/fixtures/media/X (made by tests/make_media_fixtures.py with the ffmpeg CLI) and X.npz, ffmpeg's
rgb24 decode of X. The reference here applies the same crop, resize (bilinear, antialiased when shrinking) and
[-1, 1] normalisation in float64 to ffmpeg's frames. Tolerances are in levels of 1/255: the library resizes
uint8 planes and converts YUV to RGB after the resize (ffmpeg rounds RGB to uint8 first), which costs about
2 levels at most on these smooth fixtures; a colour-range error costs 16 % of contrast (up to 20 levels here),
a crop one pixel off or a 321 -> 320 rescale tens of levels on the moving square's edges.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from data_videos import good_video

from vivit.data import AugmentConfig, VideoDataset, read_clip_yuv
from vivit.data import datasets
from vivit.data.sampling import eval_clips
from vivit.data.transforms import _yuv_crop_to_rgb, eval_transform, train_transform

MEDIA = Path(__file__).parent / "fixtures" / "media"
COLOUR = ["mjpeg_yuvj420p.avi", "mjpeg_yuvj422p.avi", "mjpeg_yuvj444p.avi", "gray.mkv", "rgb.mkv"]
ODD = "odd_321x241.mkv"  # lossless 4:2:0 of odd width and height
TEN_BIT = "h264_10bit.mp4"  # 4:2:0 converted by ffmpeg's scaler: its chroma siting and horizontal chroma reuse
ODD_HEIGHT = "odd_height_422.mp4"  # 4:2:2 of 25 rows: converted by ffmpeg's scaler too
ODD_MJPEG = "mjpeg_odd_33x25.avi"  # full-range 4:2:0 of odd sizes: ffmpeg's scaler, full range
LEVEL = 2 / 255  # one level of 1/255 in [-1, 1]


def ffmpeg_frames(name: str) -> np.ndarray:
    return np.load(MEDIA / f"{name}.npz")["frames"]


def reference(frames: np.ndarray, boxes: list[tuple[int, int]], side: int, size: int) -> torch.Tensor:
    """(V, 3, T, size, size): each square crop (top, left, side) of ffmpeg's frames resized in float, in [-1, 1]."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).double()
    views = [F.interpolate(x[..., t:t + side, left:left + side], size=(size, size), mode="bilinear",
                           align_corners=False, antialias=side > size) for t, left in boxes]
    return (torch.stack(views).transpose(1, 2) / 255 * 2 - 1).float()


def three_crops(height: int, width: int, side: int) -> list[tuple[int, int]]:
    """Left, centre, right (landscape) at mid height, as the paper's 3-crop test."""
    return [((height - side) // 2, left) for left in (0, (width - side) // 2, width - side)]


def assert_close(ours: torch.Tensor, expected: torch.Tensor, max_levels: float, mean_levels: float) -> None:
    error = (ours - expected).abs() / LEVEL
    assert ours.shape == expected.shape
    assert error.max() <= max_levels and error.mean() <= mean_levels, (float(error.max()), float(error.mean()))


@pytest.mark.parametrize("name", [*COLOUR, ODD, TEN_BIT, ODD_HEIGHT, ODD_MJPEG])
@pytest.mark.parametrize("shrink", [False, True])
def test_eval_transform_of_yuv_equals_ffmpeg_frames_cropped_and_resized(name, shrink):
    """Colour range (yuvj, gray, RGB: full range), exact crop geometry (odd sizes cropped, not rescaled) and
    chroma as ffmpeg upsamples it for RGB (10-bit: a chroma edge half a pixel off costs ~100 levels)."""
    expected_frames = ffmpeg_frames(name)
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(len(expected_frames)))
    height, width = expected_frames.shape[1:3]
    short = min(height, width)
    size = short * 2 // 3 if shrink else short  # the frame stands for short side `short`: crops of `short` px
    ours = eval_transform(frames, size, 3, short_side=size)
    expected = reference(expected_frames, three_crops(height, width, short), short, size)
    assert_close(ours, expected, 3, 1)


@pytest.mark.parametrize("name", ["rotate90.mp4", "h264_bframes.avi", "start_offset.webm", "mjpeg_yuvj420p.avi",
                                  "mjpeg_yuvj422p.avi"])
def test_yuv_crops_of_subsampled_chroma_are_ffmpegs_rgb_exactly(name):
    """4:2:0 / 4:2:2 planes as decoded become ffmpeg's own RGB bit for bit (swscale's unscaled converter:
    16-bit fixed point, each product floored), not an exactly rounded RGB that is up to 3 levels brighter."""
    expected = ffmpeg_frames(name)
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(len(expected)))
    assert frames.chroma != (1, 1)
    side = min(frames.height, frames.width)
    for top, left in three_crops(frames.height, frames.width, side):
        ours = _yuv_crop_to_rgb(frames, top, left, side).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(ours, expected[:, top:top + side, left:left + side])


@pytest.mark.parametrize("name", [COLOUR[1], COLOUR[3], ODD])
def test_train_transform_of_yuv_is_an_exact_crop_of_ffmpeg_frames(name):
    """Without zoom, flip or colour jitter a training clip is one of the crops of ffmpeg's frames."""
    expected_frames = ffmpeg_frames(name)
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(len(expected_frames)))
    height, width = expected_frames.shape[1:3]
    side = min(height, width)
    plain = AugmentConfig(scale_jitter=(1.0, 1.0), flip=0.0, color_jitter=0.0)
    ours = train_transform(frames, side, plain, torch.Generator().manual_seed(0))
    boxes = [(top, left) for top in range(height - side + 1) for left in range(width - side + 1)]
    errors = [(ours - view).abs().max() / LEVEL for view in reference(expected_frames, boxes, side, side)]
    assert min(errors) <= 3


def dataset(name: str, train: bool, image_size: int, short_side: int, **kw) -> VideoDataset:
    views = {} if train else dict(num_clips=2, num_crops=3)
    return VideoDataset([(MEDIA / name, 0)], ["x"], train=train, num_frames=4, frame_stride=2,
                        image_size=image_size, augment=AugmentConfig(short_side=short_side, **kw), **views)


def spy_decoded_sizes(monkeypatch) -> list[tuple[int, int]]:
    sizes = []

    def spy(*args, **kw):
        frames, info = read_clip_yuv(*args, **kw)
        sizes.append((frames.height, frames.width))
        return frames, info

    monkeypatch.setattr(datasets, "read_clip_yuv", spy)
    return sizes


@pytest.mark.parametrize("name", COLOUR)
def test_dataset_eval_item_equals_ffmpeg_frames(name, monkeypatch):
    """VideoDataset eval views (2 clips x 3 crops) against the same frames, crops and resize of ffmpeg's decode:
    24 x 32 frames standing for short side 18 (less than 2x smaller: decoded at native size), 21 px crops -> 16."""
    sizes = spy_decoded_sizes(monkeypatch)
    expected_frames = ffmpeg_frames(name)
    height, width = expected_frames.shape[1:3]
    views, label, _ = dataset(name, False, image_size=16, short_side=18)[0]
    side = round(16 * height / 18)
    clips = eval_clips(len(expected_frames), 4, 2, 2)
    expected = torch.cat([reference(expected_frames[c], three_crops(height, width, side), side, 16) for c in clips])
    assert label == 0 and sizes == [(height, width)]
    assert_close(views, expected, 3, 1)


# (max, mean) levels after swscale's 2x reduction: it resamples subsampled chroma from its own plane (ffmpeg's
# RGB repeats each sample first) and filters a little differently: tens of levels at the moving square's sharp
# colour edges of these 32 x 24 files; a colour-range error would move the mean by ~10 levels
REDUCED = {"mjpeg_yuvj420p.avi": (50, 4), "mjpeg_yuvj422p.avi": (36, 2.5), "mjpeg_yuvj444p.avi": (16, 1),
           "gray.mkv": (3, 0.5), "rgb.mkv": (32, 2)}


@pytest.mark.parametrize("name", COLOUR)
def test_dataset_decodes_at_the_size_the_transform_needs(name, monkeypatch):
    """Sources at least twice the size the transform needs are decoded at that size (training: the resize target
    times the largest zoom), and the views still agree with ffmpeg's frames resized to it and cropped."""
    sizes = spy_decoded_sizes(monkeypatch)
    expected_frames = ffmpeg_frames(name)  # 24 x 32
    views, _, _ = dataset(name, False, image_size=8, short_side=12)[0]
    clip, _, _ = dataset(name, True, image_size=8, short_side=9, scale_jitter=(0.9, 1.25))[0]  # 9 x 1.25 -> 12
    assert sizes == [(12, 16), (12, 16)] and clip.shape == (3, 4, 8, 8)
    frames = torch.from_numpy(expected_frames).permute(0, 3, 1, 2).double()
    small = F.interpolate(frames, size=(12, 16), mode="bilinear", align_corners=False, antialias=True)
    small = small.permute(0, 2, 3, 1).numpy()
    clips = eval_clips(len(expected_frames), 4, 2, 2)
    expected = torch.cat([reference(small[c], three_crops(12, 16, 8), 8, 8) for c in clips])
    assert_close(views, expected, *REDUCED[name])


def test_eval_item_memory_follows_the_output_size(tmp_path):
    """A 640x480 source for 32 px views: the decoded frames (traced by tracemalloc) are a few output-sized
    frames, not 8 x 640 x 480 x 1.5 bytes (3.7 MB)."""
    path = good_video(tmp_path / "big.mp4", frames=8, size=(480, 640))
    item = VideoDataset([(path, 0)], ["x"], train=False, num_frames=8, frame_stride=1, image_size=32)
    tracemalloc.start()
    views, _, _ = item.read(0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert views.shape == (1, 3, 8, 32, 32) and peak < 1_000_000
