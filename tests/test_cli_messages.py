"""Messages of the commands for bad input files: one `error: cannot decode FILE: REASON` line (exit 2) where one
file is all a command has, the same reason as `check-data` and `predict` give; still images are not videos;
`--timeline` options need `--timeline`; no 'epoch' outside training; a skipped file is reported once."""

import json
import logging

import av
import numpy as np
import pytest
from engine_fixtures import untrained_checkpoint

from vivit.cli import main
from vivit.data.check import check_video
from vivit.data.decode import probe
from vivit.data.encode import write_video
from vivit.errors import BadVideoError

INVALID = "Invalid data found when processing input"  # ffmpeg's AVERROR_INVALIDDATA text


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "ckpt.pt")


@pytest.fixture
def text_video(tmp_path):
    path = tmp_path / "text.mp4"
    path.write_text("hello, this is text\n")
    return path


def write_image(path, frames=1, format=None):
    """A still (frames=1) or animated picture written by ffmpeg's image muxers through PyAV."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format=format) as out:
        codec = {"gif": "gif", "apng": "apng"}.get(format, "png")
        stream = out.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb8" if codec == "gif" else "rgb24"
        for _ in range(frames):
            image = av.VideoFrame.from_ndarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(image))
        out.mux(stream.encode())
    return path


def one_error_line(capsys, argv):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_timeline_of_an_undecodable_file_is_one_error_naming_it(ckpt, text_video, tmp_path, capsys):
    assert check_video(text_video) == INVALID
    line = one_error_line(capsys, ["predict", str(ckpt), str(text_video), "--timeline", "--quiet"])
    assert line == f"error: cannot decode {text_video}: {INVALID}"
    empty = tmp_path / "empty.mp4"
    empty.touch()
    line = one_error_line(capsys, ["predict", str(ckpt), str(empty), "--timeline", "--quiet"])
    assert line == f"error: cannot decode {empty}: empty file (0 bytes)"


def test_probe_names_the_file_and_keeps_a_clean_reason(text_video):
    with pytest.raises(BadVideoError) as caught:
        probe(text_video)
    assert caught.value.reason == INVALID and caught.value.path == str(text_video)


def test_explain_gives_the_same_reason_as_predict(ckpt, text_video, tmp_path, capsys):
    line = one_error_line(capsys, ["explain", str(text_video), "--model", str(ckpt), "--out", str(tmp_path / "x")])
    assert line.startswith(f"error: cannot decode {text_video}: {INVALID};")
    assert line.count(str(text_video)) == 1 and "Errno" not in line


def test_timeline_of_a_missing_file_says_it_does_not_exist(ckpt, tmp_path, capsys):
    missing = tmp_path / "nowhere.mp4"
    assert one_error_line(capsys, ["predict", str(ckpt), str(missing), "--timeline"]) == \
        f"error: video not found: {missing}"


@pytest.mark.parametrize("option", [["--smooth", "3"], ["--window-stride", "0.5"], ["--timeline-out", "tl"]])
def test_timeline_options_without_timeline_are_an_error(ckpt, text_video, option, capsys):
    line = one_error_line(capsys, ["predict", str(ckpt), str(text_video), *option])
    assert line.startswith(f"error: {option[0]} only apply to --timeline")


def test_a_still_image_is_skipped_as_a_bad_file_an_animation_is_a_video(ckpt, tmp_path, capsys, caplog):
    still = write_image(tmp_path / "still.png", format="image2")
    renamed = tmp_path / "still_as.mp4"
    renamed.write_bytes(still.read_bytes())
    gif = write_image(tmp_path / "moving.gif", frames=8, format="gif")
    assert probe(gif).frames == 8
    for image in (still, renamed):
        with pytest.raises(BadVideoError, match="a still image"):
            probe(image)
        assert check_video(image).startswith("a still image")
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(ckpt), str(still), str(renamed), str(gif), "--json", "--quiet",
                     "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in result["results"]] == [str(gif)]
    assert [f["file"] for f in result["failed"]] == [str(still), str(renamed)]
    assert all(f["reason"].startswith("a still image") for f in result["failed"])
    messages = [r.getMessage() for r in caplog.records]
    assert "skipped 2 of 3 videos (unreadable files)" in messages  # no epoch outside training
    line = one_error_line(capsys, ["explain", str(still), "--model", str(ckpt), "--out", str(tmp_path / "x")])
    assert line.startswith(f"error: cannot decode {still}: a still image")


def test_extract_reports_a_failed_file_once(ckpt, text_video, tmp_path, capsys, caplog):
    video = tmp_path / "ok.mp4"
    write_video(video, np.zeros((8, 16, 16, 3), np.uint8), fps=8)
    with caplog.at_level(logging.WARNING):
        assert main(["extract", str(video), str(text_video), "--model", str(ckpt), "--out", str(tmp_path / "f"),
                     "--quiet", "--workers", "0"]) == 1
    out = capsys.readouterr()
    said = out.out + out.err + "\n".join(r.getMessage() for r in caplog.records)
    assert said.count(f"{text_video}: {INVALID}") == 1, said


def test_check_data_split_none_is_the_source_as_a_whole_as_for_eval(ckpt, tmp_path, capsys):
    for split in ("train", "val"):
        write_video(tmp_path / "data" / split / "a" / "x.mp4", np.zeros((8, 16, 16, 3), np.uint8), fps=8)
    data = str(tmp_path / "data")
    assert main(["check-data", data, "--quiet"]) == 0  # default: every split
    assert "2 of 2 videos decode" in capsys.readouterr().out
    check = one_error_line(capsys, ["check-data", data, "--split", "none"])
    evaluate = one_error_line(capsys, ["eval", str(ckpt), data, "--split", "none"])
    assert check == evaluate and "has split folders" in check


def test_a_warning_during_a_progress_bar_prints_on_its_own_line(monkeypatch):
    import io
    import sys

    from vivit.engine.logging import progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    for i in progress(range(3), desc="predict", total=3):
        if i == 1:
            logging.getLogger("vivit.data").warning("skipping x.mp4: bad")
    text = terminal.getvalue()
    assert "\nskipping x.mp4: bad\n" in text.replace("\r", "\n"), repr(text)
    assert "]skipping" not in text and "|skipping" not in text
