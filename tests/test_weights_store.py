import json
import pickle

import msgpack
import pytest
import torch
from conftest import VARIANTS, tiny_model
from safetensors.torch import save_file
from test_weights_hf import hf_model
from test_weights_image_vit import big_vision_npz
from test_weights_scenic import FRAMES, _encode, official_tree

import vivit
from vivit.cli import main
from vivit.errors import VivitError
from vivit.weights.store import (build, load_pretrained_with_report, load_state_dict, read_state_dict,
                                 strip_wrapper_prefix)


def ckpt_model(variant="st", **kw):
    """A model for 8 frames at 32 px (tubelet 2x8x8 -> grid (4, 4, 4)) with random weights everywhere."""
    model = tiny_model(variant, num_frames=8, image_size=32, tubelet=(2, 8, 8), **kw).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_save_load_round_trip(tmp_path, variant):
    model = ckpt_model(variant)
    model.save_pretrained(tmp_path / "m", labels=["a", "b", "c"])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "labels.txt", "model.safetensors"]
    loaded = vivit.load_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    video = torch.randn(2, 3, 8, 32, 32)
    assert torch.equal(loaded(video), model(video))
    assert vivit.weights.store.load_labels(tmp_path / "m") == ["a", "b", "c"]


def test_a_labels_file_that_is_not_text_is_a_clear_error(tmp_path):
    from vivit.errors import VivitError
    from vivit.textfiles import read_labels

    (tmp_path / "labels.txt").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(VivitError, match="labels.txt is not UTF-8 text"):
        read_labels(tmp_path / "labels.txt")


def test_labels_file_is_utf8(tmp_path):
    """labels.txt is UTF-8 by contract (not the locale's encoding): non-ASCII class names round-trip."""
    names = ["tai chi", "café", "跳舞"]
    ckpt_model("st").save_pretrained(tmp_path / "m", labels=names)
    assert (tmp_path / "m" / "labels.txt").read_bytes() == "".join(f"{n}\n" for n in names).encode("utf-8")
    assert vivit.weights.store.load_labels(tmp_path / "m") == names


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_checkpoint_adapts_to_other_frames_and_sizes(tmp_path, variant):
    model = ckpt_model(variant)
    model.save_pretrained(tmp_path)
    video = torch.randn(1, 3, 8, 32, 32)
    reference = model(video)
    # At the original size the adaptation path changes nothing: load-time (same grid) and on the fly.
    same, report = load_pretrained_with_report(tmp_path, num_frames=8, image_size=32, dynamic_size=True)
    assert report.resampled == {} and torch.equal(same(video), reference)
    # Load-time: pos-embeds resampled to the new grid, reported.
    for frames, size in [(4, 48), (12, 48), (12, 32), (4, 32)]:
        adapted, report = load_pretrained_with_report(tmp_path, num_frames=frames, image_size=size)
        assert report.resampled or (variant == "fe-avg" and size == 32)  # fe-avg has no temporal pos-embed
        out = adapted(torch.randn(1, 3, frames, size, size))
        assert out.shape == (1, 3) and torch.isfinite(out).all()
    # On the fly: the 8x32 model runs other frame counts and sizes.
    for frames, size in [(4, 48), (12, 48), (12, 32)]:
        out = same(torch.randn(1, 3, frames, size, size))
        assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_new_head_when_num_classes_changes(tmp_path):
    ckpt_model().save_pretrained(tmp_path)
    model, report = load_pretrained_with_report(tmp_path, num_classes=7)
    assert report.missing == ["head.weight", "head.bias"] and "num_classes 3 -> 7" in report.notes[0]
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 7)


def test_shape_mismatch_names_key_and_shapes():
    sd = ckpt_model(width=64, num_heads=4).state_dict()
    with pytest.raises(VivitError, match=r"tokenizer.proj.weight: checkpoint \(64, 3, 2, 8, 8\), model \(32, 3, 2, 8, 8\)"):
        load_state_dict(ckpt_model(), sd)
    with pytest.raises(VivitError, match="no counterpart in this model: .*spatial.blocks"):
        load_state_dict(ckpt_model("st"), ckpt_model("fe").state_dict())


WRAPPER_PREFIXES = ["module.", "_orig_mod.", "module._orig_mod."]  # DDP, torch.compile, DDP around a compiled model


@pytest.mark.parametrize("prefix", WRAPPER_PREFIXES)
@torch.no_grad()
def test_a_wrapped_model_state_dict_loads_with_the_prefix_removed(tmp_path, prefix):
    """`torch.save(ddp_model.state_dict())` names every key `module.tokenizer.proj.weight`, a torch.compile'd
    model `_orig_mod.tokenizer.proj.weight`: each loader takes it as the plain model's and says so."""
    model = ckpt_model()
    wrapped = {prefix + k: v for k, v in model.state_dict().items()}
    assert f"{prefix}tokenizer.proj.weight" in wrapped and f"{prefix}encoder.blocks.0.attn.qkv.weight" in wrapped
    assert {f"_orig_mod.{k}" for k in model.state_dict()} == set(torch.compile(model).state_dict())
    torch.save(wrapped, tmp_path / "ddp.pt")
    video = torch.randn(2, 3, 8, 32, 32)
    expected = model(video)
    plain = ckpt_model()
    report = load_state_dict(plain, read_state_dict(tmp_path / "ddp.pt"), "ddp.pt")
    assert report.wrapper_prefix == prefix and f"wrapper prefix {prefix!r}" in report.summary()
    assert sorted(report.used) == sorted(model.state_dict()) and torch.equal(plain(video), expected)
    folder = tmp_path / "folder"  # our format (config.json + model.safetensors) holding the wrapped keys
    model.save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in wrapped.items()}, str(folder / "model.safetensors"))
    loaded, report = load_pretrained_with_report(folder)
    assert report.wrapper_prefix == prefix and torch.equal(loaded(video), expected)
    assert torch.equal(vivit.load_pretrained(folder)(video), expected)
    _, report = build(model.config, wrapped, "ddp", num_classes=7)  # the head filter sees plain names
    assert report.missing == ["head.weight", "head.bias"] and report.wrapper_prefix == prefix


