"""Output folders of eval, extract, explain, predict --timeline and synth: a second run never replaces what the
first wrote unless asked (--overwrite, which replaces only the command's own files), a file given as the
folder is refused in one line, and synth never mixes two datasets in one folder."""

import json
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import untrained_checkpoint, write_brightness_videos

from vivit.cli import main
from vivit.data.encode import write_video


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Errno" not in err, err
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("model") / "ckpt.pt")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_brightness_videos(tmp_path_factory.mktemp("data"), per_class=1, val_per_class=1)


def clip(path: Path) -> Path:
    return write_video(path, np.random.default_rng(0).integers(0, 255, (12, 16, 16, 3), np.uint8), fps=8)


# synth ---------------------------------------------------------------------------------------------------
SYNTH = ["--videos-per-class", "2", "--frames", "4", "--size", "8", "--quiet"]


def synth_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_synth_refuses_a_non_empty_folder_and_overwrite_replaces_only_its_videos(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synth", str(out), "--classes", "4", *SYNTH]) == 0
    (out / "mine.txt").write_text("notes")
    (out / "train" / "extra").mkdir()
    (out / "train" / "extra" / "holiday.mp4").write_bytes(b"someone's video")
    before = synth_files(out)
    capsys.readouterr()
    err = one_line_error(capsys, ["synth", str(out), "--classes", "2", *SYNTH])
    assert str(out) in err and "not empty" in err and "--overwrite" in err
    assert synth_files(out) == before

    assert main(["synth", str(out), "--classes", "2", *SYNTH, "--overwrite"]) == 0
    assert capsys.readouterr().out.startswith("wrote 2 train and 2 val videos")  # those written, not all of OUT's
    assert sorted(p.name for p in (out / "train").iterdir()) == ["extra", "left-right", "right-left"]
    assert synth_files(out) == sorted(["mine.txt", "train/extra/holiday.mp4",
                                       *(f"{s}/{c}/{i:05d}.mp4" for c in ("left-right", "right-left")
                                         for s, i in (("val", 0), ("train", 1)))])


def test_synth_into_a_file_says_so(tmp_path, capsys):
    target = tmp_path / "file.mp4"
    target.write_bytes(b"x")
    err = one_line_error(capsys, ["synth", str(target), "--classes", "2", *SYNTH])
    assert err == f"error: OUT {target} is a file; give a folder"
    err = one_line_error(capsys, ["synth", str(target / "sub"), "--classes", "2", *SYNTH])
    assert err == f"error: OUT {target / 'sub'} is a file ({target} is a file); give a folder"
    assert target.read_bytes() == b"x"


def test_the_demo_reruns_into_its_own_folder(tmp_path, monkeypatch):
    from vivit.engine import demo

    def fake_train(config, quiet):  # an untrained model stands in for training
        untrained_checkpoint(Path(config.run.out) / "best.pt", classes=("left-right", "right-left"))
        return {"best_top1": 0.5}

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(demo, "VIEWS", "1x1")
    (tmp_path / "data").mkdir()  # an interrupted generation left the folder without val/: generated again
    (tmp_path / "data" / "train").mkdir()
    for _ in range(2):
        summary = demo.run_demo(tmp_path, epochs=1, videos_per_class=2, quiet=True)
        assert set(summary["results"]) == set(demo.MODELS)
    assert len(list((tmp_path / "data").rglob("*.mp4"))) == 4


# eval ----------------------------------------------------------------------------------------------------
def test_eval_refuses_to_replace_a_report_unless_overwrite(ckpt, data, tmp_path, capsys):
    common = ["eval", str(ckpt), str(data), "--views", "1x1", "--workers", "0", "--quiet", "--out"]
    out = tmp_path / "ev"
    assert main([*common, str(out)]) == 0
    (out / "confusion-old.png").write_bytes(b"a multi-head model's plot")  # another model's: stale on --overwrite
    report = (out / "report.json").read_bytes()
    capsys.readouterr()
    err = one_line_error(capsys, [*common, str(out)])
    assert err == f"error: {out / 'report.json'} already exists (and 2 more of its outputs); pass --overwrite to replace it"
    assert (out / "report.json").read_bytes() == report
    assert main([*common, str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "report.json"]
    target = tmp_path / "file"
    target.write_text("x")
    assert one_line_error(capsys, [*common, str(target)]) == f"error: --out {target} is a file; give a folder"


# extract -------------------------------------------------------------------------------------------------
def test_extract_into_a_file_says_so(ckpt, data, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    err = one_line_error(capsys, ["extract", str(data), "--split", "val", "--model", str(ckpt), "--out", str(target),
                                  "--quiet"])
    assert err == f"error: --out {target} is a file; give a folder" and target.read_text() == "x"


# explain -------------------------------------------------------------------------------------------------
def test_explain_refuses_to_replace_and_overwrite_removes_its_stale_overlay(ckpt, tmp_path, capsys):
    video, out = clip(tmp_path / "a.mp4"), tmp_path / "ex"
    common = ["explain", str(video), "--model", str(ckpt), "--out", str(out)]
    assert main(common) == 0
    before = (out / "map.npy").read_bytes()
    capsys.readouterr()
    err = one_line_error(capsys, [*common, "--format", "gif"])
    assert err.startswith(f"error: {out / 'explain.json'} already exists") and "--overwrite" in err
    assert (out / "map.npy").read_bytes() == before and not (out / "overlay.gif").exists()
    assert main([*common, "--format", "gif", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["explain.json", "map.npy", "overlay.gif", "strip.png", "temporal.png"]
    target = tmp_path / "file"
    target.write_text("x")
    err = one_line_error(capsys, ["explain", str(video), "--model", str(ckpt), "--out", str(target)])
    assert err == f"error: --out {target} is a file; give a folder"


def test_explain_default_folders_of_two_videos_of_one_name_do_not_mix(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = clip(tmp_path / "x" / "a.mp4"), clip(tmp_path / "y" / "a.mp4")
    assert main(["explain", str(first), "--model", str(ckpt)]) == 0
    results = (tmp_path / "explain-a" / "explain.json").read_text()
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        err = one_line_error(capsys, ["explain", str(second), "--model", str(ckpt), *extra])
        assert "explain-a holds the explanation of another video named a.mp4" in err and "--out" in err
    assert (tmp_path / "explain-a" / "explain.json").read_text() == results
    assert main(["explain", str(first), "--model", str(ckpt), "--overwrite"]) == 0  # its own: replaced when asked
    other = clip(tmp_path / "b.mp4")
    assert main(["explain", str(other), "--model", str(ckpt), "--method", "relevance", "--class", "grey"]) == 2
    assert not (tmp_path / "explain-b").exists()  # a refused label makes no folder


# predict --timeline --------------------------------------------------------------------------------------
def test_timeline_refuses_to_replace_unless_overwrite(ckpt, tmp_path, capsys):
    video, out = clip(tmp_path / "long.mp4"), tmp_path / "tl"
    common = ["predict", str(ckpt), str(video), "--timeline", "--quiet", "--timeline-out"]
    assert main([*common, str(out)]) == 0
    csv = (out / "long.mp4.timeline.csv").read_bytes()
    capsys.readouterr()
    err = one_line_error(capsys, [*common, str(out), "--smooth", "3"])
    assert err == (f"error: {out / 'long.mp4.timeline.csv'} already exists (and 2 more of its outputs); pass "
                   "--overwrite to replace it, or give another --timeline-out")
    assert (out / "long.mp4.timeline.csv").read_bytes() == csv
    assert main([*common, str(out), "--overwrite"]) == 0
    target = tmp_path / "file"
    target.write_text("x")
    assert one_line_error(capsys, [*common, str(target)]) == f"error: --timeline-out {target} is a file; give a folder"
