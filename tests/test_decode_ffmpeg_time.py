"""The time axis where a container's rate or timestamps mislead, against ffmpeg's own decode: fixtures in
tests/fixtures/media/ made by the ffmpeg CLI (tests/make_media_fixtures.py), with ffmpeg's rgb24 frames and the
timestamps ffprobe gives each one."""

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vivit.data import decode
from vivit.data.check import check_video
from vivit.data.decode import iter_frames_yuv, probe, read_clip_yuv, read_frames
from vivit.errors import DataError

MEDIA = Path(__file__).parent / "fixtures" / "media"
FACTS = json.loads((MEDIA / "expected.json").read_text())["files"]


def ffmpeg_frames(name: str) -> np.ndarray:
    return np.load(MEDIA / f"{name}.npz")["frames"]


def assert_as_ffmpeg(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    assert np.abs(got.astype(np.int16) - expected).max() <= 1


def seconds(name: str) -> list[Fraction]:
    """ffprobe's timestamp of each frame ffmpeg decodes, from the first, in seconds."""
    facts = FACTS[name]
    return [(t - facts["timestamps"][0]) * Fraction(facts["time_base"]) for t in facts["timestamps"]]


def read_all_without_warning(name: str, caplog) -> tuple[np.ndarray, decode.VideoInfo]:
    decode._warned_past_end.discard(str(MEDIA / name))
    info = probe(MEDIA / name)
    with caplog.at_level(logging.WARNING, logger="vivit.data.decode"):
        frames = read_frames(MEDIA / name, range(info.frames))
    assert not caplog.records  # no "the video ends after frame ..."
    return frames, info


def test_a_default_duration_the_frames_contradict_gives_way_to_their_timestamps(caplog):
    """Matroska saying 25 fps (DefaultDuration) over frames 66.7 ms apart: 15 fps, each frame once, as ffmpeg
    decodes them (was 25 fps: indices 0, 0, 1, 2, 2, ..., the last 6 frames out of reach)."""
    name = "webcam_25_real15.mkv"
    assert FACTS[name]["avg_frame_rate"] == "25/1"
    frames, info = read_all_without_warning(name, caplog)
    assert (info.frames, info.fps) == (15, 15.0)  # the exact rate the ms timestamps round: each frame once
    assert_as_ffmpeg(frames, ffmpeg_frames(name))


def test_rates_joined_by_stream_copy_follow_the_timestamps(caplog):
    """25 fps then 30 fps, DefaultDuration 25: fps is the frames' intervals over their span, index i the frame
    on screen at i / fps, and the last index is the last frame (was 25 fps: the last 3 indices repeated the
    last frame, with a warning that the video ends early)."""
    name = "rate_25_then_30.mkv"
    times = seconds(name)
    frames, info = read_all_without_warning(name, caplog)
    assert info.frames == len(times) and info.fps == pytest.approx(float((len(times) - 1) / times[-1]))
    half_tick = Fraction(FACTS[name]["time_base"]) / 2  # timestamps are rounded to the time base (ms)
    shown = [max(k for k, s in enumerate(times) if s - half_tick <= i / Fraction(info.fps)) for i in
             range(info.frames)]
    assert shown[-1] == len(times) - 1 and len(set(shown)) < len(shown)  # frames repeat at 25, skip at 30 fps
    assert_as_ffmpeg(frames, ffmpeg_frames(name)[shown])


def test_dropped_frames_in_avi_keep_their_time_and_are_not_truncation():
    """20 chunks, frames 5-9 empty (dropped at capture): 20 indices as ffmpeg's default output, which repeats
    frame 4 across the gap (was 15: the last 5 frames out of reach, and check-data said 'only 15 of 20 frames
    decode (truncated or corrupt file)')."""
    name = "dropped_frames.avi"
    facts, expected = FACTS[name], ffmpeg_frames(name)
    times = facts["timestamps"]  # AVI: frame numbers
    shown = [max(k for k, t in enumerate(times) if t <= i) for i in range(facts["header_frames"])]
    assert probe(MEDIA / name).frames == facts["header_frames"] == 20
    assert_as_ffmpeg(read_frames(MEDIA / name, range(20)), expected[shown])
    for i in (6, 10, 19):
        assert_as_ffmpeg(read_frames(MEDIA / name, [i]), expected[[shown[i]]])
    assert check_video(MEDIA / name) is None
    assert check_video(MEDIA / "truncated_mjpeg.avi") == "only 32 of 250 frames decode (truncated or corrupt file)"


def test_ntsc_rates_in_matroska_are_exact():
    """59.94 fps read back as 19001/317 from Matroska: the exact 60000/1001 places frame 30 (500.5 ms, stored
    501) at index 30 (was index 31: index 30 showed frame 29 and frame 30 was never shown)."""
    name = "ntsc_5994.mkv"
    assert FACTS[name]["avg_frame_rate"] == "19001/317" and FACTS[name]["timestamps"][30] == 501
    expected = ffmpeg_frames(name)
    assert probe(MEDIA / name).fps == 60000 / 1001
    assert_as_ffmpeg(read_frames(MEDIA / name, range(len(expected))), expected)
    assert_as_ffmpeg(read_frames(MEDIA / name, [30]), expected[[30]])


def test_mpeg_ts_joined_by_cat_comes_in_order():
    """Timestamps restart where the second file begins: offset as ffmpeg's CLI offsets them, frames 15-29 follow
    frame 14 (were all the last frame), also read alone and in the sequential YUV reader."""
    name = "joined_by_cat.ts"
    facts, expected = FACTS[name], ffmpeg_frames(name)
    assert facts["timestamps"][15] == facts["timestamps"][0]  # ffprobe: the second part starts again
    assert_as_ffmpeg(read_frames(MEDIA / name, range(30)), expected)
    for indices in ([16], [29], [20, 3]):
        assert_as_ffmpeg(read_frames(MEDIA / name, indices), expected[indices])
    sequential = np.concatenate([f.data for _, f in iter_frames_yuv(MEDIA / name)])
    assert np.array_equal(sequential, read_clip_yuv(MEDIA / name, lambda info: np.arange(30))[0].data)


def test_a_video_track_without_frames_is_named_so(tmp_path):
    """Matroska with audio and a video track that holds no packet (ffmpeg: no frame decodes): 'video stream has
    no frames' (was 'Operation not permitted', from a rewind of the empty stream)."""
    path = tmp_path / "no_video_frames.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        video = container.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=8000)
        audio.layout = "mono"
        sound = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        sound.sample_rate = 8000
        for packet in [*audio.encode(sound), *audio.encode(None)]:
            container.mux(packet)
    with pytest.raises(DataError, match="video stream has no frames"):
        probe(path)
    assert check_video(path) == check_video(path, full=False) == "video stream has no frames"
