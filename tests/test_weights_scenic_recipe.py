"""`init_from_image_vit(recipe="scenic")` against the rules of the official Scenic initialisation
(`scenic/projects/vivit/model_utils.py`: `initialise_from_train_state`, `init_posemb`, `init_encoderblock`,
`init_embedding`, `interpolate_positional_embeddings`, `tile_positional_embeddings`,
`interpolate_1d_positional_embeddings`), each checked on tiny hand-made image ViTs.

The image ViTs are timm-layout state dicts whose names are spelled out here. Expected positional
embeddings are computed by a numpy restatement of `init_posemb`, with a hand-written corner-aligned
linear interpolation standing in for `scipy.ndimage.zoom(order=1)` (scipy is not a dependency; the
restatement agrees with scipy 1.17 to 1.2e-7, float32 rounding).
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save_file

import vivit
from vivit.engine.build import initialise
from vivit.engine.config import ModelSection
from vivit.errors import ConfigError, VivitError
from vivit.model import posembed
from vivit.weights import convert, scenic
from vivit.weights.image_vit import init_from_image_vit

D, DEPTH, HEADS, MLP, P = 8, 2, 2, 16, 4  # tiny widths; patch 4
IMAGE_GRID = 3  # the image ViT sees 12x12 images: a 3x3 patch grid


def image_state(grid: int = IMAGE_GRID, cls: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random image ViT in timm names, with an ImageNet head that a video model leaves unused."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    sd = {"patch_embed.proj.weight": rnd(D, 3, P, P), "patch_embed.proj.bias": rnd(D),
          "pos_embed": rnd(1, int(cls) + grid * grid, D), "norm.weight": rnd(D), "norm.bias": rnd(D),
          "head.weight": rnd(5, D), "head.bias": rnd(5)}
    if cls:
        sd["cls_token"] = rnd(1, 1, D)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": rnd(D), b + "norm1.bias": rnd(D),
                   b + "attn.qkv.weight": rnd(3 * D, D), b + "attn.qkv.bias": rnd(3 * D),
                   b + "attn.proj.weight": rnd(D, D), b + "attn.proj.bias": rnd(D),
                   b + "norm2.weight": rnd(D), b + "norm2.bias": rnd(D),
                   b + "mlp.fc1.weight": rnd(MLP, D), b + "mlp.fc1.bias": rnd(MLP),
                   b + "mlp.fc2.weight": rnd(D, MLP), b + "mlp.fc2.bias": rnd(D)})
    return sd


def video_model(variant: str = "st", frames: int = 4, size: int = 12, t: int = 2, **kw) -> vivit.ViViT:
    return tiny_model(variant, num_frames=frames, image_size=size, tubelet=(t, P, P), width=D, depth=DEPTH,
                      num_heads=HEADS, mlp_dim=MLP, temporal_depth=1, **kw)


def encoder_name(variant: str) -> str:
    return "spatial" if variant.startswith("fe") else "encoder"


# --- numpy restatement of the official positional-embedding rules -------------------------------

def aligned_linear(a: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear interpolation to n samples with the end samples aligned (scipy.ndimage.zoom, order=1)."""
    m = a.shape[axis]
    pos = np.arange(n) * ((m - 1) / (n - 1)) if n > 1 else np.zeros(1)
    lo = np.minimum(np.floor(pos).astype(int), m - 1)
    hi = np.minimum(lo + 1, m - 1)
    w = (pos - lo).reshape([n if d == axis else 1 for d in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - w) + np.take(a, hi, axis) * w


def zoom_square(grid: np.ndarray, n_tokens: int) -> np.ndarray:
    """`interpolate_positional_embeddings`: a square (N, D) grid to side int(sqrt(n_tokens))."""
    side, new = int(np.sqrt(len(grid))), int(np.sqrt(n_tokens))
    sq = grid.reshape(side, side, -1)
    return aligned_linear(aligned_linear(sq, new, 0), new, 1).reshape(new * new, -1)


def official_pos(image_pos: np.ndarray, image_cls: bool, own_pos: np.ndarray, target_cls: bool,
                 mode: str, frames: int) -> np.ndarray | None:
    """`init_posemb` for a non-temporal encoder; None where the official result has the wrong length."""
    if image_pos.shape == own_pos.shape:
        return image_pos
    grid = image_pos[0, 1:] if image_cls else image_pos[0]
    cls = (image_pos[:, :1] if image_cls else own_pos[:, :1]) if target_cls else image_pos[:, :0]
    ntok = own_pos.shape[1] - int(target_cls)
    if len(grid) != ntok:
        if mode == "resize":
            grid = zoom_square(grid, ntok)
        else:
            if mode == "resize_tile":
                grid = zoom_square(grid, ntok // frames)
            repeats = int(ntok / len(grid))
            grid = np.concatenate([grid] * repeats, axis=0) if repeats else grid[:0]  # numpy refuses 0 arrays: so does the official
    if len(grid) != ntok:
        return None
    return np.concatenate([cls, grid[None]], axis=1)


# variant, model image size, frames (tubelet t = 2), pos_size_change
POS_CASES = [(v, size, frames, mode)
             for v in ("st", "fe", "fe-avg", "fsa", "fdp")
             for size, frames in ((12, 4), (16, 4), (16, 2), (8, 8), (20, 4))
             for mode in ("tile", "resize", "resize_tile")]


@pytest.mark.parametrize("image_cls", [True, False])
@pytest.mark.parametrize(("variant", "size", "frames", "mode"), POS_CASES)
def test_pos_embed_follows_official_init_posemb(variant, size, frames, mode, image_cls):
    model = video_model(variant, frames, size)
    enc = getattr(model, encoder_name(variant))
    own = enc.pos_embed.detach().clone()
    src = image_state(cls=image_cls)
    expected = official_pos(src["pos_embed"].numpy().astype(np.float64), image_cls, own.numpy().astype(np.float64),
                            enc.cls_token is not None, mode, model.config.grid[0])
    if expected is None:
        with pytest.raises(VivitError, match="the official code fails here too"):
            init_from_image_vit(model, src, recipe="scenic", pos_size_change=mode)
        return
    init_from_image_vit(model, src, recipe="scenic", pos_size_change=mode)
    got = enc.pos_embed.detach().numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-6


def test_pos_embed_cases_cover_every_outcome():
    """The case list above holds resized, tiled, copied and official-failure cases for every mode."""
    outcomes = set()
    for variant, size, frames, mode in POS_CASES:
        model = video_model(variant, frames, size)
        enc = getattr(model, encoder_name(variant))
        src = image_state()["pos_embed"].numpy()
        got = official_pos(src, True, enc.pos_embed.detach().numpy(), enc.cls_token is not None, mode, model.config.grid[0])
        outcomes.add((mode, "fails" if got is None else "same" if got.shape == src.shape else "changed"))
    assert outcomes >= {(m, o) for m in ("tile", "resize", "resize_tile") for o in ("fails", "changed")}


def test_pos_embed_by_hand_model1_tile_and_resize():
    src = image_state()
    pos, cls = src["pos_embed"][:, 1:], src["pos_embed"][:, :1]
    model = video_model("st", frames=6)  # 3 x 3 x 3 tokens: the 3x3 image grid repeated 3 times
    init_from_image_vit(model, src, recipe="scenic", pos_size_change="tile")
    assert torch.equal(model.encoder.pos_embed, torch.cat([cls, pos, pos, pos], dim=1))
    model = video_model("st", frames=2, size=20)  # 1 x 5 x 5: corner-aligned zoom of the 3x3 grid
    init_from_image_vit(model, src, recipe="scenic", pos_size_change="resize")
    got = model.encoder.pos_embed[0, 1:].reshape(5, 5, D)
    sq = pos[0].reshape(3, 3, D)
    assert torch.allclose(got[::2, ::2], sq, atol=1e-6)  # corners and every second sample land on the image grid
    assert torch.allclose(got[1, 0], (sq[0, 0] + sq[1, 0]) / 2, atol=1e-6)
    assert torch.equal(model.encoder.pos_embed[:, :1], cls)


def test_official_resize_quirks_are_reproduced_and_noted():
    """`resize` treats all n_t*h*w tokens as one square; `resize_tile` in FE divides the per-frame tokens
    by the frame count: reproduced as the official code computes them, and said in the report."""
    src = image_state()
    model = video_model("st", frames=8, size=8)  # 4 x 2 x 2 = 16 tokens = a 4x4 "square"
    report = init_from_image_vit(model, src, recipe="scenic", pos_size_change="resize")
    assert torch.allclose(model.encoder.pos_embed[0, 1:],
                          torch.from_numpy(zoom_square(src["pos_embed"][0, 1:].double().numpy(), 16)).float(), atol=1e-6)
    assert any("is not a per-frame resize" in n for n in report.notes)
    model = video_model("fe", frames=4, size=16)  # spatial 4x4 = 16 tokens, 2 frames: resized to 2x2, tiled 4x
    report = init_from_image_vit(model, src, recipe="scenic", pos_size_change="resize_tile")
    two = zoom_square(src["pos_embed"][0, 1:].double().numpy(), 4)
    assert torch.allclose(model.spatial.pos_embed[0, 1:], torch.from_numpy(np.tile(two, (4, 1))).float(), atol=1e-6)
    assert any("is not a per-frame resize" in n for n in report.notes)
    report = init_from_image_vit(video_model("st", frames=4, size=16), src, recipe="scenic")
    assert not any("per-frame" in n for n in report.notes)


# --- tubelet embedding (init_embedding) ----------------------------------------------------------

@pytest.mark.parametrize(("tubelet_init", "t"), [("central_frame", 2), ("central_frame", 3), ("inflate", 2), ("inflate", 3)])
def test_tubelet_kernel_central_frame_and_average_frame(tubelet_init, t):
    src = image_state()
    model = video_model("st", frames=2 * t, t=t)
    init_from_image_vit(model, src, tubelet_init=tubelet_init, recipe="scenic")
    kernel, image = model.tokenizer.proj.weight, src["patch_embed.proj.weight"]  # (D, C, t, h, w), (D, C, h, w)
    for i in range(t):
        if tubelet_init == "inflate":  # average_frame_initializer: the image kernel / t in every slice
            want = image / t
        else:  # central_frame_initializer: the image kernel at t // 2, zeros elsewhere
            want = image if i == t // 2 else torch.zeros_like(image)
        assert torch.allclose(kernel[:, :, i], want, atol=1e-7, rtol=0)
    assert torch.equal(model.tokenizer.proj.bias, src["patch_embed.proj.bias"])


def test_uniform_frame_sampling_copies_the_2d_kernel_and_random_3d_is_refused():
    src = image_state()
    model = video_model("st", frames=2, t=1, tokenizer="uniform_frame")
    init_from_image_vit(model, src, tubelet_init="random", recipe="scenic")  # a 2D embedding: copied
    assert torch.equal(model.tokenizer.proj.weight[:, :, 0], src["patch_embed.proj.weight"])
    with pytest.raises(ConfigError, match="tubelet_init must be"):
        init_from_image_vit(video_model("st"), src, tubelet_init="random", recipe="scenic")


# --- encoder blocks, cls tokens, head (init_encoderblock, initialise_from_train_state) ------------

BLOCK = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")


@pytest.mark.parametrize("variant", ["st", "fdp", "fe", "fe-avg"])
def test_joint_blocks_and_encoder_norm_copied(variant):
    src = image_state()
    model = video_model(variant)
    init_from_image_vit(model, src, recipe="scenic")
    sd, enc = model.state_dict(), encoder_name(variant)
    for i in range(DEPTH):
        for sub in BLOCK:
            for p in ("weight", "bias"):
                assert torch.equal(sd[f"{enc}.blocks.{i}.{sub}.{p}"], src[f"blocks.{i}.{sub}.{p}"])
    assert torch.equal(sd[f"{enc}.norm.weight"], src["norm.weight"]) and torch.equal(sd[f"{enc}.norm.bias"], src["norm.bias"])


def test_model3_layernorm_time_fresh_attention_copied_into_both():
    src = image_state()
    model = video_model("fsa")
    report = init_from_image_vit(model, src, recipe="scenic")
    sd = model.state_dict()
    for i in range(DEPTH):
        b = f"encoder.blocks.{i}."
        for ours, image in (("norm_space", "norm1"), ("attn_space.qkv", "attn.qkv"), ("attn_time.qkv", "attn.qkv"),
                            ("attn_space.proj", "attn.proj"), ("attn_time.proj", "attn.proj"),
                            ("norm_mlp", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            for p in ("weight", "bias"):
                assert torch.equal(sd[f"{b}{ours}.{p}"], src[f"blocks.{i}.{image}.{p}"]), (ours, p)
        assert torch.equal(sd[b + "norm_time.weight"], torch.ones(D))  # LayerNorm_time: scale 1, bias 0
        assert torch.equal(sd[b + "norm_time.bias"], torch.zeros(D))
        assert {b + "norm_time.weight", b + "norm_time.bias"} <= set(report.missing)
    assert "not loaded (kept at init): encoder.blocks.*.norm_time" in report.summary().splitlines()[3]
    with pytest.raises(ConfigError, match="fsa_temporal_init='zero' needs recipe='default'"):
        init_from_image_vit(video_model("fsa"), src, recipe="scenic", fsa_temporal_init="zero")
    default = video_model("fsa")
    init_from_image_vit(default, src)  # ours: the image LayerNorm_0 also feeds the copied temporal attention
    assert torch.equal(default.encoder.blocks[0].norm_time.weight, src["blocks.0.norm1.weight"])


@pytest.mark.parametrize("variant", ["fe", "fe-avg"])
def test_fe_spatial_cls_stays_zero_and_temporal_encoder_fresh(variant):
    src = image_state()
    model = video_model(variant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_image_vit(model, src, recipe="scenic")
    assert torch.equal(model.spatial.cls_token, torch.zeros(1, 1, D))  # cls_SpatialTransformer: zero init
    temporal = [k for k in before if k.startswith("temporal")]
    assert bool(temporal) == (variant == "fe")
    for k in temporal:
        assert torch.equal(model.state_dict()[k], before[k]), k
    assert sorted(report.missing) == sorted(["spatial.cls_token", "head.weight", "head.bias", *temporal])
    default = video_model(variant)
    report = init_from_image_vit(default, src)  # ours: the spatial encoder is the image ViT, cls included
    assert torch.equal(default.spatial.cls_token, src["cls_token"]) and "spatial.cls_token" not in report.missing


def test_model1_cls_copied_head_fresh_and_missing_listed():
    src = image_state()
    model = video_model("st")
    report = init_from_image_vit(model, src, recipe="scenic")
    assert torch.equal(model.encoder.cls_token, src["cls_token"])
    assert torch.equal(model.head.weight, torch.zeros_like(model.head.weight))  # output_projection: not restored
    assert report.missing == ["head.weight", "head.bias"]
    assert report.unexpected == ["head.bias", "head.weight"]


def test_image_without_cls_leaves_cls_and_its_pos_entry_at_init():
    src = image_state(cls=False)  # a gap-pooled image ViT (big_vision style): no cls, no cls position
    model = video_model("st")
    entry = model.encoder.pos_embed[:, :1].detach().clone()
    report = init_from_image_vit(model, src, recipe="scenic")
    assert torch.equal(model.encoder.pos_embed[:, :1], entry)  # official: the target's own posemb[:, :1]
    assert torch.equal(model.encoder.cls_token, torch.zeros(1, 1, D)) and "encoder.cls_token" in report.missing
    assert any("cls entry" in n for n in report.notes)


@pytest.mark.parametrize("variant", ["st", "fe", "fe-avg", "fsa", "fdp"])
@pytest.mark.parametrize("recipe", ["default", "scenic"])
def test_every_tensor_left_at_init_is_listed(variant, recipe):
    model = video_model(variant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_from_image_vit(model, image_state(seed=1), recipe=recipe)
    unchanged = {k for k, v in model.state_dict().items() if torch.equal(v, before[k])}
    assert set(report.missing) == unchanged and "head.weight" in unchanged


# --- Flax layouts: the same rules, and what the official code does not read --------------------

def flax_tree(sd: dict[str, torch.Tensor], layout: str) -> dict[str, np.ndarray]:
    """A timm-named image ViT written with Linen names: `scenic` (Transformer/posembed_input, cls entry
    first, output_projection head) or `big_vision` (params/ prefix, top-level pos_embedding of the patches)."""
    heads, hd = HEADS, D // HEADS
    t = {"embedding/kernel": sd["patch_embed.proj.weight"].permute(2, 3, 1, 0), "embedding/bias": sd["patch_embed.proj.bias"],
         "cls": sd["cls_token"], "Transformer/encoder_norm/scale": sd["norm.weight"],
         "Transformer/encoder_norm/bias": sd["norm.bias"]}
    for i in range(DEPTH):
        b, blk = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        qkv_w, qkv_b = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
        for j, name in enumerate(("query", "key", "value")):
            t[f"{blk}MultiHeadDotProductAttention_0/{name}/kernel"] = qkv_w[j * D:(j + 1) * D].T.reshape(D, heads, hd)
            t[f"{blk}MultiHeadDotProductAttention_0/{name}/bias"] = qkv_b[j * D:(j + 1) * D].reshape(heads, hd)
        t[blk + "MultiHeadDotProductAttention_0/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(heads, hd, D)
        t[blk + "MultiHeadDotProductAttention_0/out/bias"] = sd[b + "attn.proj.bias"]
        for ln, ours in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            t[f"{blk}{ln}/scale"], t[f"{blk}{ln}/bias"] = sd[b + ours + ".weight"], sd[b + ours + ".bias"]
        for dense, ours in (("Dense_0", "mlp.fc1"), ("Dense_1", "mlp.fc2")):
            t[f"{blk}MlpBlock_0/{dense}/kernel"], t[f"{blk}MlpBlock_0/{dense}/bias"] = sd[b + ours + ".weight"].T, sd[b + ours + ".bias"]
    if layout == "scenic":
        t.update({"Transformer/posembed_input/pos_embedding": sd["pos_embed"],
                  "output_projection/kernel": sd["head.weight"].T, "output_projection/bias": sd["head.bias"]})
    else:
        t = {f"params/{k}": v for k, v in t.items()}
        t.update({"params/pos_embedding": sd["pos_embed"][:, 1:], "params/head/kernel": sd["head.weight"].T,
                  "params/head/bias": sd["head.bias"]})
    return {k: v.numpy() for k, v in t.items()}


@pytest.mark.parametrize("variant", ["st", "fe", "fsa"])
def test_scenic_vit_tree_loads_as_the_timm_state(variant):
    src = image_state()
    models = [video_model(variant, size=16) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())  # the same fresh init
    init_from_image_vit(models[0], src, recipe="scenic")
    report = init_from_image_vit(models[1], flax_tree(src, "scenic"), recipe="scenic")
    for k, v in models[0].state_dict().items():
        assert torch.allclose(models[1].state_dict()[k], v, atol=1e-6), k
    assert "output_projection/kernel" in report.unexpected


def test_big_vision_pos_embedding_is_not_restored_by_the_official_code():
    """Official: `pos_embedding` outside Transformer/posembed_input is a top-level key the video model lacks:
    skipped, so the positional embedding stays at its initialisation (ours: restored)."""
    src = image_state()
    model = video_model("st")
    before = model.encoder.pos_embed.detach().clone()
    report = init_from_image_vit(model, flax_tree(src, "big_vision"), recipe="scenic")
    assert torch.equal(model.encoder.pos_embed, before) and "encoder.pos_embed" in report.missing
    assert torch.equal(model.encoder.cls_token, src["cls_token"])  # `cls` is copied by name
    assert torch.equal(model.encoder.blocks[1].attn.proj.weight, src["blocks.1.attn.proj.weight"])
    default = video_model("st")
    init_from_image_vit(default, flax_tree(src, "big_vision"))
    assert torch.equal(default.encoder.pos_embed[:, 1:], src["pos_embed"][:, 1:].repeat(1, 2, 1))


# --- resampling modes, video checkpoints, CLI and training config ----------------------------------

def test_resample_aligned_modes_match_scipy_zoom_order1():
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(1, 2 * 9, D, generator=g)  # (t, h, w) = (2, 3, 3)
    got = posembed.resample(pos, (2, 3, 3), (2, 5, 5), spatial_mode="bilinear_aligned")
    sq = pos[0].reshape(2, 3, 3, D).double().numpy()
    want = aligned_linear(aligned_linear(sq, 5, 1), 5, 2).reshape(1, 50, D)
    assert np.abs(got.numpy() - want).max() < 1e-6
    half_pixel = posembed.resample(pos, (2, 3, 3), (2, 5, 5), spatial_mode="bilinear")
    assert np.abs(half_pixel.numpy() - want).max() > 1e-2  # torch's default bilinear is not the official resize
    seq = torch.randn(1, 1 + 4, D, generator=g)  # FE temporal: cls + 4 frames -> 7
    got = posembed.resample(seq, (4,), (7,), num_prefix=1, temporal_mode="linear_aligned")
    assert torch.equal(got[:, :1], seq[:, :1])
    assert np.abs(got[0, 1:].numpy() - aligned_linear(seq[0, 1:].double().numpy(), 7, 0)).max() < 1e-6


def test_video_checkpoint_frame_change_official_tile(tmp_path):
    model = video_model("st", frames=4, size=8)  # (2, 2, 2) grid
    model.save_pretrained(tmp_path / "m")
    pos = model.encoder.pos_embed.detach()
    tiled = vivit.load_pretrained(tmp_path / "m", num_frames=8, pos_temporal="tile")  # (4, 2, 2)
    assert torch.equal(tiled.encoder.pos_embed, torch.cat([pos, pos[:, 1:]], dim=1))  # the frame sequence twice
    linear = vivit.load_pretrained(tmp_path / "m", num_frames=8)
    assert not torch.equal(linear.encoder.pos_embed, tiled.encoder.pos_embed)
    with pytest.raises(VivitError, match="not a multiple"):
        vivit.load_pretrained(tmp_path / "m", num_frames=6, pos_temporal="tile")
    with pytest.raises(ConfigError, match="pos_temporal"):
        vivit.load_pretrained(tmp_path / "m", pos_temporal="cubic")
    from_tree = scenic.from_scenic(scenic.to_scenic(model), source_frames=4, num_frames=8, pos_temporal="tile")
    assert torch.equal(from_tree.encoder.pos_embed, tiled.encoder.pos_embed)


def test_scenic_fe_checkpoint_frame_change_official_1d_interpolation():
    fe = video_model("fe", frames=8, size=8)  # temporal encoder: cls + 4 frame positions
    pos = fe.temporal.pos_embed.detach()
    model = scenic.from_scenic(scenic.to_scenic(fe), num_frames=14, pos_temporal="linear_aligned")  # 7 positions
    got = model.temporal.pos_embed.detach()
    assert torch.equal(got[:, :1], pos[:, :1])  # the cls position is kept apart
    assert np.abs(got[0, 1:].numpy() - aligned_linear(pos[0, 1:].double().numpy(), 7, 0)).max() < 1e-6
    assert torch.equal(model.spatial.pos_embed, fe.spatial.pos_embed)  # per-frame positions: unchanged


def test_convert_cli_recipe_scenic(tmp_path):
    from transformers import ViTConfig, ViTModel  # an HF folder: its config.json gives the head count

    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=D, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=MLP,
                             image_size=P * IMAGE_GRID, patch_size=P), add_pooling_layer=False)
    with torch.no_grad():
        vit.embeddings.cls_token.normal_()
    vit.save_pretrained(tmp_path / "vit")
    parser = argparse.ArgumentParser()
    convert.configure(parser)
    args = parser.parse_args(["--from", "image-vit", str(tmp_path / "vit"), str(tmp_path / "out"),
                              "--variant", "fe", "--frames", "4", "--size", "16", "--recipe", "scenic",
                              "--pos-size-change", "resize", "--classes", "3"])
    model, report, _ = convert.convert(args)
    assert torch.equal(model.spatial.cls_token, torch.zeros(1, 1, D)) and "spatial.cls_token" in report.missing
    want = zoom_square(vit.embeddings.position_embeddings[0, 1:].detach().double().numpy(), 16)
    assert np.abs(model.spatial.pos_embed[0, 1:].detach().numpy() - want).max() < 1e-6


def test_training_config_init_recipe(tmp_path):
    save_file(image_state(), str(tmp_path / "vit.safetensors"))
    model = video_model("fsa")
    initialise(model, ModelSection(init=str(tmp_path / "vit.safetensors"), init_kind="image_vit", init_recipe="scenic"))
    assert torch.equal(model.encoder.blocks[1].norm_time.weight, torch.ones(D))
    with pytest.raises(ConfigError, match="is an option of recipe='scenic'"):
        initialise(video_model("st"), ModelSection(init=str(tmp_path / "vit.safetensors"), init_kind="image_vit",
                                                   pos_size_change="tile"))


def test_bad_options_name_the_field():
    for kw, field in ((dict(recipe="official"), "recipe"), (dict(pos_size_change="stretch", recipe="scenic"), "pos_size_change"),
                      (dict(pos_interpolation="nearest"), "pos_interpolation")):
        with pytest.raises(ConfigError, match=field):
            init_from_image_vit(video_model("st"), image_state(), **kw)
