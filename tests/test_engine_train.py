"""Training end to end on tiny generated videos: learning, checkpoints, exact resume (also after SIGKILL)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine_fixtures import tiny_overrides, write_brightness_videos
from vivit.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vivit.engine.config import load_config
from vivit.engine.train import train
from vivit.errors import ConfigError, VivitError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_brightness_videos(tmp_path_factory.mktemp("videos"))


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learns_the_easy_task_and_writes_the_run(data, tmp_path):
    out = tmp_path / "run"
    summary = train(load_config(None, tiny_overrides(data, out)), quiet=True)
    assert summary["final"]["top1"] >= 0.875  # 8 validation videos, chance 0.5
    for name in ("last.pt", "best.pt", "config.yaml", "labels.txt", "metrics.csv", "training_curves.png"):
        assert (out / name).is_file(), name
    assert load_config(out / "config.yaml") == load_config(None, tiny_overrides(data, out))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 4 and ckpt["step"] == 12 and ckpt["classes"] == ["bright", "dark"]
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "model_config"}
    assert not list(out.glob("*.tmp"))


def test_resume_reaches_bitwise_the_same_weights(data, tmp_path):
    extra = {"model.drop_path": 0.1, "optim.mixup_alpha": 0.2, "optim.label_smoothing": 0.1, "run.grad_accum": 2,
             "data.augment": "{flip: 0.5}", "model.grad_checkpointing": "true", "optim.weight_decay": 0.05}
    full = train(load_config(None, tiny_overrides(data, tmp_path / "full", **extra)), quiet=True)
    cfg = load_config(None, tiny_overrides(data, tmp_path / "cut", **extra))
    assert train(cfg, quiet=True, stop_after_steps=5)["stopped"]  # mid-epoch (3 steps per epoch)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 5
    resumed = train(cfg, resume=True, quiet=True)
    assert resumed["step"] == full["step"] == 12
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert states_equal(a["model"], b["model"])
    assert states_equal(a["optimizer"]["state"][0], b["optimizer"]["state"][0])


def test_sigkill_then_resume_equals_uninterrupted(data, tmp_path):
    # 20 epochs (60 steps): long enough that a loaded machine cannot finish the run between a poll and the kill
    epochs, steps = 20, 60
    overrides = tiny_overrides(data, tmp_path / "killed", **{"schedule.epochs": epochs, "run.save_every_steps": 1})
    command = [sys.executable, "-m", "vivit.cli", "train", *overrides, "--quiet"]
    proc = subprocess.Popen(command + ["--resume"])
    last = tmp_path / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (last.is_file() and load_checkpoint(last)["step"] >= 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["step"]
    assert 4 <= killed_at < steps, "the run must be killed part-way"
    subprocess.run(command + ["--resume"], check=True)
    full = tiny_overrides(data, tmp_path / "full", **{"schedule.epochs": epochs})
    train(load_config(None, full), quiet=True)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(last)
    assert b["step"] == steps and states_equal(a["model"], b["model"])


def test_checkpoint_is_weights_only_loadable_and_restores_rng(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"rng": rng_state(), "x": torch.arange(3)})
    expected = torch.rand(4)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(4), expected)
    torch.load(path, weights_only=True)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(VivitError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_resume_and_init_refuse_another_architecture(data, tmp_path):
    train(load_config(None, tiny_overrides(data, tmp_path / "a", **{"schedule.max_steps": 1})), quiet=True)
    wider = {"model.overrides": "{width: 64, depth: 1, num_heads: 2, mlp_dim: 64, tubelet: [2, 8, 8]}"}
    with pytest.raises(ConfigError, match="another architecture .*width: checkpoint 32 vs config 64"):
        train(load_config(None, tiny_overrides(data, tmp_path / "b", **wider)), resume=tmp_path / "a" / "last.pt", quiet=True)
    init = {**wider, "model.init": str(tmp_path / "a" / "last.pt")}
    with pytest.raises(ConfigError, match="another architecture"):
        train(load_config(None, tiny_overrides(data, tmp_path / "c", **init)), quiet=True)


def test_resume_refuses_another_batch_size(data, tmp_path):
    cfg = load_config(None, tiny_overrides(data, tmp_path))
    assert train(cfg, quiet=True, stop_after_steps=2)["stopped"]
    bigger = load_config(None, tiny_overrides(data, tmp_path, **{"run.batch_size": 4}))
    with pytest.raises(ConfigError, match="run.batch_size: checkpoint 8 vs now 4"):
        train(bigger, resume=True, quiet=True)


def test_init_from_a_checkpoint_with_another_head(data, tmp_path):
    train(load_config(None, tiny_overrides(data, tmp_path / "a", **{"schedule.max_steps": 2})), quiet=True)
    source = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    from vivit.engine.build import load_matching
    from vivit.model import create_model

    model = create_model("vivit-ti-16x2-st", num_classes=5, num_frames=8, image_size=16, width=32, depth=1,
                         num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    load_matching(model, source, "a/last.pt")
    assert torch.equal(model.encoder.pos_embed, source["encoder.pos_embed"])
    assert model.head.weight.shape == (5, 32)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # fp16 skips inf steps
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_on_cpu(data, tmp_path, precision):
    overrides = tiny_overrides(data, tmp_path, **{"schedule.max_steps": 2, "run.precision": precision,
                                                  "run.deterministic": "false", "data.val_split": "null"})
    summary = train(load_config(None, overrides), quiet=True)
    assert summary["step"] == 2 and summary["final"] is None
    assert bool(load_checkpoint(tmp_path / "last.pt")["scaler"]) == (precision == "fp16")  # a grad scaler for fp16 only


def test_init_from_image_vit_weights(data, tmp_path):
    from safetensors.torch import save_file
    from test_weights_image_vit import timm_layout

    from vivit.engine.build import build_model

    image = timm_layout()  # width 32, depth 2, 4 heads, MLP 64, 8x8 patches
    save_file(image, str(tmp_path / "vit.safetensors"))
    overrides = tiny_overrides(data, tmp_path, **{
        "model.overrides": "{width: 32, depth: 2, num_heads: 4, mlp_dim: 64, tubelet: [2, 8, 8]}",
        "model.init": str(tmp_path / "vit.safetensors"), "model.tubelet_init": "central_frame"})
    cfg = load_config(None, overrides)
    model = build_model(cfg.model, cfg.data, num_classes=2)
    kernel = model.tokenizer.proj.weight  # (D, C, t, h, w); Eq. 9: the image kernel on the central frame only
    assert torch.equal(kernel[:, :, 1], image["patch_embed.proj.weight"]) and not kernel[:, :, 0].any()
    assert torch.equal(model.encoder.blocks[1].mlp.fc1.weight, image["blocks.1.mlp.fc1.weight"])
    assert train(cfg, quiet=True)["final"]["top1"] >= 0.75
