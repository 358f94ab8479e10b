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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
