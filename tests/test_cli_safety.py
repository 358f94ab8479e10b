"""Files and input safety through the command line: vivit never deletes what it did not write
(save_pretrained, convert, export), bad values are one `error:` line with exit 2, a closed pipe is quiet,
and eval runs at the training precision."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_model
from engine_fixtures import write_brightness_videos
from vivit.cli import main
from vivit.engine.checkpoint import save_checkpoint
from vivit.errors import VivitError

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err, captured.out


# Never delete what vivit did not write ------------------------------------------------------------
def test_save_pretrained_refuses_a_foreign_folder(tmp_path):
    model = tiny_model("st")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(VivitError, match="holds notes.txt: refusing to replace it"):
        model.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
    hf = tmp_path / "hf"  # another library's folder with the same file names
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(VivitError, match="is not a vivit model folder"):
        model.save_pretrained(hf)
    assert (hf / "config.json").read_text() == "{}"
    model.save_pretrained(tmp_path / "ours", labels=["a", "b", "c"])
    model.save_pretrained(tmp_path / "ours")  # a vivit model folder is replaced whole
    assert not (tmp_path / "ours" / "labels.txt").exists()
    model.save_pretrained(folder, overwrite=True)
    assert not (folder / "notes.txt").exists() and (folder / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "mine", "ours"]  # no temporary folders left


def test_save_pretrained_keeps_folders_named_like_its_temporaries(tmp_path):
    (tmp_path / "m.tmp").mkdir()
    (tmp_path / "m.tmp" / "data.txt").write_text("user data")
    tiny_model("st").save_pretrained(tmp_path / "m")
    assert (tmp_path / "m.tmp" / "data.txt").read_text() == "user data"


@pytest.mark.parametrize("dst", [".", "sub", ".."])
def test_convert_refuses_a_dst_overlapping_src(tmp_path, capsys, dst):
    src = tmp_path / "download"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "model.safetensors").write_bytes(b"weights")
    err, _ = one_line_error(capsys, ["convert", "--from", "hf", str(src), str(src / dst), "--overwrite"])
    assert "overlaps SRC" in err
    assert (src / "model.safetensors").read_bytes() == b"weights"


def test_convert_refuses_a_foreign_dst(tmp_path, capsys):
    (tmp_path / "vit.safetensors").write_bytes(b"never read: DST is checked first")
    dst = tmp_path / "photos"
    dst.mkdir()
    (dst / "holiday.jpg").write_bytes(b"jpeg")
    argv = ["convert", "--from", "image-vit", str(tmp_path / "vit.safetensors"), str(dst)]
    err, _ = one_line_error(capsys, argv)
    assert "holds holiday.jpg" in err and "--overwrite" in err
    assert (dst / "holiday.jpg").read_bytes() == b"jpeg"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_model("st", num_classes=2)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.config.to_dict(),
                           "classes": ["bright", "dark"]})
    return path


def test_export_never_replaces_a_file_unasked(checkpoint, tmp_path, capsys):
    before = checkpoint.read_bytes()
    err, _ = one_line_error(capsys, ["export", str(checkpoint), str(checkpoint), "--overwrite"])
    assert "would overwrite the checkpoint" in err and checkpoint.read_bytes() == before
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"someone's model")
    err, _ = one_line_error(capsys, ["export", str(checkpoint), str(existing)])
    assert "already exists; pass --overwrite" in err and existing.read_bytes() == b"someone's model"
    err, _ = one_line_error(capsys, ["export", str(checkpoint), str(tmp_path)])
    assert "is a folder" in err
    assert main(["export", str(checkpoint), str(existing), "--overwrite"]) == 0
    assert existing.stat().st_size > 10_000
    folder = tmp_path / "pretrained"
    tiny_model("st", num_classes=2).save_pretrained(folder)
    weights = (folder / "model.safetensors").read_bytes()
    err, _ = one_line_error(capsys, ["export", str(folder), str(folder / "model.safetensors"), "--overwrite"])
    assert "would overwrite the checkpoint" in err and (folder / "model.safetensors").read_bytes() == weights


# Bad values: one error line, exit 2 ---------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    (b"", "is empty (0 bytes)"),
    (b"epoch 1 loss 0.5\n", "not a PyTorch file"),
    (None, "not a PyTorch file"),  # an mp4
])
def test_a_file_that_is_not_a_checkpoint(tmp_path, capsys, content, message):
    path = tmp_path / "model.pt"
    if content is None:
        from vivit.data.encode import write_video

        path = tmp_path / "clip.mp4"
        write_video(path, np.zeros((4, 16, 16, 3), np.uint8), fps=8)
    else:
        path.write_bytes(content)
    weights = tmp_path / "weights.pt"  # the same file as image-ViT weights (read_state_dict)
    weights.write_bytes(path.read_bytes())
    for argv in (["eval", str(path), str(tmp_path)], ["predict", str(path), str(tmp_path)],
                 ["export", str(path), str(tmp_path / "m.onnx")],
                 ["convert", "--from", "image-vit", str(weights), str(tmp_path / "converted")]):
        err, _ = one_line_error(capsys, argv)
        assert message in err and "weights_only=False" not in err and "trusted source" not in err


def test_a_pickle_with_python_objects_is_refused_without_torchs_advice(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"format": "vivit-train-checkpoint", "obj": Path("x")}, path)
    err, _ = one_line_error(capsys, ["eval", str(path), str(tmp_path)])
    assert "Python objects" in err and "weights_only=False" not in err


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_negative_workers_is_refused_by_the_parser(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "ckpt.pt", "data", "--workers", "-1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "expected an integer >= 0, got -1" in err and "Traceback" not in err


def test_unsupported_opset_is_one_line(checkpoint, tmp_path, capsys):
    err, out = one_line_error(capsys, ["export", str(checkpoint), str(tmp_path / "m.onnx"), "--opset", "5"])
    assert "--opset 5 is not supported; choose 14..20" in err and out == ""  # no graph dump
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_profile_on_cuda_without_cuda(capsys):
    err, _ = one_line_error(capsys, ["profile", "vivit-ti-16x2-st", "--frames", "8", "--size", "32", "--device", "cuda"])
    assert "no CUDA device is available" in err


def test_broken_pipe_is_quiet():
    """`vivit ... | head`: the reader goes away; no error line, no 'Exception ignored' at exit."""
    proc = subprocess.Popen([sys.executable, "-m", "vivit.cli", "profile", "--list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # long before the child has imported torch and printed
    err = proc.stderr.read().decode()
    assert proc.wait() == 1 and err == "", err


def test_negative_seed_is_refused(capsys, tmp_path):
    err, _ = one_line_error(capsys, ["train", "run.seed=-1", f"run.out={tmp_path}"])
    assert "run.seed must be >= 0, got -1" in err


# Precision -------------------------------------------------------------------------------------------
def test_eval_runs_at_the_training_precision(checkpoint, tmp_path, capsys, monkeypatch):
    from vivit.engine import build, evaluate

    data = write_brightness_videos(tmp_path, per_class=0, val_per_class=1)
    used, real = [], build.autocast
    monkeypatch.setattr(evaluate, "autocast", lambda device, precision: used.append(precision) or real(device, precision))
    monkeypatch.setattr(evaluate, "inference_precision", lambda config, device: "bf16")  # as on CUDA for an auto run
    argv = ["eval", str(checkpoint), str(data), "--views", "1x1", "--workers", "0", "--quiet", "--json"]
    assert main(argv) == 0 and set(used) == {"bf16"}
    used.clear()
    assert main([*argv, "--precision", "fp32"]) == 0 and set(used) == {"fp32"}
    capsys.readouterr()
