"""`vivit train -> eval -> predict -> export` through the CLI on tiny generated videos, and bad input."""

import json

import pytest

from engine_fixtures import CLASSES, tiny_overrides, write_brightness_videos
from vivit.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_brightness_videos(root / "videos")
    config = root / "tiny.yaml"
    config.write_text("schedule:\n  epochs: 4\n")
    assert main(["train", str(config), *tiny_overrides(data, root / "run"), "--quiet"]) == 0
    return data, root / "run"


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_multi_view_report(trained, capsys, tmp_path):
    data, run = trained
    r = run_json(capsys, ["eval", str(run / "best.pt"), str(data), "--views", "2x3", "--json", "--quiet",
                          "--workers", "0", "--out", str(tmp_path)])
    assert r["views"] == "2x3" and r["num_samples"] == 8 and r["classes"] == list(CLASSES)
    assert r["top1"] >= 0.875 and r["top5"] is None and len(r["per_class_accuracy"]) == 2  # 2 classes: no top-5
    assert sum(map(sum, r["confusion"])) == 8
    assert json.loads((tmp_path / "report.json").read_text())["top1"] == r["top1"]
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    soft = run_json(capsys, ["eval", str(run / "best.pt"), str(data), "--views", "1x1", "--aggregate", "softmax",
                             "--json", "--quiet", "--workers", "0"])
    assert soft["aggregation"] == "softmax" and soft["top1"] >= 0.75
    folder = run_json(capsys, ["eval", str(run / "best"), str(data), "--views", "2x3", "--json", "--quiet",
                               "--workers", "0"])  # the best weights in the pretrained format give the same report
    assert folder["top1"] == r["top1"] and folder["confusion"] == r["confusion"] and folder["classes"] == r["classes"]
    assert main(["eval", str(run / "best.pt"), str(data), "--views", "1x1", "--quiet", "--workers", "0"]) == 0
    table = capsys.readouterr().out
    assert "top-1" in table and "top-5" not in table


def test_predict_files_and_folders(trained, capsys, tmp_path):
    data, run = trained
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    r = run_json(capsys, ["predict", str(run / "last.pt"), str(data / "val"), str(tmp_path / "broken.mp4"),
                          "--top-k", "2", "--json", "--quiet"])
    assert len(r["results"]) == 8 and [f["file"] for f in r["failed"]] == [str(tmp_path / "broken.mp4")]
    correct = 0
    for item in r["results"]:
        labels = [p["label"] for p in item["predictions"]]
        assert sorted(labels) == sorted(CLASSES)
        assert abs(sum(p["probability"] for p in item["predictions"]) - 1) < 1e-4
        correct += f"/{labels[0]}/" in item["file"]
    assert correct >= 7
    assert main(["predict", str(run / "last.pt"), str(data / "val" / "dark" / "000.mp4"), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "000.mp4" in table and "dark" in table


def test_best_folder_keeps_the_training_preprocessing(trained):
    from vivit.engine.checkpoint import load_model

    _, run = trained
    loaded = load_model(run / "best")
    assert loaded.train_config["data"]["frame_stride"] == 1  # the folder alone, not the defaults (stride 2)
    assert not (run / "best.tmp").exists() and not (run / "best.old").exists()


def test_predict_when_every_video_is_unreadable(trained, capsys, tmp_path):
    _, run = trained
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mp4").write_bytes(b"not a video")
    assert main(["predict", str(run / "last.pt"), str(tmp_path), "--json", "--quiet"]) == 1
    r = json.loads(capsys.readouterr().out)
    assert r["results"] == []
    assert sorted(f["file"] for f in r["failed"]) == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]


def test_export_onnx_matches_pytorch(trained, capsys, tmp_path):
    _, run = trained
    r = run_json(capsys, ["export", str(run / "last.pt"), str(tmp_path / "m.onnx"), "--format", "onnx", "--json"])
    assert (tmp_path / "m.onnx").stat().st_size > 10_000
    assert r["max_abs_diff"] < 1e-4 and r["input_shape"] == [1, 3, 8, 16, 16]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "optim.lrr=0.1"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
        (["train", "run.batch_size=many"], "run.batch_size must be int, got 'many'"),
        (["train", "data.train=/nonexistent/videos"], "/nonexistent/videos"),
        (["eval", "/nonexistent/ckpt.pt", "/tmp"], "checkpoint not found: /nonexistent/ckpt.pt"),
        (["predict", "/nonexistent/ckpt.pt", "/nonexistent/video.mp4"], "/nonexistent"),
    ],
)
def test_bad_input_is_one_error_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", [["--top-k", "0"], ["--batch-size", "-1"], ["--top-k", "two"]])
def test_bad_counts_are_refused_by_the_parser(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "ckpt.pt", "video.mp4", *flag])
    assert e.value.code == 2 and "expected a positive integer" in capsys.readouterr().err


def test_corrupt_weights_are_one_error_line(trained, capsys, tmp_path):
    import shutil

    _, run = trained
    shutil.copytree(run / "best", tmp_path / "best")
    weights = tmp_path / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    assert main(["predict", str(tmp_path / "best"), "video.mp4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.safetensors" in err and "Traceback" not in err


def test_checkpoint_of_another_architecture(trained, capsys, tmp_path):
    data, run = trained
    wider = {"model.overrides": "{width: 64, depth: 1, num_heads: 2, mlp_dim: 64, tubelet: [2, 8, 8]}"}
    argv = ["train", *tiny_overrides(data, tmp_path, **wider), "--resume", str(run / "last.pt"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot resume") and "another architecture" in err and "Traceback" not in err
    assert main(["--debug", *argv]) == 2
    assert "Traceback" in capsys.readouterr().err
