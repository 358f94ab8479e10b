"""Peak memory of one training step, each measured in a fresh child process so earlier allocations
cannot hide or inflate it.

The child builds the model and input, runs one step (forward, backward, SGD step), then measures the next
inside `vivit.profile.peak_memory`: the rise of the process's peak resident set (VmHWM) over its resident set
before the step, so the step's activations, gradients and workspace count, the weights do not. The first step
is reported too (`first_step_peak_mb`): it also holds what a process loads once, on its first training step
(the compiled GELU kernel and the inductor modules behind it: ~75 MiB on a 2-core Xeon; libraries' code
pages and GEMM buffers: ~25 MiB), the same in both settings, which is not memory that steps use.
glibc's mmap threshold is pinned in the child (MALLOC_MMAP_THRESHOLD_) so freed tensors go back to
the system and the resident set follows the live tensors instead of the heap's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

import vivit
from timing import PRECISIONS, setup, train_step_fn
from vivit.profile import peak_memory


def measure(preset: str, checkpointing: bool, threads: int, precision: str = "fp32", batch: int = 1, **overrides) -> dict:
    """Run the step in a child process and return its figures (MiB)."""
    cmd = [sys.executable, __file__, preset, "--threads", str(threads), "--precision", precision,
           "--batch", str(batch), "--overrides", json.dumps(overrides)]
    if checkpointing:
        cmd.append("--checkpointing")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", VIVIT_MALLOC="system")  # RSS follows the live tensors
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def child(preset: str, checkpointing: bool, overrides: dict, batch: int = 1) -> dict:
    model = vivit.create_model(preset, **overrides)
    model.set_grad_checkpointing(checkpointing)
    cfg = model.config
    video = torch.randn(batch, cfg.in_channels, cfg.num_frames, *cfg.image_size)
    step = train_step_fn(model, lambda: model(video), torch.zeros(batch, dtype=torch.long))
    with peak_memory(torch.device("cpu")) as first:
        step()
    start = time.perf_counter()
    with peak_memory(torch.device("cpu")) as mem:
        step()
    step_ms = (time.perf_counter() - start) * 1e3
    return {"preset": preset, "overrides": overrides, "batch": batch, "checkpointing": checkpointing, "step_ms": step_ms,
            "step_peak_mb": mem["peak_mb"], "first_step_peak_mb": first["peak_mb"],
            "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--overrides", default="{}", help="JSON dict of create_model overrides")
    args = parser.parse_args()
    setup(args.threads, args.precision)
    print(json.dumps(child(args.preset, args.checkpointing, json.loads(args.overrides), args.batch)))


if __name__ == "__main__":
    main()
