"""`explain` and `extract` take a registry model NAME as predict and eval do (the zoo's own tests cover download)."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import CLASSES, write_brightness_videos
from vivit.cli import main
from vivit.data.encode import write_video
from vivit.model import create_model


@pytest.fixture
def named_model(tmp_path, monkeypatch):
    """A tiny Model 1 registered as `tiny-bright-dark` (format vivit: a model folder on disk)."""
    monkeypatch.setenv("VIVIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIVIT_OFFLINE", raising=False)
    torch.manual_seed(0)
    model = create_model("vivit-ti-16x2-st", num_classes=len(CLASSES), num_frames=8, image_size=16, width=32,
                         depth=1, num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    model.save_pretrained(tmp_path / "weights", labels=list(CLASSES))
    registry = tmp_path / "zoo.toml"
    registry.write_text(f'[[model]]\nname = "tiny-bright-dark"\nformat = "vivit"\nurl = "{tmp_path / "weights"}"\n'
                        f'variant = "st"\nframes = 8\nlabels = {list(CLASSES)!r}\ncrop = 16\nviews = "1x1"\n'.replace("'", '"'))
    monkeypatch.setenv("VIVIT_ZOO", str(registry))
    return tmp_path / "weights"


def test_explain_and_extract_take_a_model_name(tmp_path, named_model):
    video = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (20, 20, 20, 3), np.uint8), fps=8)
    assert main(["explain", str(video), "--model", "tiny-bright-dark", "--out", str(tmp_path / "explained")]) == 0
    assert (tmp_path / "explained" / "map.npy").is_file() and (tmp_path / "explained" / "strip.png").is_file()

    data = write_brightness_videos(tmp_path / "data", per_class=1, val_per_class=1)
    for spec, out in (("tiny-bright-dark", "by-name"), (str(named_model), "by-folder")):
        assert main(["extract", str(data), "--split", "val", "--model", spec, "--out", str(tmp_path / out),
                     "--workers", "0", "--quiet"]) == 0
    by_name = sorted((tmp_path / "by-name").rglob("*.safetensors"))
    assert len(by_name) == 2
    for path in by_name:
        twin = tmp_path / "by-folder" / path.relative_to(tmp_path / "by-name")
        torch.testing.assert_close(load_file(path)["features"], load_file(twin)["features"], rtol=0, atol=0)
