"""`vivit predict`: failed inputs are listed with a reason while the others are predicted, and the model
runs at the training run's precision on CUDA (autocast requested as `vivit.engine.build.autocast`)."""

import json

import numpy as np
import pytest
import torch
from engine_fixtures import CLASSES, untrained_checkpoint

import vivit.engine.evaluate as evaluate
from vivit.cli import main
from vivit.data.encode import write_video


@pytest.fixture
def videos(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.mp4", "sub/b.mp4"):
        paths.append(tmp_path / "clips" / name)
        write_video(paths[-1], rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), fps=8)
    return paths


def predict_json(capsys, argv, status=0):
    assert main(["predict", *argv, "--json", "--quiet"]) == status
    return json.loads(capsys.readouterr().out)


def test_missing_and_broken_inputs_are_listed_and_the_others_predicted(videos, tmp_path, capsys):
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    (tmp_path / "empty").mkdir()
    missing = tmp_path / "missing.mp4"
    r = predict_json(capsys, [str(ckpt), str(missing), str(videos[0]), str(broken), str(tmp_path / "empty"),
                              str(videos[1])])
    assert [item["file"] for item in r["results"]] == [str(videos[0]), str(videos[1])]
    assert all(len(item["predictions"]) == len(CLASSES) for item in r["results"])
    failed = {item["file"]: item["reason"] for item in r["failed"]}
    assert all(set(item) == {"file", "reason"} for item in r["failed"])  # as check-data's "bad" entries
    assert list(failed) == [str(missing), str(tmp_path / "empty"), str(broken)]
    assert failed[str(missing)] == "not found" and "no video files" in failed[str(tmp_path / "empty")]
    assert failed[str(broken)] and failed[str(broken)] != "its clips could not be decoded"  # the decoder's reason
    assert main(["predict", str(ckpt), str(missing), str(videos[0]), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "missing.mp4  (skipped: not found)" in table and str(videos[0]) in table
    r = predict_json(capsys, [str(ckpt), str(missing)], status=1)  # nothing left to predict
    assert r["results"] == [] and r["failed"] == [{"file": str(missing), "reason": "not found"}]


@pytest.fixture
def autocasts(monkeypatch):
    """The precisions `collect_scores` asks `vivit.engine.build.autocast` for."""
    seen = []
    real = evaluate.autocast

    def recording(device, precision):
        seen.append(precision)
        return real(device, precision)

    monkeypatch.setattr(evaluate, "autocast", recording)
    return seen


def test_the_training_run_precision_on_cuda(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert evaluate.inference_precision({"run": {"precision": "fp16"}}, cuda) == "fp16"
    assert evaluate.inference_precision({"run": {"precision": "fp16"}}, cpu) == "fp32"  # no autocast on the CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert evaluate.inference_precision({"run": {"precision": "auto"}}, cuda) == "bf16"
    assert evaluate.inference_precision({}, cuda) == "bf16"  # a folder without train_config.yaml: the default auto
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert evaluate.inference_precision({"run": {"precision": "auto"}}, cuda) == "fp32"


def test_predict_runs_at_the_checkpoint_precision(videos, tmp_path, capsys, autocasts, monkeypatch):
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt", config={"run": {"precision": "bf16"}})
    fp32 = predict_json(capsys, [str(ckpt), str(videos[0])])
    assert autocasts == ["fp32"]  # CPU: fp32 whatever the training run used
    asked, real = [], evaluate.inference_precision

    def as_on_cuda(train_config, device):  # the run's config, resolved as on a CUDA device
        asked.append(train_config)
        return real(train_config, torch.device("cuda"))

    monkeypatch.setattr(evaluate, "inference_precision", as_on_cuda)
    bf16 = predict_json(capsys, [str(ckpt), str(videos[0])])
    assert asked == [{"run": {"precision": "bf16"}}] and autocasts == ["fp32", "bf16"]
    probs = [[p["probability"] for p in r["results"][0]["predictions"]] for r in (fp32, bf16)]
    assert np.allclose(probs[0], probs[1], atol=0.02) and abs(sum(probs[1]) - 1) < 1e-3  # bf16 ran on the CPU
    predict_json(capsys, [str(ckpt), str(videos[0]), "--precision", "bf16"])  # the flag, on the CPU too
    assert autocasts == ["fp32", "bf16", "bf16"] and len(asked) == 1
