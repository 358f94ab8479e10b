"""Pixels as ffmpeg shows them where the picture is mirrored, turned at odd angles, changes size mid-stream, or uses
colour matrices and chroma layouts beyond BT.601/709 4:2:0: the RGB reader (`read_frames`) and the YUV training
path (`read_clip_yuv` planes converted as the transforms convert crops) against ffmpeg's own rgb24 decode.

Fixtures: tests/fixtures/media/X, made by tests/make_media_fixtures.py with the ffmpeg 5.1 CLI (mirrored matrices:
the tkhd patched after ffmpeg wrote the file), and X.npz, ffmpeg's frames. Tolerances as tests/test_decode_ffmpeg.py
(RGB: 1 level) and tests/test_data_pipeline_ffmpeg.py (YUV crops: exact where swscale's unscaled converter
applies, else (max, mean) levels measured on these files and named per case).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vivit.data import VideoDataset
from vivit.data.decode import iter_frames_yuv, probe, read_clip_yuv, read_frames
from vivit.data.transforms import _yuv_crop_to_rgb

MEDIA = Path(__file__).parent / "fixtures" / "media"
FACTS = json.loads((MEDIA / "expected.json").read_text())["files"]
# (clockwise turn, mirrored) that ffmpeg 5.1's autorotate applies for each patched matrix
MIRRORS = {"mirror_hflip.mp4": (0, True), "mirror_vflip.mp4": (180, True), "mirror_transpose.mp4": (90, True),
           "mirror_antitranspose.mp4": (270, True)}


def ffmpeg_frames(name: str) -> np.ndarray:
    return np.load(MEDIA / f"{name}.npz")["frames"]


def rgb_error(got: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    assert got.shape == expected.shape
    error = np.abs(got.astype(np.int16) - expected)
    return int(error.max()), float(error.mean())


def yuv_crops_error(name: str, part: slice = slice(None)) -> tuple[int, float]:
    """Worst (max, mean) levels of the YUV path's square crops (first and last along the long side) against
    ffmpeg's frames `part`; every frame of the file, read once by `read_clip_yuv` and once by `iter_frames_yuv`."""
    expected = ffmpeg_frames(name)
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(len(expected)))
    assert (frames.height, frames.width) == expected.shape[1:3]
    streamed = np.concatenate([one.data for _, one in iter_frames_yuv(MEDIA / name)])
    assert np.array_equal(streamed, frames.data)
    side = min(frames.height, frames.width)
    worst, mean = 0, 0.0
    for top, left in [(0, 0), (frames.height - side, frames.width - side)]:
        ours = _yuv_crop_to_rgb(frames, top, left, side).permute(0, 2, 3, 1).numpy()
        high, average = rgb_error(ours[part], expected[part, top:top + side, left:left + side])
        worst, mean = max(worst, high), max(mean, average)
    return worst, mean


@pytest.mark.parametrize("name", MIRRORS)
def test_mirrored_display_matrices_are_shown_as_ffmpeg_shows_them(name):
    """Front-camera matrices: hflip / vflip at 0 and 180 degrees, transpose (cclock_flip) and the other diagonal
    (clock_flip) at 90 and 270 (fftools/ffmpeg_filter.c configure_input_video_filter); was turned 180 degrees or
    clockwise, 255 levels off."""
    info = probe(MEDIA / name)
    assert (info.rotation, info.mirrored) == MIRRORS[name]
    assert (info.height, info.width) == ffmpeg_frames(name).shape[1:3]
    assert rgb_error(read_frames(MEDIA / name, range(FACTS[name]["frames"])), ffmpeg_frames(name))[0] <= 1
    assert yuv_crops_error(name)[0] == 0  # 4:2:0 planes turned by the same filters: swscale's RGB bit for bit


def test_an_angle_not_a_multiple_of_90_degrees_uses_ffmpegs_rotate_filter():
    """45 degrees: the picture keeps its size, corners black (was shown unturned, 255 levels off); ffmpeg rotates
    RGB, so the YUV path turns planar RGB too (rotating YUV planes was 41 levels off at chroma edges)."""
    name = "rotate45.mp4"
    assert probe(MEDIA / name).rotation == 45
    assert rgb_error(read_frames(MEDIA / name, range(5)), ffmpeg_frames(name))[0] <= 1
    assert yuv_crops_error(name) == (0, 0.0)


