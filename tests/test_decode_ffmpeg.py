"""Decoding agrees with ffmpeg: every fixture in tests/fixtures/media/ was made by the ffmpeg CLI, and its .npz
holds ffmpeg's own rgb24 decode (tests/make_media_fixtures.py). Tolerance: at most 1 level per channel (the same
libavcodec decodes; only SIMD rounding in swscale may differ between CPUs); measured 0 on the fixtures below."""

import json
import logging
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from data_videos import garbage_stream

from vivit.data import build_dataset
from vivit.data import decode
from vivit.data.check import check_video
from vivit.data.decode import probe, read_clip_yuv, read_frames

MEDIA = Path(__file__).parent / "fixtures" / "media"
FACTS = json.loads((MEDIA / "expected.json").read_text())["files"]
VFR = ["vfr.mkv", "vfr.mp4"]
TIME_AXIS = ["rate_25_then_30.mkv", "dropped_frames.avi"]  # index != frame: tests/test_decode_ffmpeg_time.py
CFR = [name for name in FACTS if name not in VFR + TIME_AXIS]
REORDERED = ["h264_bframes.avi", "mpeg4_bframes.avi", "h264_bframes.ts"]


def ffmpeg_frames(name: str) -> np.ndarray:
    return np.load(MEDIA / f"{name}.npz")["frames"]


