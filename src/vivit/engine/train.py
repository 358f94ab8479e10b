"""The training loop: gradient accumulation, mixed precision, clipping, DDP, per-epoch validation,
atomic checkpoints and exact resume (paper Sec. 4.1 / Table 7 recipe by default)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vivit.cli import print_json
from vivit.engine import distributed as dist
from vivit.engine.build import (autocast, build_datasets, build_model, resolve_device, resolve_precision,
                                use_deterministic_algorithms)
from vivit.engine.checkpoint import check_resumable, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vivit.engine.config import TRAIN_CONFIG_FILE, OptimSection, TrainConfig, dump_config, load_config, save_config
from vivit.engine.evaluate import evaluate_loader, reported_top5
from vivit.engine.heads import all_correct, configured_splits, split_labels, split_soft_targets
from vivit.engine.logging import MetricLogger, epoch_line, progress
from vivit.engine.optim import build_optimizer
from vivit.engine.runfolder import (check_run_folder, clear_run, raise_if_terminated, run_lock, sigterm_deferred,
                                    terminated)
from vivit.engine.schedule import build_scheduler
from vivit.errors import ConfigError, DataError, VivitError
from vivit.textfiles import LABELS_FILE, write_labels
from vivit.model.vivit import unwrap_model


@dataclass
class StepResult:
    loss_sum: float           # summed per-sample loss over this process's clips
    correct: int              # clips whose arg-max is the (unmixed) label
    samples: int
    lr: float = 0.0           # the learning rate this step used
    grad_norm: float = 0.0    # total gradient norm before clipping
    loss_finite: bool = True  # on every rank
    grads_finite: bool = True

    @property
    def applied(self) -> bool:
        """False when the update was skipped for a non-finite loss or gradient."""
        return self.loss_finite and self.grads_finite


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy against soft targets (label smoothing and mixup), computed in fp32."""
    return -(targets * logits.float().log_softmax(dim=-1)).sum(dim=-1)


def split_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, splits: tuple[int, ...],
                        reduce: str = "sum") -> torch.Tensor:
    """Per-sample sum (or mean: the official `loss_function`) over the class splits of `soft_cross_entropy`."""
    losses = sum(soft_cross_entropy(z, t) for z, t in zip(logits.split(splits, -1), targets.split(splits, -1)))
    return losses / len(splits) if reduce == "mean" else losses


