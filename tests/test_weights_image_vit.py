import json

import numpy as np
import pytest
import torch
from conftest import VARIANTS, tiny_model
from safetensors.torch import save_file
from transformers import ViTConfig, ViTModel

import vivit
from vivit.cli import main
from vivit.errors import ConfigError, VivitError
from vivit.weights import hf, scenic
from vivit.weights.image_vit import config_for_image_vit, init_from_image_vit, read_image_vit

WIDTH, DEPTH, HEADS, MLP, PATCH, SIZE = 32, 2, 4, 64, 8, 16


def image_vit() -> ViTModel:
    """A random HF image ViT with the video model's sizes, LayerNorm eps and tanh GELU."""
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                             intermediate_size=MLP, image_size=SIZE, patch_size=PATCH, layer_norm_eps=1e-6,
                             hidden_act="gelu_pytorch_tanh")).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.2)
    return vit


def timm_layout() -> dict[str, torch.Tensor]:
    """The same image ViT as a timm-layout state dict, with a classifier head timm checkpoints carry."""
    sd, _ = hf.hf_to_timm(image_vit().state_dict())
    return {**sd, "head.weight": torch.randn(10, WIDTH), "head.bias": torch.randn(10)}


def big_vision_npz(path) -> None:
    """The same image ViT written as a big_vision / Google ViT .npz ('/'-joined Flax names)."""
    s = timm_layout()
    flat = {"embedding/kernel": s["patch_embed.proj.weight"].permute(2, 3, 1, 0), "embedding/bias": s["patch_embed.proj.bias"],
            "cls": s["cls_token"], "Transformer/posembed_input/pos_embedding": s["pos_embed"],
            "Transformer/encoder_norm/scale": s["norm.weight"], "Transformer/encoder_norm/bias": s["norm.bias"],
            "head/kernel": s["head.weight"].T, "head/bias": s["head.bias"]}
    ours = {f"encoder.{k}": v for k, v in s.items() if k.startswith("blocks.")}
    for i in range(DEPTH):
        for name, (sub, kind) in scenic.JOINT_BLOCK.items():
            block = f"Transformer/encoderblock_{i}/{sub}"
            flat.update(scenic.layer_to_scenic(ours, f"encoder.blocks.{i}.{name}", block, kind, HEADS))
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def video_model(variant="st", **kw):
    return tiny_model(variant, image_size=SIZE, tubelet=(2, PATCH, PATCH), width=WIDTH, depth=DEPTH,
                      num_heads=HEADS, mlp_dim=MLP, **kw).eval()


