"""Datasets as people lay them out: flat class folders (no split folders), hidden and AppleDouble files,
nested and empty class folders, camcorder/phone extensions, a single video where a dataset is expected."""

import json
import logging

import numpy as np
import pytest
from engine_fixtures import tiny_overrides, untrained_checkpoint

from vivit.cli import main
from vivit.data.check import dataset_files
from vivit.data.encode import write_video
from vivit.data.sources import find_samples, parse_split
from vivit.engine.config import load_config
from vivit.engine.predict import expand_videos
from vivit.errors import DataError, VivitError

# Spelled out here, not imported: the containers a dataset folder may hold besides mp4/webm/avi/mkv.
MORE_EXTENSIONS = (".ts", ".mts", ".m2ts", ".3gp", ".flv", ".wmv", ".ogv")


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # never opened: sources only list files
    return path


@pytest.fixture
def messy(tmp_path):
    """A flat class-per-folder root as copied from a Mac: dot-files, AppleDouble twins, a hidden folder,
    nested sub-folders, an empty class and every extra extension."""
    root = tmp_path / "messy"
    expected = [touch(root / "cat" / "a.mp4"), touch(root / "cat" / "b.MOV"),
                touch(root / "cat" / "day2" / "c.mp4"), touch(root / "cat" / "day2" / "deeper" / "d.avi")]
    expected += [touch(root / "dog" / f"clip{ext}") for ext in MORE_EXTENSIONS]
    for junk in ("cat/._a.mp4", "cat/.DS_Store", "cat/.hidden.mp4", "cat/.cache/e.mp4", "cat/notes.txt",
                 ".hidden_class/f.mp4", "._dog", "dog/._clip.ts"):
        touch(root / junk)
    (root / "eel").mkdir()
    return root, sorted(expected)


def test_hidden_files_are_neither_classes_nor_videos_and_nested_folders_are_read(messy, caplog):
    root, expected = messy
    with caplog.at_level(logging.WARNING, logger="vivit.data"):
        samples, classes = find_samples(root)
    assert classes == ["cat", "dog", "eel"]
    assert sorted(p for p, _ in samples) == expected
    assert {p.name: label for p, label in samples}["d.avi"] == 0 and {label for _, label in samples} == {0, 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(root / "eel") in warnings[0] and "no video files" in warnings[0]


def test_every_command_lists_the_same_videos(messy):
    root, expected = messy
    assert sorted(dataset_files(root)) == expected  # check-data
    videos, failed = expand_videos([root])  # predict on the folder
    assert videos == expected and failed == []
    videos, failed = expand_videos([root / "eel"])
    assert videos == [] and failed[0]["file"] == str(root / "eel") and "no video files" in failed[0]["reason"]


def test_videos_outside_class_folders_are_reported(tmp_path, caplog):
    touch(tmp_path / "cat" / "a.mp4")
    touch(tmp_path / "stray.mp4")
    with caplog.at_level(logging.WARNING, logger="vivit.data"):
        samples, _ = find_samples(tmp_path)
    assert [p.name for p, _ in samples] == ["a.mp4"]
    assert any("directly in" in r.getMessage() and "stray.mp4" in r.getMessage() for r in caplog.records)
    with pytest.raises(DataError, match="holds videos but no class folders"):
        find_samples(tmp_path / "cat")


def test_split_or_no_split(tmp_path):
    flat = tmp_path / "flat"
    touch(flat / "cat" / "a.mp4")
    assert [p.name for p, _ in find_samples(flat, None)[0]] == ["a.mp4"]
    with pytest.raises(DataError, match="has no split folders .* got split='val'; for no split use --split none"):
        find_samples(flat, "val")
    split = tmp_path / "split"
    touch(split / "train" / "cat" / "a.mp4")
    with pytest.raises(DataError, match=r"has split folders \['train'\]: choose one"):
        find_samples(split, None)
    assert parse_split("none") is None and parse_split("None") is None and parse_split("val") == "val"
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end\ncat,abc,0,10\n")
    assert len(find_samples(csv, None)[0]) == 1
    with pytest.raises(DataError, match="no 'split' column, got split='train'; for no split"):
        find_samples(csv, "train")


def test_no_split_in_a_config_is_null_or_none(tmp_path):
    config = load_config(None, ["data.train_split=null", "data.val_split=null"])
    assert config.data.train_split is None and config.data.val_split is None
    for spelling in ("none", "None", "''"):
        assert load_config(None, [f"data.train_split={spelling}"]).data.train_split is None
    toml = tmp_path / "flat.toml"  # TOML has no null
    toml.write_text('[data]\ntrain = "videos"\ntrain_split = "none"\nval_split = "none"\n')
    config = load_config(toml)
    assert config.data.train_split is None and config.data.val_split is None
    assert load_config(None, ["data.train_split=train"]).data.train_split == "train"


def test_a_file_that_is_not_a_dataset(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(bytes(range(256)) * 4)  # not UTF-8, as a real video
    with pytest.raises(DataError, match="clip.mp4 is a video file, not a dataset"):
        find_samples(video)
    binary = tmp_path / "list.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(VivitError, match="list.txt is not UTF-8 text"):
        find_samples(binary)


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    """A flat `root/<class>/*.mp4` dataset (no split folders) and a 2-step training run on it."""
    root = tmp_path_factory.mktemp("flat")
    rng = np.random.default_rng(0)
    for name, level in (("dark", 70), ("bright", 180)):
        for i in range(4):
            video = np.clip(level + rng.normal(0, 30, (8, 16, 16, 3)), 0, 255).astype(np.uint8)
            write_video(root / "data" / name / f"{i}.mp4", video, fps=8, options={"crf": "0"})
    touch(root / "data" / "dark" / "._0.mp4")  # AppleDouble twin: would be a skipped broken video
    overrides = tiny_overrides(root / "data", root / "run", **{"schedule.epochs": 1, "run.batch_size": 4})
    flat = ["data.train_split=none", f"data.val={root / 'data'}", "data.val_split=null"]  # validates on data.val
    assert main(["train", *overrides, *flat, "--quiet"]) == 0
    return root / "data", root / "run"


@pytest.mark.parametrize("command", [["check-data", "{video}"], ["eval", "{ckpt}", "{video}"],
                                     ["train", "data.train={video}", "run.out={out}"]])
def test_a_single_video_as_dataset_is_one_error_line(tmp_path, capsys, command):
    video = tmp_path / "clip.mp4"
    write_video(video, np.zeros((2, 16, 16, 3), np.uint8), fps=8)
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")
    argv = [a.format(video=video, ckpt=ckpt, out=tmp_path / "run") for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "clip.mp4 is a video file, not a dataset" in err
    assert len(err.strip().splitlines()) == 1


def test_flat_folder_trains_evaluates_and_checks(flat_run, capsys):
    data, run = flat_run
    capsys.readouterr()
    epoch = [line for line in (run / "metrics.csv").read_text().splitlines() if line.startswith("epoch,")]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert len(epoch) == 1 and epoch[0].split(",")[header.index("val_top1")] != ""  # validated on the flat folder
    assert main(["eval", str(run / "last.pt"), str(data), "--split", "none", "--views", "1x1", "--json", "--quiet",
                 "--workers", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 8 and report["skipped"] == 0 and report["split"] is None
    assert main(["check-data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checked": 8, "failed": []}
    assert main(["eval", str(run / "last.pt"), str(data), "--quiet"]) == 2  # default --split val: says what to do
    assert "got split='val'; for no split use --split none" in capsys.readouterr().err
