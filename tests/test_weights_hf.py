import json

import pytest
import torch
from transformers import VivitConfig, VivitForVideoClassification, VivitModel

from vivit.errors import ConfigError, VivitError
from vivit.model.linear import onednn_gemm
from vivit.weights import hf

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
             num_frames=8, image_size=32, tubelet_size=[2, 8, 8], num_labels=5)


def hf_model(cls=VivitForVideoClassification, **kw):
    torch.manual_seed(0)
    model = cls(VivitConfig(**{**SMALL, **kw})).eval()
    with torch.no_grad():  # random everything (HF inits LayerNorms to 1/0 and cls to 0)
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def pixels(frames=8, size=32):
    torch.manual_seed(1)
    return torch.randn(2, frames, 3, size, size)  # HF layout (B, T, C, H, W)


@pytest.mark.parametrize("onednn", [False, True], ids=["pytorch-gemm", "onednn"])
@torch.no_grad()
def test_logits_match_hf_v5_names(onednn):
    ref = hf_model()
    ours = hf.from_hf(ref)
    x = pixels()
    expected = ref(pixel_values=x).logits
    with onednn_gemm(onednn, min_macs=0):  # every linear on oneDNN, or none
        assert torch.allclose(ours(x.transpose(1, 2)), expected, atol=1e-5, rtol=0)
    assert expected.abs().max() > 0.1  # a test that can fail: non-trivial logits


@torch.no_grad()
def test_logits_match_hf_v4_names():
    ref = hf_model()
    sd = {k.removeprefix("vivit."): v for k, v in ref.state_dict().items() if k.startswith("vivit.")}
    v4 = {f"vivit.{k}": v for k, v in hf.v5_to_v4(sd).items()}
    v4.update({k: v for k, v in ref.state_dict().items() if k.startswith("classifier.")})
    assert "vivit.encoder.layer.1.attention.attention.query.weight" in v4
    assert "vivit.encoder.layer.0.intermediate.dense.bias" in v4 and "vivit.encoder.layer.0.output.dense.weight" in v4
    model, report = hf.load_hf(v4, config=ref.config)
    assert sorted(report.used) == sorted(v4) and report.unexpected == []
    x = pixels()
    assert torch.allclose(model(x.transpose(1, 2)), ref(pixel_values=x).logits, atol=1e-5, rtol=0)


@torch.no_grad()
def test_to_hf_round_trip():
    ref = hf_model()
    ours = hf.from_hf(ref)
    back = VivitForVideoClassification(VivitConfig(**hf.hf_config(ours.config))).eval()
    back.load_state_dict(hf.to_hf(ours), strict=True)
    x = pixels()
    assert torch.allclose(back(pixel_values=x).logits, ref(pixel_values=x).logits, atol=1e-5, rtol=0)


@torch.no_grad()
def test_to_hf_v4_names_read_back():
    ref = hf_model()
    sd4 = hf.to_hf(hf.from_hf(ref), names="v4")
    assert "vivit.encoder.layer.1.attention.output.dense.weight" in sd4 and not any(".layers." in k for k in sd4)
    x = pixels()
    again = hf.from_hf(sd4, config=ref.config)
    assert torch.allclose(again(x.transpose(1, 2)), ref(pixel_values=x).logits, atol=1e-5, rtol=0)


def test_config_from_hf_matches_hf_semantics():
    cfg = hf.config_from_hf(VivitConfig(**SMALL))
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim) == (64, 2, 4, 128)
    assert (cfg.num_frames, cfg.image_size, cfg.tubelet, cfg.num_classes) == (8, (32, 32), (2, 8, 8), 5)
    assert cfg.gelu_approximation == "tanh" and cfg.layer_norm_eps == 1e-6 and cfg.qkv_bias
    assert hf.config_from_hf(VivitConfig(**SMALL, hidden_act="gelu")).gelu_approximation == "none"


@torch.no_grad()
def test_vivit_model_without_head_and_with_pooler():
    ref = hf_model(VivitModel)
    model, report = hf.load_hf(ref)
    assert model.config.num_classes == 0
    assert report.unexpected == ["pooler.dense.bias", "pooler.dense.weight"]
    x = pixels()
    hidden = ref(pixel_values=x).last_hidden_state[:, 0]
    assert torch.allclose(model(x.transpose(1, 2)), hidden, atol=1e-5, rtol=0)


@pytest.mark.parametrize("safe", [True, False])
@torch.no_grad()
def test_from_downloaded_folder(tmp_path, safe):
    ref = hf_model()
    ref.save_pretrained(tmp_path, safe_serialization=safe)
    if not safe:  # the Hub's pickled layout: pytorch_model.bin, read with weights_only=True
        torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
        (tmp_path / "model.safetensors").unlink(missing_ok=True)
    model = hf.from_hf(tmp_path)
    x = pixels()
    assert torch.allclose(model(x.transpose(1, 2)), ref(pixel_values=x).logits, atol=1e-5, rtol=0)


