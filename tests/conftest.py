import os
import shutil
import tempfile

import pytest
import torch

import vivit

VARIANTS = ("st", "fe", "fe-avg", "fsa", "fdp")


def tiny_model(variant: str = "st", **overrides) -> vivit.ViViT:
    """A tiny ViViT: 4 frames of 16x16, tubelet 2x8x8 -> grid (2, 2, 2)."""
    kw = dict(num_frames=4, image_size=16, tubelet=(2, 8, 8), num_classes=3, width=32, depth=2,
              num_heads=4, mlp_dim=64, temporal_depth=2)
    kw.update(overrides)
    return vivit.create_model(f"vivit-ti-16x2-{variant}", **kw)


def op_calls(fn, op: str) -> int:
    """How many times running `fn` called the operator `op` (e.g. "vivit::onednn_mm_t"), by the profiler."""
    with torch.profiler.profile() as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key == op)


_INDUCTOR_CACHE = tempfile.mkdtemp(prefix="vivit-test-inductor-")


def pytest_configure(config: pytest.Config) -> None:
    # A fresh compile cache per run: graphs cached by an earlier run (or an earlier version of a custom op) would
    # otherwise stand in for what this code compiles to, as they do not on a clean machine.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", _INDUCTOR_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_INDUCTOR_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
