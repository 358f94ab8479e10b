"""`vivit extract` and `ViViT.forward_intermediates`: stored features are the model's own on the same clips,
a rerun writes nothing twice, a failing write leaves no file, bad videos are listed; block outputs follow
timm's `forward_intermediates` convention for every variant."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_fixtures import untrained_checkpoint
from safetensors import safe_open
from safetensors.torch import load_file

import vivit.engine.extract as extract_module
from vivit import create_model
from vivit.cli import main
from vivit.data.datasets import VideoDataset
from vivit.data.encode import write_video
from vivit.engine.checkpoint import load_model
from vivit.engine.extract import Features, extract
from vivit.errors import ConfigError
from vivit.model.blocks import Block, FactorisedSelfAttentionBlock

TINY = dict(num_classes=3, num_frames=4, image_size=16, width=32, depth=2, num_heads=2, mlp_dim=64,
            tubelet=(2, 8, 8), temporal_depth=2)
VARIANTS = ("vivit-ti-16x2-st", "vivit-ti-16x2-fe", "vivit-ti-16x2-fe-avg", "vivit-ti-16x2-fsa", "vivit-ti-16x2-fdp")


@pytest.mark.parametrize("name", VARIANTS)
def test_forward_intermediates_are_the_block_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY).eval()
    video = torch.randn(2, 3, 4, 16, 16)
    blocks = [m for m in model.modules() if isinstance(m, (Block, FactorisedSelfAttentionBlock))]
    seen = []  # every block's output, by forward hooks, in execution order (Model 2: spatial, then temporal)
    hooks = [b.register_forward_hook(lambda _m, _i, out: seen.append(out)) for b in blocks]
    with torch.no_grad():
        features = model.forward_features(video)
        seen.clear()
        final, raw = model.forward_intermediates(video, output_fmt="NLC", return_prefix_tokens=True)
    for h in hooks:
        h.remove()
    assert model.num_layers() == len(blocks) == len(raw)
    n_t = model.config.grid[0]
    for i, ((tokens, prefix), out) in enumerate(zip(raw, seen)):
        spatial_fe = model.config.variant == "fe" and i < len(model.spatial.blocks)
        if spatial_fe:  # (B * n_t, P + S, D) per frame -> (B, n_t * S, D), time-major
            p = model.spatial.num_prefix
            out_tokens, out_prefix = out[:, p:].reshape(2, -1, out.shape[-1]), out[:, :p].reshape(2, -1, out.shape[-1])
        else:
            p = out.shape[1] - tokens.shape[1]
            out_tokens, out_prefix = out[:, p:], out[:, :p]
        torch.testing.assert_close(tokens, out_tokens)
        torch.testing.assert_close(prefix, out_prefix)
    torch.testing.assert_close(model.pool_output(final), features)
    with torch.no_grad():
        last = model.forward_intermediates(video, indices=1, norm=True, output_fmt="NLC", intermediates_only=True)
        grid = model.forward_intermediates(video, indices=[-1, 0], intermediates_only=True)
    if not (model.config.variant == "fe" and model.temporal is None):  # the baseline's last output: frame means
        torch.testing.assert_close(last[0], final[:, final.shape[1] - last[0].shape[1]:])
    assert grid[0].shape[:3] == (2, 32, n_t)  # NCTHW, sorted (block 0 first) as timm's
    with pytest.raises(ConfigError, match="out of range"):
        model.forward_intermediates(video, indices=[model.num_layers()])


@pytest.fixture
def dataset(tmp_path):
    """data/{a,b}/*.mp4 (8 frames of 16 px) and a broken file in class b."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for name in ("a/0.mp4", "a/1.mp4", "b/0.mp4", "b/sub/1.mp4"):
        write_video(root / name, rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), fps=8, options={"crf": "0"})
    (root / "b" / "broken.mp4").write_bytes(b"not a video")
    return root


@pytest.fixture
def writes(monkeypatch):
    """Paths passed to safetensors' save_file by the extractor."""
    seen = []
    real = extract_module.save_file

    def counting(tensors, path, metadata=None):
        seen.append(path)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(extract_module, "save_file", counting)
    return seen


def test_features_equal_forward_features_and_a_rerun_writes_nothing(dataset, tmp_path, writes):
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")
    out = tmp_path / "features"
    result = extract(dataset, ckpt, out, what=Features(tokens=True, layers=(0,)), views="2x1", quiet=True)
    assert result["written"] == 4 and len(writes) == 4
    assert [f["file"] for f in result["failed"]] == [str(dataset / "b" / "broken.mp4")]
    assert result["failed"][0]["reason"] and json.loads((out / "failed.json").read_text()) == result["failed"]
    model = load_model(ckpt).model
    clips = VideoDataset([(dataset / "b" / "sub" / "1.mp4", 1)], ["a", "b"], train=False, num_frames=8,
                         frame_stride=2, image_size=16, num_clips=2)[0][0]  # the checkpoint's default preprocessing
    stored = load_file(out / "b" / "sub" / "1.mp4.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(stored["features"], model.forward_features(clips))
        final, (layer0,) = model.forward_intermediates(clips, indices=[0], norm=True, output_fmt="NLC")
    torch.testing.assert_close(stored["tokens"], final[:, 1:])
    torch.testing.assert_close(stored["layer.0"], layer0)
    with safe_open(out / "b" / "sub" / "1.mp4.safetensors", "pt") as f:
        meta = json.loads(f.metadata()["vivit"])
    assert meta["label"] == "b" and meta["grids"]["tokens"] == [4, 2, 2] and meta["layers"] == [0]

    files = sorted(out.rglob("*.safetensors"))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    writes.clear()
    again = extract(dataset, ckpt, out, what=Features(tokens=True, layers=(0,)), views="2x1", quiet=True)
    assert writes == [] and again["written"] == 0 and again["already_written"] == 4
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files} == before
    (out / "a" / "1.mp4.safetensors").unlink()  # as if the run had stopped before this video
    assert extract(dataset, ckpt, out, what=Features(tokens=True, layers=(0,)), views="2x1", quiet=True)["written"] == 1
    assert [Path(p).name for p in writes] == ["1.mp4.safetensors.tmp"]
    with pytest.raises(ConfigError, match=r"other settings \(pool: 'model' there, 'mean' now\)"):
        extract(dataset, ckpt, out, what=Features(pool="mean", tokens=True, layers=(0,)), views="2x1", quiet=True)


def test_a_failing_write_leaves_no_file(dataset, tmp_path, monkeypatch):
    def torn(tensors, path, metadata=None):
        open(path, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(extract_module, "save_file", torn)
    with pytest.raises(OSError, match="disk full"):
        extract(dataset, untrained_checkpoint(tmp_path / "ckpt.pt"), tmp_path / "out", quiet=True)
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == ["extract.json"]  # no torn file


def test_shards_with_an_index_match_the_per_video_files(dataset, tmp_path, writes, capsys):
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")
    assert main(["extract", str(dataset), "--model", str(ckpt), "--out", str(tmp_path / "one"), "--quiet",
                 "--workers", "0", "--tokens"]) == 1  # the broken file; one view: cls feature and prefix alike
    assert "broken.mp4" in capsys.readouterr().out
    assert main(["extract", str(dataset), "--model", str(ckpt), "--out", str(tmp_path / "sharded"), "--quiet",
                 "--workers", "0", "--tokens", "--shard-size", "3"]) == 1
    with open(tmp_path / "sharded" / "index.csv", newline="") as f:
        index = list(csv.DictReader(f))
    assert [(r["file"], r["label"], r["shard"], r["offset"]) for r in index] == [
        ("a/0.mp4", "a", "shard-00000.safetensors", "0"), ("a/1.mp4", "a", "shard-00000.safetensors", "1"),
        ("b/0.mp4", "b", "shard-00000.safetensors", "2"), ("b/sub/1.mp4", "b", "shard-00001.safetensors", "0")]
    for row in index:
        shard = load_file(tmp_path / "sharded" / row["shard"])["features"]
        own = load_file(tmp_path / "one" / f"{row['file']}.safetensors")
        torch.testing.assert_close(shard[int(row["offset"]):int(row["offset"]) + 1], own["features"])
        torch.testing.assert_close(own["prefix"][:, 0], own["features"])  # the cls token is the pooled feature
    writes.clear()
    assert main(["extract", str(dataset), "--model", str(ckpt), "--out", str(tmp_path / "sharded"), "--quiet",
                 "--workers", "0", "--tokens", "--shard-size", "3"]) == 1
    assert writes == []


def test_wrong_layers_and_pool_are_one_error_line(dataset, tmp_path, capsys):
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")  # 1 block, a cls token
    assert main(["extract", str(dataset), "--model", str(ckpt), "--out", str(tmp_path / "o"), "--layers", "1"]) == 2
    assert "error: --layers 1 is out of range: this model has 1 blocks" in capsys.readouterr().err
    fsa = tmp_path / "fsa"
    create_model("vivit-ti-16x2-fsa", **TINY).save_pretrained(fsa)  # gap: no cls token
    assert main(["extract", str(dataset), "--model", str(fsa), "--out", str(tmp_path / "o"), "--pool", "cls"]) == 2
    assert "error: --pool cls: this model has no cls token (classifier 'gap')" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything is decoded or written