@torch.no_grad()
def test_other_frame_counts_and_sizes_where_hf_fails():
    ref = hf_model()
    with pytest.raises(RuntimeError, match="must match"):  # HF's ViViT fails at another size, interpolation or not
        ref(pixel_values=pixels(12, 48), interpolate_pos_encoding=True)
    model = hf.from_hf(ref, dynamic_size=True)
    for frames, size in [(4, 32), (12, 32), (8, 48), (12, 48)]:
        out = model(pixels(frames, size).transpose(1, 2))
        assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_foreign_keys_raise():
    sd = dict(hf_model().state_dict())
    sd["vivit.layers.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(VivitError, match="layers.0.extra.weight"):
        hf.load_hf(sd, config=VivitConfig(**SMALL))


def test_image_vit_config_is_refused():
    with pytest.raises(ConfigError, match="model_type='vit'"):
        hf.config_from_hf({"model_type": "vit", "hidden_size": 64})


@pytest.mark.parametrize("given", ["folder", "index file"])
@torch.no_grad()
def test_sharded_safetensors_checkpoint(tmp_path, given):
    """transformers' `save_pretrained(max_shard_size=...)`: model.safetensors.index.json + shards."""
    ref = hf_model()
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (tmp_path / "model.safetensors").exists()
    model = hf.from_hf(tmp_path if given == "folder" else tmp_path / "model.safetensors.index.json")
    x = pixels()
    assert torch.allclose(model(x.transpose(1, 2)), ref(pixel_values=x).logits, atol=1e-5, rtol=0)


def bin_shards(folder, ref) -> list[str]:
    """transformers' legacy sharded layout, spelled out: pytorch_model-0000i-of-00002.bin (torch.save state dicts)
    and pytorch_model.bin.index.json {"metadata": {"total_size"}, "weight_map": {tensor: shard}}."""
    ref.config.save_pretrained(folder)
    sd = ref.state_dict()
    keys = list(sd)
    parts = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
             "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
    for name, part in parts.items():
        torch.save({k: sd[k] for k in part}, folder / name)
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in sd.values())},
             "weight_map": {k: name for name, part in parts.items() for k in part}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return list(parts)


@torch.no_grad()
def test_sharded_pytorch_bin_checkpoint(tmp_path):
    ref = hf_model()
    bin_shards(tmp_path, ref)
    x = pixels()
    expected = ref(pixel_values=x).logits
    theirs = VivitForVideoClassification.from_pretrained(tmp_path).eval()  # the fixture is what transformers reads
    assert torch.allclose(theirs(pixel_values=x).logits, expected, atol=1e-6, rtol=0)
    model = hf.from_hf(tmp_path)
    assert torch.allclose(model(x.transpose(1, 2)), expected, atol=1e-5, rtol=0)


def test_a_missing_or_foreign_shard_is_named(tmp_path):
    shards = bin_shards(tmp_path, hf_model())
    (tmp_path / shards[1]).unlink()
    with pytest.raises(FileNotFoundError, match=f"names shard {shards[1]}, which is not in"):
        hf.from_hf(tmp_path)
    index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())
    index["weight_map"]["classifier.bias"] = "../elsewhere.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(VivitError, match="names shard '../elsewhere.bin', not a weights file name beside the index"):
        hf.from_hf(tmp_path)


def test_config_fields_left_out_take_transformers_defaults():
    """A hand-written config.json: transformers fills what it leaves out from VivitConfig's defaults."""
    written = {"model_type": "vivit", "num_frames": 8, "image_size": 32, "tubelet_size": [2, 8, 8]}
    ours = hf.config_from_hf(written)
    theirs = VivitConfig(**{k: v for k, v in written.items() if k != "model_type"})
    assert (ours.width, ours.depth, ours.num_heads, ours.mlp_dim) == (theirs.hidden_size, theirs.num_hidden_layers,
                                                                      theirs.num_attention_heads, theirs.intermediate_size)
    assert (ours.width, ours.depth, ours.num_heads, ours.mlp_dim) == (768, 12, 12, 3072)
    assert (ours.layer_norm_eps, ours.qkv_bias, ours.gelu_approximation) == (theirs.layer_norm_eps, True, "tanh")
    with pytest.raises(ConfigError, match="HF config field num_labels=-2 is not"):
        hf.config_from_hf({**written, "num_labels": -2})


@pytest.mark.parametrize("field, value", [("hidden_size", "64"), ("tubelet_size", [2, 8]), ("hidden_act", "relu"),
                                          ("qkv_bias", "yes"), ("num_frames", None), ("layer_norm_eps", -1),
                                          ("hidden_dropout_prob", 1.5)])
def test_a_bad_config_field_is_one_error_line_naming_it(tmp_path, capsys, field, value):
    from vivit.cli import main

    ref = hf_model()
    ref.save_pretrained(tmp_path / "hf")
    capsys.readouterr()  # transformers' progress bar
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config[field] = value
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"HF config field {field}="):
        hf.config_from_hf(config)
    assert main(["convert", "--from", "hf", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and field in err and "\n" not in err


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
@torch.no_grad()
def test_a_wrapped_hf_state_dict_loads_with_the_prefix_removed(tmp_path, prefix):
    """A VivitForVideoClassification saved from DDP (`module.vivit.embeddings.cls_token`) or torch.compile
    (`_orig_mod.vivit...`): read from a folder and from memory as the plain model, the report says so."""
    ref = hf_model()
    wrapped = {prefix + k: v for k, v in ref.state_dict().items()}
    assert f"{prefix}vivit.embeddings.cls_token" in wrapped and f"{prefix}classifier.weight" in wrapped
    assert f"{prefix}vivit.layers.1.attention.q_proj.weight" in wrapped
    ref.config.save_pretrained(tmp_path)
    torch.save(wrapped, tmp_path / "pytorch_model.bin")
    x = pixels().transpose(1, 2)
    expected = hf.from_hf(ref)(x)
    for src, config in ((tmp_path, None), (wrapped, ref.config)):
        model, report = hf.load_hf(src, config)
        assert report.wrapper_prefix == prefix and torch.equal(model(x), expected)
        assert sorted(report.used) == sorted(ref.state_dict()) and report.unexpected == []
