"""`vivit convert --to hf`: a folder transformers loads (equal logits, id2label) and whose image processor
maps uint8 pixels to [-1, 1] exactly as our eval transform does."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import VivitForVideoClassification, VivitImageProcessor

from vivit.cli import main
from vivit.config import ViViTConfig
from vivit.data.transforms import eval_transform
from vivit.engine.checkpoint import save_checkpoint
from vivit.model import create_model
from vivit.weights.store import save_pretrained

CLASSES = ["archery", "bowling", "juggling balls"]
TINY = dict(num_frames=8, image_size=16, width=32, depth=2, num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))


def random_model(preset="vivit-ti-16x2-st", **overrides):
    torch.manual_seed(0)
    model = create_model(preset, num_classes=len(CLASSES), **{**TINY, **overrides})
    with torch.no_grad():  # the zero-initialised head would give zero logits: random everything
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def checkpoint(path, model, **state):
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.config.to_dict(),
                           "classes": CLASSES, **state})
    return path


@pytest.mark.parametrize("source", ["checkpoint", "folder"])
@torch.no_grad()
def test_transformers_loads_the_folder_with_equal_logits_and_labels(source, tmp_path, capsys):
    model = random_model()
    src = checkpoint(tmp_path / "ckpt.pt", model) if source == "checkpoint" else \
        save_pretrained(model, tmp_path / "ours", labels=CLASSES)
    assert main(["convert", "--to", "hf", str(src), str(tmp_path / "hf")]) == 0
    assert "VivitForVideoClassification" in capsys.readouterr().out
    ref, info = VivitForVideoClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert ref.config.id2label == dict(enumerate(CLASSES)) and ref.config.label2id == {c: i for i, c in enumerate(CLASSES)}
    pixel_values = torch.randn(2, 8, 3, 16, 16)  # HF layout (B, T, C, H, W)
    expected = model(pixel_values.transpose(1, 2))
    assert expected.abs().max() > 0.1  # non-trivial logits
    torch.testing.assert_close(ref.eval()(pixel_values=pixel_values).logits, expected, atol=1e-5, rtol=0)


def uint8_clip():
    """8 frames of 18 x 24 pixels (the short side a 16-pixel model resizes to: round(16 * 256 / 224)),
    with 0 and 255 inside the centre crop."""
    clip = np.random.default_rng(0).integers(0, 256, (8, 18, 24, 3), dtype=np.uint8)
    clip[:, 5, 8], clip[:, 6, 9] = 0, 255
    return clip


# (normalisation in the training config, the range a uint8 clip maps to)
NORMALISATIONS = [("minus_one_one", (-1.0, 1.0)),
                  ([[0.45, 0.45, 0.45], [0.225, 0.225, 0.225]], (-0.45 / 0.225, 0.55 / 0.225))]


@pytest.mark.parametrize("normalization, bounds", NORMALISATIONS, ids=["minus_one_one", "mean_std"])
def test_image_processor_matches_our_eval_transform(normalization, bounds, tmp_path):
    train_config = {"data": {"num_frames": 8, "image_size": 16, "augment": {"normalization": normalization}}}
    src = checkpoint(tmp_path / "ckpt.pt", random_model(), config=train_config)
    assert main(["convert", "--to", "hf", str(src), str(tmp_path / "hf"), "--json"]) == 0
    settings = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert settings["size"] == {"shortest_edge": 18} and settings["crop_size"] == {"height": 16, "width": 16}
    clip = uint8_clip()
    theirs = VivitImageProcessor.from_pretrained(tmp_path / "hf")(list(clip), return_tensors="pt")["pixel_values"]
    ours = eval_transform(torch.from_numpy(clip), 16, 1, normalization=normalization, short_side=18)
    assert theirs.shape == (1, 8, 3, 16, 16)
    torch.testing.assert_close(theirs[0], ours[0].transpose(0, 1), atol=1e-5, rtol=0)
    assert (float(theirs.min()), float(theirs.max())) == pytest.approx(bounds, abs=1e-6)


def test_minus_one_one_is_not_the_hub_processor(tmp_path):
    """The Hub processor (rescale 1/127.5 with offset, then mean = std = 0.5) maps uint8 to [-3, 1]."""
    src = checkpoint(tmp_path / "ckpt.pt", random_model())
    assert main(["convert", "--to", "hf", str(src), str(tmp_path / "hf")]) == 0
    ours = VivitImageProcessor.from_pretrained(tmp_path / "hf")(list(uint8_clip()), return_tensors="pt")["pixel_values"]
    hub = VivitImageProcessor(size={"shortest_edge": 18}, crop_size={"height": 16, "width": 16},
                              image_mean=[0.5] * 3, image_std=[0.5] * 3)(list(uint8_clip()), return_tensors="pt")
    assert float(hub["pixel_values"].min()) == pytest.approx(-3.0) and float(ours.min()) == pytest.approx(-1.0)


@pytest.mark.parametrize("preset, overrides, message", [
    ("vivit-ti-16x2-fe", {}, "Model 1 only"),
    ("vivit-ti-16x2-st", {"representation_size": 16}, "representation_size"),
    pytest.param("vivit-ti-16x2-st", {"class_splits": (2, 1), "split_names": ("noun", "verb")}, "multi-head",
                 marks=pytest.mark.skipif("class_splits" not in {f.name for f in dataclasses.fields(ViViTConfig)},
                                          reason="multi-head configs (class_splits) not in this version")),
])
def test_what_transformers_cannot_represent_is_one_error_line(preset, overrides, message, tmp_path, capsys):
    src = checkpoint(tmp_path / "ckpt.pt", random_model(preset, **overrides))
    assert main(["convert", "--to", "hf", str(src), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "hf").exists()


def test_from_options_are_refused_with_to(tmp_path, capsys):
    src = checkpoint(tmp_path / "ckpt.pt", random_model())
    assert main(["convert", "--to", "hf", str(src), str(tmp_path / "hf"), "--frames", "4"]) == 2
    assert "--frames" in capsys.readouterr().err and not (tmp_path / "hf").exists()


@torch.no_grad()
def test_a_model_without_qkv_bias_loads_in_transformers(tmp_path):
    """qkv_bias=False: transformers' VivitConfig(qkv_bias=False) has q/k/v projections without bias."""
    model = random_model(qkv_bias=False)
    src = save_pretrained(model, tmp_path / "ours", labels=CLASSES)
    assert main(["convert", "--to", "hf", str(src), str(tmp_path / "hf")]) == 0
    ref, info = VivitForVideoClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert ref.config.qkv_bias is False and ref.vivit.layers[0].attention.q_proj.bias is None
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    pixel_values = torch.randn(2, 8, 3, 16, 16)
    torch.testing.assert_close(ref.eval()(pixel_values=pixel_values).logits, model(pixel_values.transpose(1, 2)),
                               atol=1e-5, rtol=0)


@torch.no_grad()
def test_a_transformers_folder_keeps_its_class_names(tmp_path):
    """id2label of a transformers folder are the class names of predict/eval and of a convert --to hf round trip."""
    from transformers import VivitConfig

    from vivit.engine.checkpoint import load_model

    config = VivitConfig(image_size=16, num_frames=8, tubelet_size=[2, 8, 8], hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64, id2label=dict(enumerate(CLASSES)),
                         label2id={c: i for i, c in enumerate(CLASSES)})
    torch.manual_seed(0)
    VivitForVideoClassification(config).save_pretrained(tmp_path / "theirs")
    assert load_model(tmp_path / "theirs").classes == CLASSES
    assert main(["convert", "--to", "hf", str(tmp_path / "theirs"), str(tmp_path / "back")]) == 0
    assert VivitForVideoClassification.from_pretrained(tmp_path / "back").config.id2label == dict(enumerate(CLASSES))
