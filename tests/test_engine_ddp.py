"""Two gloo processes on CPU: one DDP step equals the single-process step on the same global batch."""

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from vivit.engine import distributed as dist
from vivit.engine.config import OptimSection
from vivit.engine.optim import build_optimizer
from vivit.engine.schedule import build_scheduler
from vivit.engine.train import train_step
from conftest import tiny_model

OPTIM = OptimSection(name="sgd", lr=0.5, base_batch_size=None, momentum=0.9, clip_grad_norm=None, label_smoothing=0.1)
WORLD = 2


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 4, 16, 16, generator=g), torch.tensor([0, 2, 1, 2])


def one_step(model, micro_batches):
    optimizer = build_optimizer(model, OPTIM, batch_size=4)
    scheduler = build_scheduler(optimizer, total_steps=10, warmup_steps=0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return train_step(model, optimizer, scheduler, scaler, micro_batches, optim=OPTIM, num_classes=3,
                      device=torch.device("cpu"))


def fresh_model():
    torch.manual_seed(0)
    model = tiny_model("fe")
    torch.nn.init.normal_(model.head.weight, std=0.1)  # the zero-initialised head would hide most gradients
    return model


def worker(rank, init_file, out_file):
    torch_dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    model = fresh_model()
    videos, labels = batch()
    half = slice(2 * rank, 2 * rank + 2)
    result = one_step(dist.wrap_ddp(model, torch.device("cpu")), [(videos[half], labels[half])])
    loss_sum, samples = dist.all_reduce_sum([result.loss_sum, result.samples], torch.device("cpu"))
    if rank == 0:
        torch.save({"state": model.state_dict(), "loss": loss_sum / samples}, out_file)
    dist.cleanup()


def test_ddp_step_equals_single_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path / "ddp.pt")), nprocs=WORLD, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    videos, labels = batch()
    single = fresh_model()
    result = one_step(single, [(videos, labels)])
    accumulated = fresh_model()
    one_step(accumulated, [(videos[:2], labels[:2]), (videos[2:], labels[2:])])

    start = fresh_model().state_dict()
    assert any(not torch.equal(start[k], v) for k, v in single.state_dict().items())
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], value, atol=1e-6, rtol=1e-5, msg=name)
        torch.testing.assert_close(accumulated.state_dict()[name], value, atol=1e-6, rtol=1e-5, msg=name)
    assert abs(ddp["loss"] - result.loss_sum / result.samples) < 1e-6


def test_torchrun_cli_two_processes(tmp_path):
    """`torchrun -m vivit.cli train` with 2 gloo processes: rank 0 alone logs and writes a working checkpoint."""
    import subprocess
    import sys
    from pathlib import Path

    from engine_fixtures import tiny_overrides, write_brightness_videos
    from vivit.engine.checkpoint import load_checkpoint

    data = write_brightness_videos(tmp_path / "videos")
    torchrun = Path(sys.executable).with_name("torchrun")
    overrides = tiny_overrides(data, tmp_path / "run", **{"run.deterministic": "false"})
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "vivit.cli", "train", *overrides],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr  # whole: a rank's own error comes before torchrun's summary
    assert "2 process(es)" in done.stdout and done.stdout.count("epoch 4/4") == 1  # rank 0 prints, once
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 12 and "module." not in next(iter(ckpt["model"]))  # the unwrapped model is saved
    final = [line for line in done.stdout.splitlines() if line.startswith("epoch 4/4")][0]
    assert "val top1 100.0%" in final or "val top1 87.5%" in final


RANK_FAILS = """
from datetime import timedelta

import torch
import torch.distributed
from vivit.engine import distributed as dist

torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=40))  # a hang ends too, for the test's sake
failed = True
try:
    if torch.distributed.get_rank() == 1:
        raise RuntimeError("rank 1 fails on its own")
    for _ in range(50):  # rank 0 keeps calling collectives that rank 1 never joins
        dist.all_reduce_sum([1.0], torch.device("cpu"))
    failed = False
finally:
    dist.cleanup(failed)
"""


def test_a_failing_rank_ends_the_job_instead_of_hanging(tmp_path):
    """After a failure a rank leaves without waiting for the others (as `vivit train` does), so torchrun
    stops the job at once with that rank's error instead of every rank waiting out gloo's timeout."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "rank_fails.py"
    script.write_text(RANK_FAILS)
    torchrun = Path(sys.executable).with_name("torchrun")
    start = time.monotonic()
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)],
                          capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 30, "the job waited for gloo's timeout after one rank failed"
    assert done.returncode != 0
    assert "rank 1 fails on its own" in done.stderr