def test_422_turned_a_quarter_is_converted_before_it_is_turned():
    """ffmpeg's transpose takes no 4:2:2, so ffmpeg converts to RGB first, then turns: the RGB reader builds the same
    graph, the YUV path turns the planes itself (chroma (1, 2) becomes (2, 1)); was 54 levels off in both."""
    name = "yuv422p_rotate90.mp4"
    assert rgb_error(read_frames(MEDIA / name, range(5)), ffmpeg_frames(name))[0] <= 1
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(5))
    assert frames.chroma == (2, 1)
    assert yuv_crops_error(name) == (0, 0.0)


def test_a_size_change_mid_stream_is_scaled_to_the_first_size_as_ffmpeg_does():
    """32x24, then 24x18 (adaptive-resolution recordings): every reader gives frames of the first size, as
    ffmpeg's autoscale; the YUV path and a dataset item no longer fail at stacking frames of two sizes."""
    name = "size_change.ts"
    expected = ffmpeg_frames(name)
    assert rgb_error(read_frames(MEDIA / name, range(10)), expected)[0] <= 1
    assert yuv_crops_error(name, slice(0, 5)) == (0, 0.0)
    # the scaled part: 4:2:0 planes scaled up, where ffmpeg's one pass to RGB keeps chroma of every row: tens of
    # levels at the sharp colour edges of this 24 x 18 picture, as the reduced decodes of test_data_pipeline_ffmpeg
    high, mean = yuv_crops_error(name, slice(5, 10))
    assert high <= 50 and mean <= 6, (high, mean)
    item = VideoDataset([(MEDIA / name, 0)], ["x"], train=False, num_frames=8, frame_stride=1, image_size=16)[0]
    assert item is not None and item[0].shape == (1, 3, 8, 16, 16)


@pytest.mark.parametrize("name", ["x264_bt2020nc.mp4", "x264_smpte240m.mp4", "x264_fcc.mp4"])
def test_yuv_path_uses_swscales_coefficients_of_the_tagged_colour_matrix(name):
    """BT.2020, SMPTE 240M and FCC tags (ff_yuv2rgb_coeffs rows): 4:2:0 crops equal ffmpeg's RGB bit for bit
    (were read as BT.601: up to 36 levels off)."""
    assert yuv_crops_error(name) == (0, 0.0)


@pytest.mark.parametrize("name", ["ffv1_yuv411p.mkv", "ffv1_yuv410p.mkv", "odd_321x241.mkv", "mjpeg_odd_33x25.avi",
                                  "odd_height_422.mp4", "h264_10bit.mp4", "mjpeg_yuvj444p.avi"])
def test_frames_ffmpeg_converts_through_its_scaler_are_its_rgb_in_the_yuv_path(name):
    """4:1:1 (DV NTSC), 4:1:0, 4:2:0 of odd sizes (also full-range MJPEG), 4:2:2 of odd height, 10-bit, 4:4:4: frames
    swscale's unscaled converter does not take become ffmpeg's own RGB, kept as planar RGB, so crops are its pixels
    (were 8-bit YUV planes of the interpolated chroma: up to 10 levels off on odd-size MJPEG, 4 on 4:1:1, 6 on 10-bit, 1 on 4:4:4)."""
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(5))
    assert frames.colorspace == 0 and frames.chroma == (1, 1)  # AVCOL_SPC_RGB: G, B, R planes
    assert yuv_crops_error(name) == (0, 0.0)


@pytest.mark.parametrize("name", ["rgb.mkv", "png_rgb48.mov"])
def test_rgb_sources_stay_rgb_in_the_yuv_path(name):
    """RGB (and 16-bit RGB) frames become planar RGB, not 8-bit YUV: crops are ffmpeg's pixels (were up to 4
    levels off through the YUV round trip)."""
    frames, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(5))
    assert frames.colorspace == 0  # AVCOL_SPC_RGB: G, B, R planes
    assert yuv_crops_error(name) == (0, 0.0)


def test_10_bit_bt709_turned_is_scaled_to_8_bits_in_its_own_matrix():
    """ffmpeg turns the 10-bit frame, then converts it to RGB with BT.709 coefficients: so does the YUV path (a
    conversion to BT.601 first rounds twice: was 12 levels off; 8-bit BT.709 planes were 6 off)."""
    name = "h264_10bit_bt709_turned270.mp4"
    assert probe(MEDIA / name).rotation == 270
    assert yuv_crops_error(name) == (0, 0.0)