def test_only_a_prefix_every_key_carries_is_removed():
    sd = ckpt_model().state_dict()
    some = {(f"module.{k}" if k.startswith("encoder.") else k): v for k, v in sd.items()}
    assert strip_wrapper_prefix(some) == (some, "")
    assert strip_wrapper_prefix({"module.a": 1, "module.b": 2}) == ({"a": 1, "b": 2}, "module.")
    assert strip_wrapper_prefix({"modules.a": 1}) == ({"modules.a": 1}, "")
    with pytest.raises(VivitError, match="no counterpart in this model: .*'module.encoder"):
        load_state_dict(ckpt_model(), some)


def test_pickles_are_refused_except_weights_only(tmp_path):
    sd = ckpt_model().state_dict()
    torch.save({"state_dict": sd}, tmp_path / "ok.pth")
    assert read_state_dict(tmp_path / "ok.pth").keys() == sd.keys()

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"w": Payload()}, protocol=2))
    with pytest.raises(VivitError, match="weights_only=True"):
        read_state_dict(tmp_path / "evil.bin")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps(sd))
    with pytest.raises(VivitError, match="unknown weights format"):
        read_state_dict(tmp_path / "x.pkl")


@pytest.mark.parametrize("sharded", [False, True], ids=["one file", "sharded"])
def test_cli_convert_hf_folder(tmp_path, capsys, sharded):
    ref = hf_model()
    ref.config.id2label = {i: f"class{i}" for i in range(5)}
    ref.save_pretrained(tmp_path / "hf", **({"max_shard_size": "20KB"} if sharded else {}))
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() == sharded
    assert main(["convert", "--from", "hf", str(tmp_path / "hf"), str(tmp_path / "out"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["report"]
    assert report["unexpected"] == [] and len(report["used"]) == len(ref.state_dict())
    assert vivit.weights.store.load_labels(tmp_path / "out") == [f"class{i}" for i in range(5)]
    x = torch.randn(1, 8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vivit.load_pretrained(tmp_path / "out")(x.transpose(1, 2)), ref(pixel_values=x).logits, atol=1e-5)


def test_cli_convert_scenic_and_image_vit(tmp_path, capsys):
    (tmp_path / "ckpt").write_bytes(msgpack.packb({"optimizer": {"target": _encode(official_tree("fsa"))}}))
    assert main(["convert", "--from", "scenic", str(tmp_path / "ckpt"), str(tmp_path / "a"),
                 "--source-frames", str(FRAMES), "--frames", "4", "--dynamic-size"]) == 0
    assert "resampled encoder.pos_embed" in capsys.readouterr().out
    cfg = vivit.load_pretrained(tmp_path / "a").config
    assert (cfg.variant, cfg.num_frames, cfg.fsa_order, cfg.dynamic_size) == ("fsa", 4, "time_space", True)
    big_vision_npz(tmp_path / "vit.npz")
    names = [f"caf\u00e9 {i}" for i in range(6)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n\n", encoding="utf-8")  # a trailing blank line
    assert main(["convert", "--from", "image-vit", str(tmp_path / "vit.npz"), str(tmp_path / "b"),
                 "--variant", "fe", "--frames", "4", "--classes", "6", "--labels", str(tmp_path / "names.txt"),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["variant"] == "fe" and "head/kernel" in out["report"]["unexpected"]
    assert vivit.weights.store.load_labels(tmp_path / "b") == names
    assert vivit.load_pretrained(tmp_path / "b")(torch.randn(1, 3, 4, 16, 16)).shape == (1, 6)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", "--from", "hf", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("variant", ["st", "fe"])
def test_cli_convert_scenic_missing_tensor_is_one_error_line(tmp_path, capsys, variant):
    """A tree lacking a tensor the converter needs (the config reads some, the conversion the rest)."""
    for missing in ("Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel" if variant == "st" else
                    "SpatialTransformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel",
                    "Transformer/encoder_norm/scale" if variant == "st" else "TemporalTransformer/encoder_norm/bias"):
        tree = official_tree(variant)
        node = tree
        *parents, leaf = missing.split("/")
        for name in parents:
            node = node[name]
        del node[leaf]
        (tmp_path / "ckpt").write_bytes(msgpack.packb({"optimizer": {"target": _encode(tree)}}))
        assert main(["convert", "--from", "scenic", str(tmp_path / "ckpt"), str(tmp_path / "out"),
                     "--source-frames", str(FRAMES)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: {tmp_path / 'ckpt'}: missing tensor {missing}"