@torch.no_grad()
def test_static_video_fe_spatial_cls_equals_image_cls():
    vit = image_vit()
    model = video_model("fe", num_frames=4)
    report = init_from_image_vit(model, vit, tubelet_init="central_frame")
    frame = torch.randn(2, 3, SIZE, SIZE)
    expected = vit(pixel_values=frame).last_hidden_state[:, 0]
    video = frame.unsqueeze(2).repeat(1, 1, 4, 1, 1)
    tokens = model.tokenizer(video)  # (B, n_t, n_s, D)
    for t in range(tokens.shape[1]):
        cls = model.spatial(tokens[:, t], model.spatial.grid)[:, 0]
        assert torch.allclose(cls, expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1
    assert any(k.startswith("temporal.") for k in report.missing) and "head.weight" in report.missing
    assert report.unexpected == ["pooler.dense.bias", "pooler.dense.weight"]


@pytest.mark.parametrize("tubelet_init", ["central_frame", "inflate"])
@torch.no_grad()
def test_static_video_model1_single_tubelet_equals_image_cls(tubelet_init):
    vit = image_vit()
    model = video_model("st", num_frames=2)  # T' = 1 tubelet in time
    init_from_image_vit(model, vit, tubelet_init=tubelet_init)
    frame = torch.randn(2, 3, SIZE, SIZE)
    expected = vit(pixel_values=frame).last_hidden_state[:, 0]
    video = frame.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    got = model.encoder(model.tokenizer(video).flatten(1, 2), (1, 2, 2))[:, 0]
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("tokenizer", ["tubelet", "uniform_frame"])
def test_every_variant_and_tokeniser_from_timm_layout(variant, tokenizer):
    tubelet = (2, PATCH, PATCH) if tokenizer == "tubelet" else (1, PATCH, PATCH)
    model = tiny_model(variant, image_size=SIZE, tubelet=tubelet, tokenizer=tokenizer, width=WIDTH, depth=DEPTH,
                       num_heads=HEADS, mlp_dim=MLP)
    src = timm_layout()
    report = init_from_image_vit(model, src)
    assert report.unexpected == ["head.bias", "head.weight"]
    enc = "spatial" if variant.startswith("fe") else "encoder"
    sd = model.state_dict()
    if variant == "fsa":
        for attn in ("attn_space", "attn_time"):  # official default: image attention copied into both
            assert torch.equal(sd[f"{enc}.blocks.1.{attn}.qkv.weight"], src["blocks.1.attn.qkv.weight"])
        assert torch.equal(sd[f"{enc}.blocks.0.norm_mlp.weight"], src["blocks.0.norm2.weight"])
    else:
        assert torch.equal(sd[f"{enc}.blocks.1.attn.qkv.weight"], src["blocks.1.attn.qkv.weight"])
        assert torch.equal(sd[f"{enc}.blocks.0.mlp.fc2.bias"], src["blocks.0.mlp.fc2.bias"])
    grid = src["pos_embed"][:, 1:]
    pos = sd[f"{enc}.pos_embed"]
    if model.config.classifier == "token":
        assert torch.equal(pos[:, :1], src["pos_embed"][:, :1])
        pos = pos[:, 1:]
    frames = 1 if variant.startswith("fe") else model.config.grid[0]
    assert torch.equal(pos, grid.repeat(1, frames, 1))  # same patch grid: tiled over time, unchanged
    assert torch.isfinite(model(torch.randn(1, 3, 4, SIZE, SIZE))).all()


def test_fsa_zero_temporal_init_is_identity_at_start():
    model = video_model("fsa", num_frames=4)
    init_from_image_vit(model, timm_layout(), fsa_temporal_init="zero")
    block = model.encoder.blocks[0]
    assert block.attn_time.proj.weight.abs().sum() == 0 and block.attn_time.proj.bias.abs().sum() == 0
    x = torch.randn(1, 8, WIDTH)
    assert torch.equal(block.temporal(x, 2), x)


def test_big_vision_npz_equals_timm_and_hf(tmp_path):
    big_vision_npz(tmp_path / "vit.npz")
    models = [video_model("st", num_frames=4) for _ in range(3)]
    sources = (tmp_path / "vit.npz", timm_layout(), image_vit())
    reports = [init_from_image_vit(m, src) for m, src in zip(models, sources, strict=True)]
    assert "head/kernel" in reports[0].unexpected and "Transformer/encoderblock_1/LayerNorm_0/scale" in reports[0].used
    for k, v in models[1].state_dict().items():
        if not k.startswith("head."):
            assert torch.allclose(models[0].state_dict()[k], v, atol=1e-6), k
            assert torch.allclose(models[2].state_dict()[k], v, atol=1e-6), k
    assert read_image_vit(tmp_path / "vit.npz").num_heads == HEADS


def test_safetensors_file_and_resized_grid(tmp_path):
    save_file(timm_layout(), str(tmp_path / "vit.safetensors"))
    model = tiny_model("st", image_size=32, num_frames=4, tubelet=(2, PATCH, PATCH), width=WIDTH, depth=DEPTH,
                       num_heads=HEADS, mlp_dim=MLP)
    for mode in ("bicubic", "bilinear"):
        report = init_from_image_vit(model, tmp_path / "vit.safetensors", pos_interpolation=mode)
        assert report.resampled == {"encoder.pos_embed": [[1, 5, WIDTH], [1, 1 + 2 * 16, WIDTH]]}
    assert torch.isfinite(model(torch.randn(1, 3, 4, 32, 32))).all()


def test_config_for_image_vit():
    image = read_image_vit(image_vit())
    cfg = config_for_image_vit(image, "fe", num_frames=8)
    assert (cfg.width, cfg.depth, cfg.num_heads, cfg.mlp_dim, cfg.image_size, cfg.tubelet) == (
        WIDTH, DEPTH, HEADS, MLP, (SIZE, SIZE), (2, PATCH, PATCH))


def test_mismatches_raise_clear_errors():
    with pytest.raises(VivitError, match="2 blocks"):
        init_from_image_vit(tiny_model("st", image_size=SIZE, tubelet=(2, PATCH, PATCH), width=WIDTH, depth=3,
                                       num_heads=HEADS, mlp_dim=MLP), timm_layout())
    with pytest.raises(VivitError, match="patch_embed.proj.weight"):
        init_from_image_vit(tiny_model("st", image_size=SIZE, tubelet=(2, 4, 4), width=WIDTH, depth=DEPTH,
                                       num_heads=HEADS, mlp_dim=MLP), timm_layout())
    with pytest.raises(VivitError, match="blocks.0.ls1.gamma"):
        init_from_image_vit(video_model("st"), {**timm_layout(), "blocks.0.ls1.gamma": torch.ones(WIDTH)})
    with pytest.raises(VivitError, match="not a recognised image ViT"):
        init_from_image_vit(video_model("st"), {"conv1.weight": torch.ones(3)})
    with pytest.raises(ConfigError, match="fsa_temporal_init"):
        init_from_image_vit(video_model("fsa"), timm_layout(), fsa_temporal_init="half")


def hf_vit(**config) -> ViTModel:
    """A random HF image ViT of the sizes above; tanh GELU and eps 1e-6 unless `config` (ViTConfig fields) says."""
    torch.manual_seed(0)
    base = dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=MLP,
                image_size=SIZE, patch_size=PATCH, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
    vit = ViTModel(ViTConfig(**{**base, **config})).eval()
    with torch.no_grad():
        for name, p in vit.named_parameters():
            p.normal_(1.0 if "layernorm" in name and name.endswith("weight") else 0.0, 0.2)
    return vit


def timm_names(vit: ViTModel) -> dict[str, torch.Tensor]:
    """A transformers 5.x ViTModel's tensors under timm's VisionTransformer names (q/k/v fused into attn.qkv;
    no attn.qkv.bias when the ViT has no q/k/v biases)."""
    s = vit.state_dict()
    sd = {"patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
          "cls_token": s["embeddings.cls_token"], "pos_embed": s["embeddings.position_embeddings"],
          "norm.weight": s["layernorm.weight"], "norm.bias": s["layernorm.bias"]}
    for i in range(DEPTH):
        b, h = f"blocks.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            if f"{h}attention.q_proj.{p}" in s:
                sd[f"{b}attn.qkv.{p}"] = torch.cat([s[f"{h}attention.{n}_proj.{p}"] for n in "qkv"])
            for timm, theirs in (("norm1", "layernorm_before"), ("attn.proj", "attention.o_proj"),
                                 ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                sd[f"{b}{timm}.{p}"] = s[f"{h}{theirs}.{p}"]
    return sd


def one_frame_model(image, **overrides):
    """(model, load report): Model 1 on one frame (tubelet 1 x p x p) built by config_for_image_vit and
    initialised from `image` (timm files do not state the head count: given)."""
    model = vivit.ViViT(config_for_image_vit(image, "st", 1, tubelet=(1, PATCH, PATCH), num_classes=0,
                                             num_heads=HEADS, **overrides)).eval()
    return model, init_from_image_vit(model, image)


@pytest.mark.parametrize("layout", ["hf folder", "timm"])
@torch.no_grad()
def test_image_vit_without_qkv_bias(tmp_path, layout):
    vit = hf_vit(qkv_bias=False)
    assert vit.layers[0].attention.q_proj.bias is None
    vit.save_pretrained(tmp_path / "vit")
    image = read_image_vit(tmp_path / "vit" if layout == "hf folder" else timm_names(vit))
    model, _ = one_frame_model(image)
    assert model.config.qkv_bias is False
    x = torch.randn(2, 3, SIZE, SIZE)
    expected = vit(pixel_values=x).last_hidden_state[:, 0]
    assert torch.allclose(model.forward_features(x.unsqueeze(2)), expected, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="image ViT has qkv_bias=False .*the model qkv_bias=True"):
        init_from_image_vit(vivit.ViViT(model.config.replace(qkv_bias=True)), image)
    with pytest.raises(ConfigError, match="build the model with qkv_bias=False"):
        config_for_image_vit(image, qkv_bias=True)
    with pytest.raises(ConfigError, match="image ViT has qkv_bias=True .*the model qkv_bias=False"):
        init_from_image_vit(video_model("st", qkv_bias=False), timm_layout())


@torch.no_grad()
def test_cli_image_vit_with_one_channel(tmp_path):
    vit = hf_vit(num_channels=1)
    vit.save_pretrained(tmp_path / "vit")
    assert main(["convert", "--from", "image-vit", str(tmp_path / "vit"), str(tmp_path / "out"), "--frames", "2"]) == 0
    model = vivit.load_pretrained(tmp_path / "out")
    assert model.config.in_channels == 1 and model.tokenizer.proj.weight.shape[1] == 1
    x = torch.randn(2, 1, SIZE, SIZE)
    got = model.forward_features(x.unsqueeze(2).repeat(1, 1, 2, 1, 1))  # a static 2-frame video, central frame
    assert torch.allclose(got, vit(pixel_values=x).last_hidden_state[:, 0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_report_says_when_the_source_has_another_gelu_or_eps(tmp_path, capsys):
    """transformers' ViTConfig defaults (erf GELU, eps 1e-12, as google/vit-*-in21k): the ViViT keeps the official
    tanh GELU and eps 1e-6 and says in one line what would match the source."""
    vit = hf_vit(hidden_act="gelu", layer_norm_eps=1e-12)
    vit.save_pretrained(tmp_path / "vit")
    assert main(["convert", "--from", "image-vit", str(tmp_path / "vit"), str(tmp_path / "out"), "--frames", "2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "hidden_act" in line]
    assert len(lines) == 1
    for said in ("hidden_act='gelu'", "layer_norm_eps=1e-12", "uses gelu_approximation='tanh', layer_norm_eps=1e-06",
                 "build it with gelu_approximation='none', layer_norm_eps=1e-12"):
        assert said in lines[0]
    assert vivit.load_pretrained(tmp_path / "out").config.gelu_approximation == "tanh"
    image = read_image_vit(tmp_path / "vit")
    x = torch.randn(2, 3, SIZE, SIZE)
    expected = vit(pixel_values=x).last_hidden_state[:, 0]
    (official, report), (matched, matched_report) = (
        one_frame_model(image), one_frame_model(image, gelu_approximation="none", layer_norm_eps=1e-12))
    assert any("hidden_act" in note for note in report.notes)
    assert not any("hidden_act" in note for note in matched_report.notes)
    assert not torch.allclose(official.forward_features(x.unsqueeze(2)), expected, atol=1e-5, rtol=0)
    assert torch.allclose(matched.forward_features(x.unsqueeze(2)), expected, atol=1e-5, rtol=0)


def test_a_vit_config_without_gelu_or_eps_means_transformers_defaults(tmp_path):
    hf_vit().save_pretrained(tmp_path / "vit")  # tanh GELU and eps 1e-6 stated: nothing to say
    assert not any("hidden_act" in note for note in one_frame_model(read_image_vit(tmp_path / "vit"))[1].notes)
    config = json.loads((tmp_path / "vit" / "config.json").read_text())
    del config["hidden_act"], config["layer_norm_eps"]  # ViTConfig then means erf GELU and eps 1e-12
    (tmp_path / "vit" / "config.json").write_text(json.dumps(config))
    notes = one_frame_model(read_image_vit(tmp_path / "vit"))[1].notes
    assert any("hidden_act='gelu', layer_norm_eps=1e-12" in note for note in notes)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
@torch.no_grad()
def test_a_wrapped_image_vit_state_dict_loads_with_the_prefix_removed(tmp_path, prefix):
    """An image ViT saved from DDP / torch.compile, timm names (`module.blocks.0.attn.qkv.weight`) or HF names
    (`_orig_mod.layers.0.attention.q_proj.weight`): the same video model as from the plain state dict."""
    video = torch.randn(2, 3, 4, SIZE, SIZE)
    for plain, key in ((timm_layout(), "blocks.0.attn.qkv.weight"), (image_vit().state_dict(), "layers.0.attention.q_proj.weight")):
        wrapped = {prefix + k: v for k, v in plain.items()}
        assert prefix + key in wrapped
        save_file(wrapped, str(tmp_path / "vit.safetensors"))
        torch.manual_seed(0)
        reference = video_model("st", num_frames=4)
        init_from_image_vit(reference, plain)
        torch.manual_seed(0)
        model = video_model("st", num_frames=4)
        report = init_from_image_vit(model, tmp_path / "vit.safetensors")
        assert report.wrapper_prefix == prefix and f"wrapper prefix {prefix!r}" in report.summary()
        assert torch.equal(model(video), reference(video))
        assert not any(k.startswith(prefix) for k in report.used + report.unexpected)


@torch.no_grad()
def test_cli_image_vit_to_one_frame_takes_a_one_frame_tubelet(tmp_path, capsys):
    """`--frames 1`: the default 2-frame tubelet cannot fit, so the tubelet embeds 1 frame (the report says
    so) and the model on one frame is the image ViT."""
    vit = hf_vit()
    vit.save_pretrained(tmp_path / "vit")
    assert main(["convert", "--from", "image-vit", str(tmp_path / "vit"), str(tmp_path / "out"), "--frames", "1"]) == 0
    assert f"tubelet (1, {PATCH}, {PATCH}): 1 frame per tubelet" in capsys.readouterr().out
    model = vivit.load_pretrained(tmp_path / "out")
    assert (model.config.num_frames, model.config.tubelet) == (1, (1, PATCH, PATCH))
    x = torch.randn(2, 3, SIZE, SIZE)
    expected = vit(pixel_values=x).last_hidden_state[:, 0]
    assert torch.allclose(model.forward_features(x.unsqueeze(2)), expected, atol=1e-5, rtol=0)


def test_config_for_image_vit_takes_a_tubelet_that_fits_the_frames():
    image = read_image_vit(image_vit())
    assert [config_for_image_vit(image, num_frames=n).tubelet[0] for n in (1, 2, 3, 8)] == [1, 2, 1, 2]
    with pytest.raises(ConfigError, match=r"num_frames=1 does not fit tubelet=\(2, 8, 8\).*tubelet's t to one of \[1\]"):
        config_for_image_vit(image, num_frames=1, tubelet=(2, PATCH, PATCH))  # a tubelet given is kept