def step_seed(seed: int, step: int, rank: int) -> int:
    """Dropout, stochastic-depth and mixup randomness of one step depends only on (seed, step, rank)."""
    return int(np.random.SeedSequence((seed, step, rank)).generate_state(1, np.uint64)[0] >> 1)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    optim: OptimSection,
    num_classes: int,
    device: torch.device,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
    class_splits: tuple[int, ...] | None = None,
) -> StepResult:
    """One optimiser step over accumulated micro-batches of (videos, labels).

    The loss is the mean over this process's clips of the step; DDP averages gradients over ranks,
    so equal per-rank batches give exactly the single-process gradient of the global batch. A step whose
    loss or gradient is NaN/inf on any rank changes no weight (fp16: GradScaler lowers its scale).
    `class_splits` (a multi-head model's): (B, S) labels, the loss sums the splits' cross-entropies."""
    from vivit.data import mixup

    splits = tuple(class_splits or (num_classes,))

    total = sum(len(labels) for _, labels in micro_batches)
    result = StepResult(0.0, 0, total, lr=optimizer.param_groups[0]["lr"])
    for i, (videos, labels) in enumerate(micro_batches):
        videos, labels = videos.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        empty = len(labels) == 0
        if empty:  # every clip failed to decode: a zero-weighted pass keeps the ranks' all-reduce in step
            videos = torch.zeros((1, *_input_shape(model)), device=device)
            labels = torch.zeros(1, len(splits), dtype=torch.long, device=device)
        labels = split_labels(labels, len(splits))
        targets = split_soft_targets(labels, splits, optim.label_smoothing)
        if optim.mixup_alpha > 0 and not empty:
            videos, targets = mixup(videos, targets, optim.mixup_alpha, generator=generator)
        with dist.no_sync(model, skip=i < len(micro_batches) - 1), autocast(device, precision):
            logits = model(videos)
            losses = split_cross_entropy(logits, targets, splits, optim.split_loss)
            loss = losses.sum() * (0.0 if empty else 1.0 / max(total, 1))
        scaler.scale(loss).backward()
        if not empty:
            result.loss_sum += float(losses.detach().sum())
            result.correct += int(all_correct(logits.detach(), labels, splits).sum())
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    result.grad_norm = float(norm)
    bad_loss, bad_grads = dist.all_reduce_sum(
        [float(not math.isfinite(result.loss_sum)), float(not math.isfinite(result.grad_norm))], device)
    result.loss_finite, result.grads_finite = bad_loss == 0, bad_grads == 0
    if result.applied:
        if optim.clip_grad_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(params, optim.clip_grad_norm, norm)
        scaler.step(optimizer)
    scaler.update()  # fp16: a skipped step lowers the scale (unscale_ recorded the inf/NaN gradients)
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # the schedule counts skipped steps too; it is not ahead of the optimiser
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before", UserWarning)
        scheduler.step()
    return result


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    cfg = unwrap_model(model).config
    return (cfg.in_channels, cfg.num_frames, *cfg.image_size)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(config: TrainConfig, *, resume: str | Path | bool = False, quiet: bool = False,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary (best/final validation metrics, paths).

    `resume=True` continues from `<run.out>/last.pt` when it exists; a path resumes from that file.
    `stop_after_steps` ends this invocation after that many optimiser steps with a resumable checkpoint.
    A `run.out` that holds a run is refused unless resuming or `run.overwrite`; the main process holds
    `run.out/train.lock` while it trains."""
    out = Path(config.run.out)
    check_run_folder(out, resume=resume, overwrite=config.run.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 alone writes the folder
        return _train(config, resume=resume, quiet=quiet, stop_after_steps=stop_after_steps)
    with run_lock(out):
        if config.run.overwrite and not resume:
            clear_run(out)
        return _train(config, resume=resume, quiet=quiet, stop_after_steps=stop_after_steps)


def _train(config: TrainConfig, *, resume: str | Path | bool, quiet: bool, stop_after_steps: int | None) -> dict[str, Any]:
    run = config.run
    if run.deterministic:
        use_deterministic_algorithms()
    rank, world, local_rank = dist.init_distributed(resolve_device(run.device).type)
    device = resolve_device(run.device, local_rank)
    precision = resolve_precision(run, device)
    _seed_everything(run.seed)
    out = Path(run.out)
    say = (lambda msg: print(msg, flush=True)) if dist.is_main() and not quiet else (lambda msg: None)

    micro = run.batch_size // (world * run.grad_accum)
    if micro * world * run.grad_accum != run.batch_size:
        raise ConfigError(f"run.batch_size {run.batch_size} must be divisible by processes x run.grad_accum = {world * run.grad_accum}")

    from vivit.data import make_loader

    train_set, val_set = build_datasets(config.data, splits=configured_splits(config.model.overrides))
    classes = train_set.classes
    loader = make_loader(train_set, batch_size=micro, shuffle=True, num_workers=config.data.num_workers,
                         seed=run.seed, drop_last=True, distributed=world > 1)
    val_loader = None if val_set is None else make_loader(
        val_set, batch_size=micro, shuffle=False, num_workers=config.data.num_workers, distributed=world > 1)
    steps_per_epoch = len(loader) // run.grad_accum
    if steps_per_epoch == 0:
        raise DataError(f"{config.data.train} has {len(train_set)} videos: fewer than one step of run.batch_size={run.batch_size}")
    total_steps = config.schedule.epochs * steps_per_epoch
    if config.schedule.max_steps is not None:
        total_steps = min(total_steps, config.schedule.max_steps) if config.schedule.epochs else config.schedule.max_steps
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = round(config.schedule.warmup_epochs * steps_per_epoch)

    model = build_model(config.model, config.data, len(classes)).to(device)
    optimizer = build_optimizer(model, config.optim, run.batch_size)
    scheduler = build_scheduler(optimizer, total_steps, warmup, config.schedule.name, config.schedule.min_lr)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    state = {"epoch": 0, "step": 0, "best_top1": -1.0, "epoch_stats": _new_stats()}
    resumed_at, pending_line = None, None
    # what maps steps to epochs and samples to ranks: a resumed run must keep them
    schedule = {"run.batch_size": run.batch_size, "run.grad_accum": run.grad_accum, "processes": world,
                "steps_per_epoch": steps_per_epoch}
    resume_from = (out / "last.pt" if resume is True else Path(resume)) if resume else None
    if resume_from is not None and (resume is not True or resume_from.is_file()):
        ckpt = load_checkpoint(resume_from)
        check_resumable(ckpt, model.config.to_dict(), schedule, resume_from)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        state = {k: ckpt[k] for k in state}
        resumed_at, pending_line = state["step"], ckpt.get("pending_epoch")
        say(f"resumed from {resume_from} in epoch {state['epoch'] + 1} at step {state['step']}")  # epochs from 1
    elif resume is True:
        say(f"no checkpoint at {resume_from}: starting a new run")

    net = dist.wrap_ddp(model, device)
    if config.model.compile:
        net = torch.compile(net)
    logger = None
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
        write_labels(out / LABELS_FILE, classes)
        logger = MetricLogger(out, tensorboard=run.tensorboard, resume_step=resumed_at)
    say(f"training {config.model.name} on {len(train_set)} videos ({len(classes)} classes), {world} process(es), "
        f"{device.type} {precision}, {total_steps} steps of {run.batch_size} clips")

    def checkpoint(path: Path, epoch_stats: dict[str, float], pending: dict[str, Any] | None = None) -> None:
        """`pending`: an epoch whose end (validation, its metrics row, best.pt) is still to be done, with the random
        state its validation starts from (a SIGTERM during validation; a resumed run does it first)."""
        _check_finite_weights(model, state["step"], path)  # never replace a good checkpoint by a broken model
        if dist.is_main():
            save_checkpoint(path, {
                "model": model.state_dict(), "model_config": model.config.to_dict(), "classes": classes,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "rng": pending["rng"] if pending else rng_state(), "epoch": state["epoch"], "step": state["step"],
                "best_top1": state["best_top1"], "epoch_stats": epoch_stats, "config": config.to_dict(),
                "schedule": schedule, "pending_epoch": pending and pending["line"],
            })
        dist.barrier()

    steps_this_run = 0
    last_report, finite = None, True
    nonfinite, last_finite, lr = 0, None, scheduler.get_last_lr()[0]  # consecutive non-finite steps; (step, loss)

    validating = None  # the epoch whose end (validation, row, best) is under way: what a SIGTERM saves as pending

    def finish_epoch(epoch: int, line: dict[str, Any]) -> None:
        """The end of a trained epoch: validation where due, the epoch's line and metrics row, the best model."""
        nonlocal last_report, finite, validating
        last_epoch = epoch == epochs - 1
        if val_loader is not None and (last_epoch or (run.eval_every and (epoch + 1) % run.eval_every == 0)):
            last_report, finite = evaluate_loader(net, val_loader, device=device, precision=precision,
                                                  num_classes=len(classes), quiet=quiet, desc="validate")
            line.update(val_top1=last_report.top1, val_top5=reported_top5(last_report, len(classes)))
            if not finite:
                say(f"epoch {epoch + 1}: the validation logits are NaN/inf; this model is not kept as best")
        with sigterm_deferred():  # the epoch's row, last.pt and best.pt are written together
            validating = None
            say(epoch_line(epoch + 1, epochs, line))
            improved = line["val_top1"] is not None and finite and line["val_top1"] > state["best_top1"]
            if logger:
                logger.log(_row("epoch", epoch + 1, state["step"], line["loss"], line["acc"], line["lr"], line))
            if improved:
                state["best_top1"] = line["val_top1"]
                if run.keep_last:  # record the new best in last.pt too
                    checkpoint(out / "last.pt", state["epoch_stats"])
            if run.keep_best and improved:
                checkpoint(out / "best.pt", state["epoch_stats"])
                if dist.is_main():
                    _export_best(model, classes, config, out / "best")

    def save_preempted() -> None:  # after the last finished step (sigterm_deferred), an epoch being validated pending
        checkpoint(out / "last.pt", state["epoch_stats"], validating)
        print(f"SIGTERM: stopped at step {state['step']}; {out / 'last.pt'} holds it, continue with --resume",
              file=sys.stderr, flush=True)

    with _saved_on_sigterm(save_preempted if world == 1 and run.keep_last else None):
        if pending_line is not None:  # stopped by a SIGTERM while validating: that epoch's end comes first
            say(f"finishing epoch {state['epoch']}: its validation was cut short")
            validating = {"line": pending_line, "rng": rng_state()}
            finish_epoch(state["epoch"] - 1, pending_line)
        for epoch in range(state["epoch"], epochs):
            state["epoch"] = epoch
            loader.set_epoch(epoch)
            stats = state["epoch_stats"]
            done_in_epoch = state["step"] - epoch * steps_per_epoch  # > 0 when resuming mid-epoch
            steps_in_epoch = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
            net.train()
            start, pending, pending_skipped = time.perf_counter(), [], 0
            batches = progress(loader, desc=f"epoch {epoch + 1}/{epochs}", total=steps_in_epoch * run.grad_accum,
                               unit="batch", quiet=quiet or not dist.is_main())
            for i, batch in enumerate(batches):
                raise_if_terminated()  # a SIGTERM whose exception the decoder lost
                if i < done_in_epoch * run.grad_accum:
                    continue  # replayed for the sampler's sake; this step is already in the checkpoint
                if i >= steps_in_epoch * run.grad_accum:
                    break
                pending_skipped += batch.skipped
                pending.append((batch.videos, batch.labels))
                if len(pending) < run.grad_accum:
                    continue
                with sigterm_deferred():  # a step and its bookkeeping are never cut in half by a preemption
                    torch.manual_seed(step_seed(run.seed, state["step"], rank))
                    generator = torch.Generator().manual_seed(step_seed(run.seed, state["step"], rank))
                    result = train_step(net, optimizer, scheduler, scaler, pending, optim=config.optim,
                                        num_classes=len(classes), device=device, precision=precision, generator=generator,
                                        class_splits=model.config.class_splits)
                    pending, stats["skipped"], pending_skipped = [], stats["skipped"] + pending_skipped, 0
                    state["step"] += 1
                    steps_this_run += 1
                    lr = result.lr
                    if result.loss_finite:
                        stats["loss_sum"] += result.loss_sum
                        stats["correct"] += result.correct
                        stats["samples"] += result.samples
                        last_finite = (state["step"], result.loss_sum / max(result.samples, 1))
                    else:
                        stats["nonfinite"] = stats.get("nonfinite", 0) + 1
                    if logger and state["step"] % run.log_every == 0:
                        logger.log(_row("step", epoch + 1, state["step"], result.loss_sum / max(result.samples, 1),
                                        result.correct / max(result.samples, 1), result.lr, {"grad_norm": result.grad_norm}))
                    # fp16 overflows are GradScaler's business; a NaN/inf loss, or gradient in fp32/bf16, is divergence
                    counts = not result.loss_finite or (not result.grads_finite and precision != "fp16")
                    nonfinite = nonfinite + 1 if counts else 0
                    if nonfinite >= run.max_nonfinite_steps:
                        if logger:
                            logger.close()
                        raise VivitError(_diverged(state["step"], nonfinite, last_finite, out))
                    stop = stop_after_steps is not None and steps_this_run >= stop_after_steps
                    if (run.save_every_steps and state["step"] % run.save_every_steps == 0) or stop:
                        checkpoint(out / "last.pt", stats)
                    if stop:
                        say(f"stopped after {steps_this_run} steps (step {state['step']}); resume with --resume")
                        if logger:
                            logger.close()
                        return {"stopped": True, "step": state["step"], "out": str(out)}
            stats["seconds"] += time.perf_counter() - start
            loss_sum, correct, samples, skipped = dist.all_reduce_sum(
                [stats["loss_sum"], stats["correct"], stats["samples"], stats["skipped"]], device)
            if samples == 0 and not stats.get("nonfinite"):
                raise DataError(f"no training clip of epoch {epoch + 1} could be decoded ({int(skipped)} skipped): "
                                f"check the videos in {config.data.train} with `vivit check-data`")
            line = {"loss": loss_sum / samples if samples else math.nan, "acc": correct / max(samples, 1), "lr": lr,
                    "clips_per_s": samples / max(stats["seconds"], 1e-9), "skipped": int(skipped), "val_top1": None,
                    "nonfinite": stats.get("nonfinite", 0)}
            with sigterm_deferred():  # the epoch's state and its last.pt together; a SIGTERM leaves its end pending
                state["epoch"], state["epoch_stats"] = epoch + 1, _new_stats()
                validating = {"line": line, "rng": rng_state()}
                if run.keep_last:
                    checkpoint(out / "last.pt", state["epoch_stats"])
            finish_epoch(epoch, line)
    if logger:
        logger.close()
        _final_plots(out)
    dist.barrier()
    return {"stopped": False, "step": state["step"], "epochs": epochs, "out": str(out), "classes": classes,
            "best_top1": state["best_top1"] if state["best_top1"] >= 0 else None,
            "final": None if last_report is None else dataclasses.asdict(last_report)}


@contextmanager
def _saved_on_sigterm(save: Callable[[], None] | None) -> Iterator[None]:
    """A SIGTERM (a scheduler's preemption) ending the block calls `save` first, so `--resume` continues from the
    last finished step; None (a DDP run: its ranks could not meet at the save) leaves the last checkpoint as it is."""
    try:
        yield
    except SystemExit:
        if save is not None and terminated():
            save()
        raise


def _new_stats() -> dict[str, float]:
    return {"loss_sum": 0.0, "correct": 0, "samples": 0, "skipped": 0, "seconds": 0.0, "nonfinite": 0}


def _diverged(step: int, count: int, last_finite: tuple[int, float] | None, out: Path) -> str:
    last = f"the last finite loss was {last_finite[1]:.4g} at step {last_finite[0]}" if last_finite else "no finite loss yet"
    return (f"training stopped at step {step}: the loss or gradient norm was NaN/inf for {count} consecutive steps "
            f"(run.max_nonfinite_steps), {last}; lower optim.lr, set optim.clip_grad_norm or use run.precision=fp32 "
            f"(no checkpoint in {out} was written after the steps went wrong)")


def _check_finite_weights(model: nn.Module, step: int, path: Path) -> None:
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise VivitError(f"the model's weights are NaN/inf at step {step} ({len(bad)} tensors, first {bad[0]}): "
                         f"{path} not written; lower optim.lr or set optim.clip_grad_norm")


def _row(kind: str, epoch: int, step: int, loss: float, acc: float, lr: float, extra: dict | None = None) -> dict:
    row = {"kind": kind, "epoch": epoch, "step": step, "loss": loss, "acc": acc, "lr": lr, "grad_norm": "",
           "val_top1": "", "val_top5": "", "clips_per_s": "", "skipped": ""}
    for key in ("grad_norm", "val_top1", "val_top5", "clips_per_s", "skipped"):
        if extra and extra.get(key) is not None:
            row[key] = extra[key]
    return row


def _export_best(model: nn.Module, classes: list[str], config: TrainConfig, folder: Path) -> None:
    """The best weights also in the pretrained format (config.json + model.safetensors + labels.txt), with
    the training config (`train_config.yaml`) so that eval/predict preprocess videos as training did."""
    from vivit.weights.store import save_pretrained

    save_pretrained(model, folder, labels=classes, extra_files={TRAIN_CONFIG_FILE: dump_config(config)})


def _final_plots(out: Path) -> None:
    from vivit.engine.plots import training_curves

    training_curves(out / "metrics.csv", out / "training_curves.png")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                        help="YAML or TOML config file, e.g. configs/demo.yaml (without one, give data.train=FOLDER)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides such as optim.lr=0.05 run.batch_size=32")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                        help="continue from CKPT, or from <run.out>/last.pt when given without a path")
    parser.add_argument("--stop-after-steps", type=int, default=None, help="stop after N steps with a resumable checkpoint")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def run(args: argparse.Namespace) -> int:
    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path:  # no config file: the first argument is already an override
        path, overrides = None, [path, *overrides]
    config = load_config(path, overrides)  # a typo in an override is reported first
    if path is None and not any(item.partition("=")[0].strip() == "data.train" for item in overrides):
        raise ConfigError("vivit train needs a CONFIG file (the demo recipe: `vivit train configs/demo.yaml "
                          "data.train=data/`) or at least data.train=FOLDER; it does not guess a dataset")
    failed = True
    try:
        summary = train(config, resume=args.resume, quiet=args.quiet or args.json, stop_after_steps=args.stop_after_steps)
        if args.json and dist.is_main():
            print_json(summary)
        failed = False
    finally:
        dist.cleanup(failed)
    return 0
