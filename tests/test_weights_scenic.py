import json
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch

import vivit
from vivit.cli import main
from vivit.errors import ConfigError, VivitError
from vivit.weights import scenic

D, H, MLP, K = 16, 2, 32, 5  # width, heads, mlp, classes
T, P, FRAMES, SIZE = 2, 4, 8, 8  # tubelet t, patch, frames, pixels -> grid (4, 2, 2)
NT, NS = FRAMES // T, (SIZE // P) ** 2


def arr(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def ln(rng):
    return {"scale": arr(rng, D), "bias": arr(rng, D)}


def dense(rng, i, o):
    return {"kernel": arr(rng, i, o), "bias": arr(rng, o)}


def mha(rng):
    qkv = {n: {"kernel": arr(rng, D, H, D // H), "bias": arr(rng, H, D // H)} for n in ("query", "key", "value")}
    return {**qkv, "out": {"kernel": arr(rng, H, D // H, D), "bias": arr(rng, D)}}


def joint_block(rng):
    return {"LayerNorm_0": ln(rng), "MultiHeadDotProductAttention_0": mha(rng), "LayerNorm_1": ln(rng),
            "MlpBlock_0": {"Dense_0": dense(rng, D, MLP), "Dense_1": dense(rng, MLP, D)}}


def fsa_block(rng):
    return {"LayerNorm_space": ln(rng), "MultiHeadDotProductAttention_space": mha(rng),
            "LayerNorm_time": ln(rng), "MultiHeadDotProductAttention_time": mha(rng),
            "LayerNorm_mlp": ln(rng), "MlpBlock": {"Dense_0": dense(rng, D, MLP), "Dense_1": dense(rng, MLP, D)}}


def encoder(rng, tokens, depth, block=joint_block):
    tree = {"posembed_input": {"pos_embedding": arr(rng, 1, tokens, D)}, "encoder_norm": ln(rng)}
    tree.update({f"encoderblock_{i}": block(rng) for i in range(depth)})
    return tree


def official_tree(kind: str, size: tuple[int, int] = (SIZE, SIZE), pre_logits: int | None = None) -> dict:
    """A parameter tree with the official names and shapes (REFERENCE.md) for each model kind, for an input
    of `size` (H, W), with a `pre_logits` Dense of that width (official `representation_size`) if given."""
    rng = np.random.default_rng(0)
    ns = (size[0] // P) * (size[1] // P)  # patches per frame
    tree = {"embedding": {"kernel": arr(rng, T, P, P, 3, D), "bias": arr(rng, D)},
            "output_projection": dense(rng, pre_logits or D, K)}
    if pre_logits:
        tree["pre_logits"] = dense(rng, D, pre_logits)
    if kind == "st":
        tree.update(cls=arr(rng, 1, 1, D), Transformer=encoder(rng, 1 + NT * ns, 2))
    elif kind == "st-uniform":
        tree["embedding"]["kernel"] = arr(rng, P, P, 3, D)
        tree.update(cls=arr(rng, 1, 1, D), Transformer=encoder(rng, 1 + FRAMES * ns, 2))
    elif kind == "fdp":
        tree.update(Transformer=encoder(rng, NT * ns, 2))
    elif kind == "fsa":
        tree.update(Transformer=encoder(rng, NT * ns, 2, fsa_block))
    elif kind == "fe":  # temporal depth differs from spatial depth: both are read from the tree
        tree.update(cls_SpatialTransformer=arr(rng, 1, 1, D), cls_TemporalTransformer=arr(rng, 1, 1, D),
                    SpatialTransformer=encoder(rng, 1 + ns, 2), TemporalTransformer=encoder(rng, 1 + NT, 3))
    return tree


KINDS = ["st", "st-uniform", "fdp", "fsa", "fe"]
NO_CLS = ("fdp", "fsa")  # trees without a cls parameter: the classifier is an argument


def load_args(kind: str) -> dict:
    return dict(source_frames=FRAMES, variant="fdp" if kind == "fdp" else None,
                classifier="gap" if kind in NO_CLS else None)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pre_logits", [None, 6])
def test_round_trips_are_identity(kind, pre_logits):
    tree = official_tree(kind, pre_logits=pre_logits)
    model = scenic.from_scenic(tree, **load_args(kind))
    assert model.config.representation_size == pre_logits
    flat, back = scenic.flatten(tree), scenic.flatten(scenic.to_scenic(model))
    assert sorted(flat) == sorted(back) and ("pre_logits/kernel" in back) == bool(pre_logits)
    for k in flat:
        np.testing.assert_array_equal(flat[k], back[k], err_msg=k)
    again = scenic.from_scenic(scenic.to_scenic(model), **{**load_args(kind), "variant": model.config.variant})
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


@pytest.mark.parametrize("kind", KINDS)
def test_inferred_config(kind):
    args = load_args(kind)
    cfg = scenic.config_from_scenic(official_tree(kind), FRAMES, args["variant"], classifier=args["classifier"])
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.num_classes) == (D, 2, H, MLP, K)
    assert cfg.num_frames == FRAMES and cfg.image_size == (SIZE, SIZE)
    assert cfg.variant == {"st-uniform": "st"}.get(kind, kind)
    assert cfg.tubelet == ((1, P, P) if kind == "st-uniform" else (T, P, P))
    assert cfg.classifier == ("token" if kind in ("st", "st-uniform", "fe") else "gap")
    if kind == "fe":
        assert cfg.temporal_depth == 3
    if kind == "fsa":
        assert cfg.fsa_order == "time_space"  # the official default


def test_each_kind_of_layer_lands_where_the_mapping_says():
    tree = official_tree("st")
    sd = scenic.from_scenic(tree, source_frames=FRAMES).state_dict()
    blk, ours = tree["Transformer"]["encoderblock_1"], "encoder.blocks.1"
    # Conv kernel (t, h, w, C, D) -> (D, C, t, h, w)
    assert sd["tokenizer.proj.weight"][7, 2, 1, 3, 0] == tree["embedding"]["kernel"][1, 3, 0, 2, 7]
    # query/key/value (d, H, hd) -> rows h*hd + e of the fused qkv, in q, k, v order
    att, hd = blk["MultiHeadDotProductAttention_0"], D // H
    qkv = sd[f"{ours}.attn.qkv.weight"]
    assert qkv[1 * hd + 3, 5] == att["query"]["kernel"][5, 1, 3]
    assert qkv[D + 0 * hd + 2, 9] == att["key"]["kernel"][9, 0, 2]
    assert qkv[2 * D + 1 * hd + 0, 0] == att["value"]["kernel"][0, 1, 0]
    assert sd[f"{ours}.attn.qkv.bias"][D + 1 * hd + 4] == att["key"]["bias"][1, 4]
    # out (H, hd, d) -> proj.weight[o, h*hd + e]
    assert sd[f"{ours}.attn.proj.weight"][6, 1 * hd + 2] == att["out"]["kernel"][1, 2, 6]
    # Dense kernel (in, out) -> weight (out, in); LayerNorm scale -> weight
    assert sd[f"{ours}.mlp.fc1.weight"][20, 3] == blk["MlpBlock_0"]["Dense_0"]["kernel"][3, 20]
    assert sd[f"{ours}.mlp.fc2.bias"][4] == blk["MlpBlock_0"]["Dense_1"]["bias"][4]
    np.testing.assert_array_equal(sd[f"{ours}.norm2.weight"].numpy(), blk["LayerNorm_1"]["scale"])
    np.testing.assert_array_equal(sd["encoder.norm.bias"].numpy(), tree["Transformer"]["encoder_norm"]["bias"])
    np.testing.assert_array_equal(sd["encoder.cls_token"].numpy(), tree["cls"])
    np.testing.assert_array_equal(sd["encoder.pos_embed"].numpy(), tree["Transformer"]["posembed_input"]["pos_embedding"])
    assert sd["head.weight"][4, 11] == tree["output_projection"]["kernel"][11, 4]


def test_fsa_and_fe_layers_land_where_expected():
    fsa = official_tree("fsa")
    sd = scenic.from_scenic(fsa, source_frames=FRAMES, classifier="gap").state_dict()
    blk = fsa["Transformer"]["encoderblock_0"]
    out_time = blk["MultiHeadDotProductAttention_time"]["out"]["kernel"]  # (H, hd, d)
    assert sd["encoder.blocks.0.attn_time.proj.weight"][3, 9] == out_time[1, 1, 3]
    np.testing.assert_array_equal(sd["encoder.blocks.0.norm_space.weight"].numpy(), blk["LayerNorm_space"]["scale"])
    np.testing.assert_array_equal(sd["encoder.blocks.0.norm_mlp.bias"].numpy(), blk["LayerNorm_mlp"]["bias"])
    assert sd["encoder.blocks.0.mlp.fc1.weight"][1, 2] == blk["MlpBlock"]["Dense_0"]["kernel"][2, 1]
    fe = official_tree("fe")
    sd = scenic.from_scenic(fe, source_frames=FRAMES).state_dict()
    np.testing.assert_array_equal(sd["temporal.cls_token"].numpy(), fe["cls_TemporalTransformer"])
    np.testing.assert_array_equal(sd["spatial.cls_token"].numpy(), fe["cls_SpatialTransformer"])
    np.testing.assert_array_equal(sd["temporal.blocks.2.norm1.weight"].numpy(),
                                  fe["TemporalTransformer"]["encoderblock_2"]["LayerNorm_0"]["scale"])
    assert sd["temporal.pos_embed"].shape == (1, 1 + NT, D) and sd["spatial.pos_embed"].shape == (1, 1 + NS, D)


def test_converted_model_runs_and_adapts():
    model, report = scenic.load_scenic(official_tree("st"), FRAMES, image_size=12, dynamic_size=True)
    assert report.resampled == {"encoder.pos_embed": [[1, 1 + NT * NS, D], [1, 1 + NT * 9, D]]}
    out = model(torch.randn(1, 3, 12, 16, 16))
    assert out.shape == (1, K) and torch.isfinite(out).all()


def _ext(array: np.ndarray) -> msgpack.ExtType:
    """Flax's encoding of an array: ext type 1 holding packb((shape, dtype name, bytes))."""
    return msgpack.ExtType(1, msgpack.packb((list(array.shape), array.dtype.name, array.tobytes())))


def _encode(tree):
    return {k: _encode(v) for k, v in tree.items()} if isinstance(tree, dict) else _ext(np.asarray(tree))


def test_restore_checkpoint_reads_flax_msgpack(tmp_path):
    tree = official_tree("fe")
    state = {"optimizer": {"target": _encode(tree), "state": {"step": _ext(np.array(7))}}, "global_step": 3}
    path = tmp_path / "checkpoint_1000"
    path.write_bytes(msgpack.packb(state))
    restored = scenic.restore_checkpoint(path)
    assert restored["global_step"] == 3
    flat, back = scenic.flatten(tree), scenic.flatten(scenic.params_of(restored))
    assert sorted(flat) == sorted(back) and all(np.array_equal(flat[k], back[k]) for k in flat)
    model = scenic.from_scenic(path, source_frames=FRAMES)
    assert model.config.variant == "fe" and model.config.temporal_depth == 3


def test_restore_bfloat16_and_chunked_arrays(tmp_path):
    values = np.array([1.5, -2.0, 0.25], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    big = np.arange(10, dtype=np.float32)
    chunked = {"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 5},
               "chunks": {"0": _ext(big[:6]), "1": _ext(big[6:])}}
    payload = {"a": msgpack.ExtType(1, msgpack.packb(([3], "bfloat16", bf16.tobytes()))), "b": chunked}
    path = tmp_path / "ckpt"
    path.write_bytes(msgpack.packb(payload))
    restored = scenic.restore_checkpoint(path)
    np.testing.assert_array_equal(restored["a"], values)
    np.testing.assert_array_equal(restored["b"], big.reshape(2, 5))


def test_errors_name_the_problem(tmp_path):
    tree = official_tree("st")
    tree["Transformer"]["encoderblock_0"]["Extra"] = {"kernel": np.zeros((2, 2), np.float32)}
    with pytest.raises(VivitError, match="encoderblock_0/Extra/kernel"):
        scenic.from_scenic(tree, source_frames=FRAMES)
    with pytest.raises(ConfigError, match="source_frames"):
        scenic.from_scenic(official_tree("st"), source_frames=6)
    (tmp_path / "bad").write_bytes(b"\xc1not msgpack")
    with pytest.raises(VivitError, match="msgpack"):
        scenic.restore_checkpoint(tmp_path / "bad")


def test_pre_logits_then_head_equal_a_hand_computation():
    """Official ViViT.__call__: pooled feature -> tanh(pre_logits Dense) -> output_projection Dense."""
    tree = official_tree("st", pre_logits=6)
    model = scenic.from_scenic(tree, source_frames=FRAMES)
    video = torch.randn(2, 3, FRAMES, SIZE, SIZE)
    with torch.no_grad():
        feature = model.forward_features(video).double().numpy()  # the cls token after the encoder norm
        logits, hidden = model(video), model.forward_head(model.forward_features(video), pre_logits=True)
    pre, head = tree["pre_logits"], tree["output_projection"]
    expected_hidden = np.tanh(feature @ pre["kernel"] + pre["bias"])
    np.testing.assert_allclose(hidden.numpy(), expected_hidden, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), expected_hidden @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["st", "fsa", "fe"])
def test_non_square_token_grid_loads_and_runs(kind):
    tree = official_tree(kind, size=(32, 16))  # 8 x 4 patches per frame
    args = {**load_args(kind), "source_size": (32, 16)}
    model = scenic.from_scenic(tree, **args)
    assert model.config.image_size == (32, 16) and model.config.grid == (NT, 8, 4)
    out = model(torch.randn(1, 3, FRAMES, 32, 16))
    assert out.shape == (1, K) and torch.isfinite(out).all()
    flat, back = scenic.flatten(tree), scenic.flatten(scenic.to_scenic(model))
    assert all(np.array_equal(flat[k], back[k]) for k in flat)
    with pytest.raises(ConfigError, match=r"source_size=\(H, W\)"):  # 32 tokens: not square, the frames are right
        scenic.from_scenic(tree, **{**args, "source_size": None})
    with pytest.raises(ConfigError, match="source_size=16"):
        scenic.from_scenic(tree, **{**args, "source_size": 16})


def test_classifier_is_an_argument_and_assumed_with_a_warning():
    tree = official_tree("fdp")
    with pytest.warns(UserWarning, match="assuming classifier='gap'"):
        model, report = scenic.load_scenic(tree, FRAMES, "fdp")
    assert model.config.classifier == "gap" and any("gap" in note for note in report.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said, or a cls token in the tree: nothing is assumed
        gmp = scenic.from_scenic(tree, FRAMES, "fdp", classifier="gmp")
        scenic.from_scenic(official_tree("st"), FRAMES)
    assert gmp.config.classifier == "gmp"
    video = torch.randn(1, 3, FRAMES, SIZE, SIZE)
    assert not torch.allclose(gmp(video), model(video))  # a gap load of a gmp checkpoint is wrong
    with pytest.raises(ConfigError, match="has no cls token"):
        scenic.from_scenic(official_tree("fsa"), FRAMES, classifier="token")
    with pytest.raises(ConfigError, match="has a cls token"):
        scenic.from_scenic(official_tree("fe"), FRAMES, classifier="gap")
    for kind in ("st", "fe"):  # "0": no cls parameter, token 0 is the first patch (first frame for FE's temporal)
        tree = official_tree(kind)
        del tree["cls" if kind == "st" else "cls_SpatialTransformer"]
        tree.pop("cls_TemporalTransformer", None)
        for name in ("Transformer", "SpatialTransformer", "TemporalTransformer"):
            if name in tree:
                pos = tree[name]["posembed_input"]["pos_embedding"]
                tree[name]["posembed_input"]["pos_embedding"] = pos[:, 1:]
        cfg = scenic.from_scenic(tree, FRAMES, classifier="0").config
        assert cfg.classifier == "0" and cfg.num_frames == FRAMES and cfg.image_size == (SIZE, SIZE)


# Logits of the official Scenic ViViT / SpaceTimeViViT on tiny random models (tests/make_scenic_fixtures.py).
OFFICIAL = Path(__file__).parent / "fixtures" / "scenic" / "official_heads.npz"
with np.load(OFFICIAL, allow_pickle=False) as _z:
    OFFICIAL_CASES = json.loads(str(_z["cases"]))


@pytest.mark.parametrize("i", range(len(OFFICIAL_CASES)), ids=[
    f"{c['kind']}-{c['classifier']}-rep{c['representation_size']}-{c['size'][0]}x{c['size'][1]}" for c in OFFICIAL_CASES])
def test_logits_equal_the_official_code(i):
    case = OFFICIAL_CASES[i]
    with np.load(OFFICIAL, allow_pickle=False) as z:
        prefix = f"{i}/params/"
        tree = scenic.unflatten({k.removeprefix(prefix): z[k] for k in z.files if k.startswith(prefix)})
        video, expected = torch.from_numpy(z[f"{i}/x"]).permute(0, 4, 1, 2, 3), z[f"{i}/logits"]  # NTHWC -> NCTHW
    model = scenic.from_scenic(tree, source_frames=video.shape[2], variant="fdp" if case["kind"] == "fdp" else None,
                               classifier=case["classifier"], source_size=tuple(case["size"]))
    assert (model.config.classifier, model.config.representation_size) == (case["classifier"], case["representation_size"])
    with torch.no_grad():
        np.testing.assert_allclose(model(video).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_cli_takes_the_classifier_and_source_size(tmp_path, capsys):
    (tmp_path / "ckpt").write_bytes(msgpack.packb({"params": _encode(official_tree("fdp", size=(32, 16)))}))
    args = ["convert", "--from", "scenic", str(tmp_path / "ckpt"), str(tmp_path / "out"), "--variant", "fdp",
            "--source-frames", str(FRAMES), "--source-size", "32", "16"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([*args, "--classifier", "gsp"]) == 0
    cfg = vivit.load_pretrained(tmp_path / "out").config
    assert (cfg.classifier, cfg.image_size) == ("gsp", (32, 16))
    with pytest.warns(UserWarning, match="assuming classifier='gap'"):
        assert main([*args[:4], str(tmp_path / "out2"), *args[5:]]) == 0
    assert "classifier 'gap' assumed" in capsys.readouterr().out
