import numpy as np
import pytest
from data_videos import bad_files, good_video, pattern

from vivit.data import decode
from vivit.data.decode import probe, read_frames
from vivit.data.encode import write_video
from vivit.errors import DataError

FRAMES, SIZE = 24, (32, 48)
INDICES = [0, 3, 3, 7, 12, 23, 5]  # any order, repeats allowed


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    return {
        "lossless": good_video(root / "lossless.mkv", codec="ffv1"),
        "h264rgb": good_video(root / "rgb.mp4", codec="libx264rgb", options={"crf": "0"}),
        "h264": good_video(root / "h264.mp4", options={"crf": "10"}),
        "vp9": good_video(root / "vp9.webm", codec="libvpx-vp9", options={"crf": "10", "b": "0"}),
        "mjpeg": good_video(root / "mjpeg.avi", codec="mjpeg", options={"q": "2"}),
    }


@pytest.mark.parametrize("kind", ["lossless", "h264rgb"])
def test_lossless_decode_equals_encoded_frames(videos, kind):
    assert np.array_equal(read_frames(videos[kind], INDICES), pattern(FRAMES, *SIZE)[INDICES])


@pytest.mark.parametrize("kind, tolerance", [("h264", 4.0), ("vp9", 4.0), ("mjpeg", 6.0)])
def test_lossy_codecs_decode_close_to_encoded_frames(videos, kind, tolerance):
    got = read_frames(videos[kind], INDICES)
    assert got.dtype == np.uint8 and got.shape == (len(INDICES), *SIZE, 3)
    assert np.abs(got.astype(float) - pattern(FRAMES, *SIZE)[INDICES]).mean() < tolerance


@pytest.mark.parametrize("kind", ["lossless", "h264", "vp9", "mjpeg"])
def test_probe_reads_metadata(videos, kind):
    info = probe(videos[kind])
    assert (info.frames, info.width, info.height) == (FRAMES, SIZE[1], SIZE[0])
    assert info.fps == pytest.approx(25) and info.duration == pytest.approx(FRAMES / 25, abs=0.05)


def test_reduced_size_decode(videos):
    assert read_frames(videos["h264"], [1, 2], size=16).shape == (2, 16, 24, 3)  # short side 16
    assert read_frames(videos["h264"], [1], size=(10, 20)).shape == (1, 10, 20, 3)


def test_indices_past_the_end_repeat_the_last_frame(videos):
    got = read_frames(videos["lossless"], [FRAMES - 1, FRAMES + 5])
    assert np.array_equal(got[0], got[1])


def test_clip_decode_seeks_instead_of_decoding_the_whole_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.mp4", pattern(300, 16, 16), codec="libx264rgb",
                       options={"crf": "0", "g": "10", "keyint_min": "10"})
    decoded = []
    original = decode._Lazy.__init__
    monkeypatch.setattr(decode._Lazy, "__init__", lambda self, *a: (decoded.append(1), original(self, *a))[1])
    got = read_frames(path, [250, 252, 254])
    assert np.array_equal(got, pattern(300, 16, 16)[[250, 252, 254]])
    assert len(decoded) < 20  # from the keyframe at 250 to 254, not 255 frames from the start


def test_variable_frame_rate_maps_times_to_frames(tmp_path):
    frames = pattern(6, 16, 16)
    path = write_video(tmp_path / "vfr.mp4", frames, codec="libx264rgb", options={"crf": "0"},
                       pts=[0, 40, 80, 240, 280, 320])  # a 160 ms gap after the third frame
    info = probe(path)
    got = read_frames(path, range(info.frames))
    shown = [int(np.argmin([np.abs(g.astype(int) - f).sum() for f in frames])) for g in got]
    assert shown == sorted(shown) and shown[0] == 0 and set(shown) >= {0, 1, 2, 3}


@pytest.mark.parametrize("kind", ["zero", "truncated", "text", "undecodable", "missing"])
def test_bad_files_raise_a_readable_error(tmp_path, videos, kind):
    path = bad_files(tmp_path, videos["h264"])[kind]
    with pytest.raises((OSError, ValueError, DataError)):
        read_frames(path, [0, 1])


def test_threaded_decoding_gives_the_same_frames(videos):
    assert np.array_equal(read_frames(videos["lossless"], INDICES, threads=True), pattern(FRAMES, *SIZE)[INDICES])
    assert np.array_equal(read_frames(videos["h264"], INDICES, threads=True), read_frames(videos["h264"], INDICES))
