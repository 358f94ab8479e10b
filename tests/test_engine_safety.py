"""Training safety: non-finite steps, the logged learning rate and gradient norm, run folders and their
lock, mapping overrides, the demo's report, and the GPU paths of training checked on the CPU."""

import csv
import importlib
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_model
from engine_fixtures import tiny_overrides, write_brightness_videos
from vivit.cli import main
from vivit.engine.checkpoint import load_checkpoint, set_rng_state
from vivit.engine.config import OptimSection, load_config
from vivit.engine.optim import build_optimizer
from vivit.engine.schedule import build_scheduler
from vivit.engine.train import train, train_step
from vivit.errors import ConfigError, VivitError

ROOT = Path(__file__).resolve().parents[1]
LR = 0.003  # tiny_overrides' optim.lr (no batch scaling)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_brightness_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One finished tiny run (cosine schedule, a row per step), trained with CUBLAS_WORKSPACE_CONFIG unset."""
    out = tmp_path_factory.mktemp("runs") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
        train(load_config(None, tiny_overrides(data, out, **{"run.log_every": 1})), quiet=True)
        workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    return out, workspace


def metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# Non-finite loss ----------------------------------------------------------------------------------
def _step(model, videos, precision="fp32", scaler=None):
    optim = OptimSection(name="sgd", lr=0.1, base_batch_size=None, clip_grad_norm=1.0)
    optimizer = build_optimizer(model, optim, batch_size=2)
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=0)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    return train_step(model, optimizer, scheduler, scaler, [(videos, torch.tensor([0, 1]))], optim=optim,
                      num_classes=3, device=torch.device("cpu"), precision=precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_nonfinite_step_changes_no_weight(precision):
    model = tiny_model("st")
    torch.nn.init.normal_(model.head.weight, std=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    videos = torch.randn(2, 3, 4, 16, 16)
    videos[0, 0, 0, 0, 0] = math.nan
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, enabled=precision == "fp16")
    result = _step(model, videos, precision, scaler)
    assert not result.applied and not math.isfinite(result.grad_norm)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if precision == "fp16":
        assert scaler.get_scale() == 2.0**7  # GradScaler skipped the step and lowered its scale
    finite = _step(model, torch.randn(2, 3, 4, 16, 16))
    assert finite.applied and 0 < finite.grad_norm < math.inf


def test_training_stops_after_consecutive_nonfinite_steps(data, tmp_path, monkeypatch):
    train_module = importlib.import_module("vivit.engine.train")  # `vivit.engine.train` is also the function

    calls = []
    real = train_module.soft_cross_entropy

    def nan_from_step_4(logits, targets):  # one call per step (no accumulation)
        calls.append(1)
        losses = real(logits, targets)
        return losses * math.nan if len(calls) >= 4 else losses

    monkeypatch.setattr(train_module, "soft_cross_entropy", nan_from_step_4)
    out = tmp_path / "run"
    config = load_config(None, tiny_overrides(data, out, **{"run.log_every": 1, "run.max_nonfinite_steps": 3}))
    with pytest.raises(VivitError, match=r"stopped at step 6: .* 3 consecutive steps .*last finite loss was [0-9.]+ at step 3"):
        train(config, quiet=True)
    assert load_checkpoint(out / "last.pt")["step"] == 3  # the end of epoch 1: kept, not overwritten
    rows = [r for r in metrics(out) if r["kind"] == "step"]
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert all(0 < float(r["grad_norm"]) < math.inf for r in rows[:3])
    assert all(math.isnan(float(r["grad_norm"])) for r in rows[3:])
    assert not (out / "train.lock").exists()


def test_a_model_with_nonfinite_logits_is_never_best(data, tmp_path):
    # SGD without clipping at lr 3e38: the head's weights reach ~1e38 after one step, every logit is +-inf
    # (yet its arg-max is right for every validation video), every later step is NaN and skipped
    out = tmp_path / "run"
    config = load_config(None, tiny_overrides(data, out, **{"optim.name": "sgd", "optim.lr": "3e38",
                                                            "optim.clip_grad_norm": "null", "run.max_nonfinite_steps": 100,
                                                            "schedule.epochs": 1}))
    summary = train(config, quiet=True)
    assert summary["best_top1"] is None and summary["final"]["top1"] == 1.0
    assert not (out / "best.pt").exists() and not (out / "best").exists()


def test_nonfinite_weights_are_never_saved(data, tmp_path, monkeypatch):
    train_module = importlib.import_module("vivit.engine.train")
    real = train_module.train_step

    def poison(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        with torch.no_grad():
            model.head.bias.fill_(math.inf)
        return result

    monkeypatch.setattr(train_module, "train_step", poison)
    out = tmp_path / "run"
    with pytest.raises(VivitError, match=r"weights are NaN/inf at step 3 \(1 tensors, first head.bias\)"):
        train(load_config(None, tiny_overrides(data, out)), quiet=True)
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_max_nonfinite_steps_must_be_positive():
    with pytest.raises(ConfigError, match="run.max_nonfinite_steps must be >= 1"):
        load_config(None, ["run.max_nonfinite_steps=0"])


# Logged learning rate and gradient norm -----------------------------------------------------------
def test_logged_lr_is_the_one_the_step_used(run):
    out, _ = run
    rows = metrics(out)
    steps = [r for r in rows if r["kind"] == "step"]
    assert len(steps) == 12  # 4 epochs x 3 steps; warmup round(0.5 x 3) = 2 steps, then cosine to 0
    expected = [LR * (i + 1) / 2 if i < 2 else LR * 0.5 * (1 + math.cos(math.pi * (i - 2) / 10)) for i in range(12)]
    assert np.allclose([float(r["lr"]) for r in steps], expected, rtol=1e-6)
    last_epoch = [r for r in rows if r["kind"] == "epoch"][-1]
    assert float(last_epoch["lr"]) == pytest.approx(expected[-1]) and float(last_epoch["lr"]) > 0
    assert all(0 < float(r["grad_norm"]) < math.inf for r in steps)


# Run folder and lock ------------------------------------------------------------------------------
def test_a_folder_holding_a_run_is_refused(run, data, capsys):
    out, _ = run
    best = (out / "best.pt").read_bytes()
    assert main(["train", *tiny_overrides(data, out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "run.overwrite=true" in err
    assert (out / "best.pt").read_bytes() == best and not (out / "train.lock").exists()


def test_resume_without_last_pt_does_not_start_over_a_run(run, data, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(run[0], out)
    (out / "last.pt").unlink()
    with pytest.raises(ConfigError, match="holds a run .* but no last.pt to continue from"):
        train(load_config(None, tiny_overrides(data, out)), resume=True, quiet=True)
    assert (out / "best.pt").is_file()


def test_overwrite_replaces_the_run(data, tmp_path):
    out = tmp_path / "run"
    train(load_config(None, tiny_overrides(data, out, **{"schedule.max_steps": 1})), quiet=True)
    assert (out / "best.pt").is_file()
    (out / "events.out.tfevents.1.host").write_text("old")
    again = tiny_overrides(data, out, **{"schedule.max_steps": 1, "run.overwrite": "true", "data.val_split": "null"})
    train(load_config(None, again), quiet=True)
    assert not (out / "best.pt").exists() and not (out / "best").exists()  # no validation: the old best is gone
    assert load_checkpoint(out / "last.pt")["config"]["data"]["val_split"] is None
    assert not (out / "events.out.tfevents.1.host").exists()


def test_a_live_lock_refuses_and_a_stale_one_is_taken_over(data, tmp_path):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    lock = out / "train.lock"
    lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # a live process holds it
    config = load_config(None, tiny_overrides(data, out, **{"schedule.max_steps": 1}))
    with pytest.raises(VivitError, match=f"in use by another training \\(pid {os.getpid()} on"):
        train(config, quiet=True)
    assert lock.is_file() and not (out / "metrics.csv").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{socket.gethostname()} {dead.pid}\n")  # left by a killed training
    assert train(config, quiet=True)["step"] == 1
    assert not lock.exists()


def test_sigterm_saves_the_run_and_removes_the_lock(data, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(data, out, **{"schedule.epochs": 50})
    proc = subprocess.Popen([sys.executable, "-m", "vivit.cli", "train", *overrides, "--quiet"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "metrics.csv").exists():
        time.sleep(0.05)
    assert (out / "train.lock").is_file()
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and not (out / "train.lock").exists()
    step = load_checkpoint(out / "last.pt")["step"]
    assert f"SIGTERM: stopped at step {step}; {out / 'last.pt'} holds it, continue with --resume" in err


def _weights(out):
    return load_checkpoint(out / "last.pt")["model"]


def test_a_sigterm_during_a_step_lets_it_finish_and_resume_continues_exactly(data, tmp_path, monkeypatch, capsys):
    """A preemption in the middle of step 2 (here: during its forward and backward) waits for the step's end,
    saves last.pt at step 2 and exits 143; `--resume` then gives the weights of an uninterrupted run."""
    train_module = importlib.import_module("vivit.engine.train")
    real, steps = train_module.train_step, []

    def sigterm_in_step_2(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the step
        return real(*args, **kwargs)

    plain = tiny_overrides(data, tmp_path / "plain", **{"schedule.max_steps": 5, "data.val_split": "null"})
    train(load_config(None, plain), quiet=True)
    out = tmp_path / "run"
    config = load_config(None, tiny_overrides(data, out, **{"schedule.max_steps": 5, "data.val_split": "null"}))
    with monkeypatch.context() as mp:
        mp.setattr(train_module, "train_step", sigterm_in_step_2)
        with pytest.raises(SystemExit) as exit_:
            train(config, quiet=True)
    assert exit_.value.code == 128 + signal.SIGTERM and steps == [1, 1]
    assert load_checkpoint(out / "last.pt")["step"] == 2 and not (out / "train.lock").exists()
    assert "SIGTERM: stopped at step 2" in capsys.readouterr().err
    assert train(config, resume=True, quiet=True)["step"] == 5
    for name, tensor in _weights(tmp_path / "plain").items():
        assert torch.equal(tensor, _weights(out)[name]), name


@pytest.mark.parametrize("where, call, epoch", [("evaluate_loader", 2, 2), ("save_checkpoint", 1, 1)])
def test_a_sigterm_at_an_epochs_end_is_finished_first_when_resumed(data, tmp_path, monkeypatch, capsys, where, call, epoch):
    """Stopped while validating epoch 2 of 4, or while epoch 1's last.pt is written: last.pt keeps that epoch's end
    as pending (with the random state its validation starts from); the resumed run does it first, so its metrics
    rows, best model and final weights equal an uninterrupted run's (the epoch's row used to be lost, its model
    never considered as best)."""
    train_module = importlib.import_module("vivit.engine.train")
    real, calls = getattr(train_module, where), []

    def sigterm_at_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)  # validation: raises here; the epoch's last.pt: deferred
        return real(*args, **kwargs)

    def epoch_rows(out):
        rows = metrics(out) if (out / "metrics.csv").exists() else []  # written from the first row on
        return [(r["epoch"], r["step"], r["loss"], r["val_top1"]) for r in rows if r["kind"] == "epoch"]

    plain = tmp_path / "plain"
    train(load_config(None, tiny_overrides(data, plain)), quiet=True)
    out = tmp_path / "run"
    config = load_config(None, tiny_overrides(data, out))
    with monkeypatch.context() as mp:
        mp.setattr(train_module, where, sigterm_at_call)
        with pytest.raises(SystemExit):
            train(config, quiet=True)
    saved = load_checkpoint(out / "last.pt")
    assert saved["epoch"] == epoch and saved["pending_epoch"]["val_top1"] is None
    assert len(epoch_rows(out)) == epoch - 1
    capsys.readouterr()
    summary = train(config, resume=True)
    assert f"finishing epoch {epoch}: its validation was cut short" in capsys.readouterr().out
    assert epoch_rows(out) == epoch_rows(plain) and len(epoch_rows(out)) == 4
    assert summary["best_top1"] == load_checkpoint(plain / "best.pt")["best_top1"]
    for name, tensor in _weights(plain).items():
        assert torch.equal(tensor, _weights(out)[name]), name
    assert load_checkpoint(out / "best.pt")["step"] == load_checkpoint(plain / "best.pt")["step"]


def test_a_sigterm_whose_exception_is_lost_still_ends_training(data, tmp_path, monkeypatch):
    """PyAV drops an exception raised inside its own code (the signal handler's SystemExit during `err_check`
    while demuxing): the recorded signal ends the run at the next batch, saved, with the lock removed."""
    from vivit.data import datasets

    out, reads = tmp_path / "run", []
    real = datasets.read_clip_yuv

    def read_then_lost_sigterm(*args, **kwargs):
        reads.append(1)
        if len(reads) == 12:  # in step 2's batch
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)  # the handler runs here
            except SystemExit:
                pass  # lost, as inside PyAV
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "read_clip_yuv", read_then_lost_sigterm)
    with pytest.raises(SystemExit) as exit_:
        train(load_config(None, tiny_overrides(data, out, **{"schedule.epochs": 50})), quiet=True)
    assert exit_.value.code == 128 + signal.SIGTERM and len(reads) == 16  # the batch is read, not trained on
    assert load_checkpoint(out / "last.pt")["step"] == 1
    assert not (out / "train.lock").exists() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_lost_after_the_last_batch_ends_the_block(tmp_path):
    from vivit.engine.runfolder import run_lock

    with pytest.raises(SystemExit) as exit_:
        with run_lock(tmp_path):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            except SystemExit:
                pass
    assert exit_.value.code == 128 + signal.SIGTERM and not (tmp_path / "train.lock").exists()
    with run_lock(tmp_path):  # a later block starts afresh
        pass


def test_the_lock_is_held_while_training(data, tmp_path, monkeypatch):
    train_module = importlib.import_module("vivit.engine.train")  # `vivit.engine.train` is also the function

    out, seen = tmp_path / "run", []
    real = train_module.train_step

    def spy(*args, **kwargs):
        seen.append((out / "train.lock").read_text().split()[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", spy)
    train(load_config(None, tiny_overrides(data, out, **{"schedule.max_steps": 2})), quiet=True)
    assert seen == [str(os.getpid())] * 2 and not (out / "train.lock").exists()


# Config overrides ---------------------------------------------------------------------------------
def test_a_mapping_override_merges_into_the_files(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  overrides: {width: 32, depth: 2, num_heads: 2}\ndata:\n  augment: {flip: 0.0}\n")
    config = load_config(path, ["model.overrides={depth: 4}", "data.augment={color_jitter: 0.0}"])
    assert config.model.overrides == {"width": 32, "depth": 4, "num_heads": 2}
    assert config.data.augment == {"flip": 0.0, "color_jitter": 0.0}
    assert load_config(path, ["optim.betas=[0.8, 0.9]"]).optim.betas == (0.8, 0.9)  # other values still replace


# GPU paths, checked on the CPU --------------------------------------------------------------------
def test_deterministic_run_sets_the_cublas_workspace(run):
    _, workspace = run
    assert workspace == ":4096:8"


def test_resume_on_fewer_gpus_restores_the_devices_present(monkeypatch):
    from vivit.engine.checkpoint import rng_state

    restored = []
    record = lambda state, device="cuda": restored.append(device)  # noqa: E731
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", record)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", record)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)] * 2)
    state = rng_state()  # written on a 2-GPU machine
    assert len(state["cuda"]) == 2
    set_rng_state(state)
    assert restored == [0]


def test_torch_minimum_covers_the_apis_used():
    """torch.compiler.is_exporting, torch.nn.utils.get_total_norm and clip_grads_with_norm_ are from 2.6."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_dep = next(d for d in project["dependencies"] if d.startswith("torch"))
    minimum = tuple(int(x) for x in torch_dep.split(">=")[1].split(".")[:2])
    assert minimum >= (2, 6)


# The demo's report ---------------------------------------------------------------------------------
def test_demo_reports_the_best_checkpoint_without_a_trivial_top5(tmp_path, monkeypatch):
    from vivit.engine import demo

    (tmp_path / "data" / "val").mkdir(parents=True)  # data present: not generated
    evaluated, trained = [], []

    def fake_train(config, quiet):
        trained.append(config.run.overwrite)
        return {"final": {"top1": 0.5}, "best_top1": 0.75}

    def fake_evaluate(checkpoint, data, **kwargs):
        evaluated.append(Path(checkpoint).name)
        return {"top1": 0.75, "top5": None, "mean_class_accuracy": 0.75}

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(demo, "evaluate_checkpoint", fake_evaluate)
    summary = demo.run_demo(tmp_path, quiet=True)
    assert evaluated == ["best.pt", "best.pt"] and trained == [True, True]
    assert all(r["val_top1_1view"] == 0.75 for r in summary["results"].values())  # best.pt's, not the last epoch's
    table = demo.format_table(summary)
    assert "top-5" not in table and "75.0%" in table