def assert_as_ffmpeg(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got.astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize("name", CFR)
def test_every_frame_is_ffmpegs_frame(name):
    expected = ffmpeg_frames(name)
    assert_as_ffmpeg(read_frames(MEDIA / name, range(len(expected))), expected)


@pytest.mark.parametrize("name", REORDERED)
@pytest.mark.parametrize("indices", [[14, 15, 16], [29, 31], [38, 39], [25, 5, 25, 0]])
def test_seeking_into_b_frame_streams_gives_the_displayed_frame(name, indices):
    """AVI (decode-order timestamps) and MPEG-TS (no index; a seek near the tail decodes nothing)."""
    assert_as_ffmpeg(read_frames(MEDIA / name, indices), ffmpeg_frames(name)[indices])


@pytest.mark.parametrize("name", [*REORDERED, "edit_list.mp4", "late_start.flv"])
def test_every_index_read_alone_is_ffmpegs_frame(name):
    """Each index by itself: a seek to a keyframe before it, whatever the GOP and the reordering; a rewind where
    no index entry is at time 0 (FLV video starting after its audio: a seek to 0 fails there)."""
    expected = ffmpeg_frames(name)
    for i in range(len(expected)):
        assert_as_ffmpeg(read_frames(MEDIA / name, [i]), expected[[i]])


@pytest.mark.parametrize("name", REORDERED)
def test_seeks_stay_cheap_in_reordered_streams(name, monkeypatch):
    """Keyframes every 12-15 frames: index 33 decodes from a keyframe before it, not from frame 0 (34 frames);
    from the one just before it in AVI, from about a second earlier in MPEG-TS (its seeks search and land late)."""
    decoded = []
    original = decode._Lazy.__init__
    monkeypatch.setattr(decode._Lazy, "__init__", lambda self, *a: (decoded.append(1), original(self, *a))[1])
    assert_as_ffmpeg(read_frames(MEDIA / name, [33]), ffmpeg_frames(name)[[33]])
    assert len(decoded) < (30 if name.endswith(".ts") else 15)


@pytest.mark.parametrize("name", ["h264_bframes.avi", "mpeg4_bframes.avi"])
def test_threaded_decoding_keeps_display_order(name):
    expected = ffmpeg_frames(name)
    assert_as_ffmpeg(read_frames(MEDIA / name, [3, 17, 30], threads=True), expected[[3, 17, 30]])


@pytest.mark.parametrize("name", ["rotate90.mp4", "rotate180.mp4", "rotate270.mp4"])
def test_rotation_is_upright_in_probe_rgb_and_yuv(name):
    facts, expected = FACTS[name], ffmpeg_frames(name)
    info = probe(MEDIA / name)
    assert (info.width, info.height, info.rotation) == (facts["width"], facts["height"], facts["rotation"])
    assert_as_ffmpeg(read_frames(MEDIA / name, [4, 7], size=(facts["height"], facts["width"])), expected[[4, 7]])
    yuv, _ = read_clip_yuv(MEDIA / name, lambda info: np.array([4, 7]))
    assert (yuv.height, yuv.width) == (facts["height"], facts["width"])
    luma = yuv.data.reshape(2, -1)[:, :yuv.height * yuv.width].reshape(2, yuv.height, yuv.width)
    rgb = expected[[4, 7]].astype(float)  # BT.601 video-range luma of ffmpeg's frames
    assert np.abs(luma - (16 + rgb @ [65.481, 128.553, 24.966] / 255)).mean() < 2


@pytest.mark.parametrize("name", ["long_audio.mkv", "start_offset.webm", "truncated_mjpeg.avi", "edit_list.mp4",
                                  "h264_bframes.ts", "gray.mkv"])
def test_probe_counts_the_video_streams_own_frames(name):
    """Not the container's duration (6 s of audio, a 2.5 s start offset) nor a header's claim (250 frames; 52
    samples of which an edit list shows 39)."""
    info = probe(MEDIA / name)
    assert info.frames == FACTS[name]["frames"]
    assert info.fps == float(Fraction(FACTS[name]["avg_frame_rate"]))


def test_a_file_cut_short_gives_the_frames_ffmpeg_decodes_then_repeats_the_last():
    """An mp4 whose index (first in the file) lists 40 frames, cut after 12: the packets past the cut are
    skipped as ffmpeg skips them, the frames still in the decoder come out, and later indices repeat frame 11."""
    expected = ffmpeg_frames("cut_faststart.mp4")
    assert probe(MEDIA / "cut_faststart.mp4").frames == 40
    assert_as_ffmpeg(read_frames(MEDIA / "cut_faststart.mp4", [10, 11, 30]), expected[[10, 11, 11]])


def test_indices_past_the_end_repeat_the_last_frame_with_one_warning(caplog):
    name = "truncated_mjpeg.avi"
    expected = ffmpeg_frames(name)
    decode._warned_past_end.discard(str(MEDIA / name))
    with caplog.at_level(logging.WARNING, logger="vivit.data.decode"):
        for _ in range(2):
            assert_as_ffmpeg(read_frames(MEDIA / name, [30, 31, 40, 200]), expected[[30, 31, 31, 31]])
    assert len(caplog.records) == 1 and name in caplog.records[0].getMessage()


def test_check_data_flags_a_file_shorter_than_its_header():
    assert check_video(MEDIA / "truncated_mjpeg.avi") == "only 32 of 250 frames decode (truncated or corrupt file)"
    assert check_video(MEDIA / "cut_faststart.mp4") == "only 12 of 40 frames decode (truncated or corrupt file)"
    assert check_video(MEDIA / "h264_bframes.avi") is None
    assert check_video(MEDIA / "edit_list.mp4") is None  # 52 samples, 39 shown: not truncated


def test_an_empty_file_is_named_so_by_check_data_and_skipped_by_datasets(tmp_path, caplog):
    empty = tmp_path / "interrupted.mp4"
    empty.write_bytes(b"")
    assert check_video(empty) == check_video(empty, full=False) == "empty file (0 bytes)"
    dataset = build_dataset([empty], train=False, num_frames=2, frame_stride=1, image_size=16)
    with caplog.at_level(logging.WARNING):
        assert dataset[0] is None
    assert "interrupted.mp4: empty file (0 bytes)" in caplog.text


@pytest.mark.parametrize("name", VFR)
def test_variable_frame_rate_index_is_the_frame_on_screen(name):
    """Index i shows the last frame whose ffprobe timestamp is at or before t0 + i / fps."""
    facts, expected = FACTS[name], ffmpeg_frames(name)
    info = probe(MEDIA / name)
    if facts["avg_frame_rate"] != "0/0":  # Matroska stores none: the rate then comes from the packets' span
        assert info.fps == float(Fraction(facts["avg_frame_rate"]))
    seconds = [(t - facts["timestamps"][0]) * Fraction(facts["time_base"]) for t in facts["timestamps"]]
    shown = [max(k for k, s in enumerate(seconds) if s <= i / Fraction(info.fps)) for i in range(info.frames)]
    assert len(set(shown)) < len(shown) < len(expected) + 4  # frames repeat (gaps) and are skipped (27 ms)
    assert_as_ffmpeg(read_frames(MEDIA / name, range(info.frames)), expected[shown])


def test_a_bug_surfaces_while_a_bad_file_is_skipped(tmp_path, monkeypatch, caplog):
    bad = garbage_stream(tmp_path / "garbage.avi")
    good = MEDIA / "h264_bframes.avi"
    dataset = build_dataset([good, bad], train=False, num_frames=2, frame_stride=1, image_size=16)
    with caplog.at_level(logging.WARNING):
        assert dataset[1] is None
    assert "garbage.avi" in caplog.text
    assert check_video(bad) is not None

    def bug(*args, **kwargs):
        raise ValueError("a bug in the pipeline")

    monkeypatch.setattr(decode, "output_size", bug)
    with pytest.raises(ValueError, match="a bug"):
        dataset[0]
    with pytest.raises(ValueError, match="a bug"):
        check_video(good, full=False)
