"""Image-ViT files in every published layout -> ViViT, with parity against transformers' `ViTModel`.

One random `ViTModel` is written out in each layout by helpers that spell the published names out
(original Google ViT / AugReg .npz, big_vision, Scenic ViT, timm, HF 5.x / 4.x); nothing is imported
from the library's mapping tables. A 1-frame Model 1 (tubelet 1 x p x p) and the factorised encoder's
per-frame spatial encoder must then give ViTModel's cls feature (after its final LayerNorm).
"""

import json
import re

import msgpack
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import ViTConfig, ViTModel

import vivit
from vivit.cli import main
from vivit.errors import VivitError
from vivit.weights.image_vit import config_for_image_vit, init_from_image_vit, read_image_vit

WIDTH, DEPTH, HEADS, MLP, PATCH, SIZE, CLASSES = 32, 2, 2, 64, 8, 32, 10
# Block sub-module names: the original ViT code (pre-Linen module numbering) and Linen (vit_jax, big_vision, Scenic).
PRE_LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
# transformers 5.x ViT block names -> 4.x names.
HF_V4 = {"attention.q_proj": "attention.attention.query", "attention.k_proj": "attention.attention.key",
         "attention.v_proj": "attention.attention.value", "attention.o_proj": "attention.output.dense",
         "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
         "layernorm_before": "layernorm_before", "layernorm_after": "layernorm_after"}


def vit_model() -> ViTModel:
    """A random image ViT (tanh GELU and eps 1e-6, as the official ViT and ViViT defaults)."""
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS,
                             intermediate_size=MLP, image_size=SIZE, patch_size=PATCH, layer_norm_eps=1e-6,
                             hidden_act="gelu_pytorch_tanh")).eval()
    with torch.no_grad():
        for name, p in vit.named_parameters():
            p.normal_(1.0 if "layernorm" in name and name.endswith("weight") else 0.0, 0.2)
    return vit


VIT = vit_model()
HF = {k: v.detach().clone() for k, v in VIT.state_dict().items()}  # transformers 5.x names
RNG = np.random.default_rng(0)


def a(key: str) -> np.ndarray:
    return HF[key].numpy().astype(np.float32)


def rand(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def flax_vit(names: tuple[str, str, str, str]) -> dict[str, np.ndarray]:
    """The ViT as a '/'-joined Flax tree: Conv kernel (h, w, C, D), q/k/v kernels (D, H, hd), out (H, hd, D)."""
    ln1, attn, ln2, mlp = names
    tree = {"embedding/kernel": a("embeddings.patch_embeddings.projection.weight").transpose(2, 3, 1, 0),
            "embedding/bias": a("embeddings.patch_embeddings.projection.bias"), "cls": a("embeddings.cls_token"),
            "Transformer/posembed_input/pos_embedding": a("embeddings.position_embeddings"),
            "Transformer/encoder_norm/scale": a("layernorm.weight"),
            "Transformer/encoder_norm/bias": a("layernorm.bias")}
    for i in range(DEPTH):
        b, h = f"Transformer/encoderblock_{i}/", f"layers.{i}."
        for flax, hf in ((ln1, "layernorm_before"), (ln2, "layernorm_after")):
            tree[f"{b}{flax}/scale"], tree[f"{b}{flax}/bias"] = a(f"{h}{hf}.weight"), a(f"{h}{hf}.bias")
        for flax, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            tree[f"{b}{attn}/{flax}/kernel"] = a(f"{h}attention.{hf}.weight").T.reshape(WIDTH, HEADS, -1)
            tree[f"{b}{attn}/{flax}/bias"] = a(f"{h}attention.{hf}.bias").reshape(HEADS, -1)
        tree[f"{b}{attn}/out/kernel"] = a(f"{h}attention.o_proj.weight").T.reshape(HEADS, -1, WIDTH)
        tree[f"{b}{attn}/out/bias"] = a(f"{h}attention.o_proj.bias")
        for j in (0, 1):
            tree[f"{b}{mlp}/Dense_{j}/kernel"] = a(f"{h}mlp.fc{j + 1}.weight").T
            tree[f"{b}{mlp}/Dense_{j}/bias"] = a(f"{h}mlp.fc{j + 1}.bias")
    return tree


def dense(name: str, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    return {f"{name}/kernel": rand(d_in, d_out), f"{name}/bias": rand(d_out)}


def map_head() -> dict[str, np.ndarray]:
    """big_vision `MAPHead`: a probe attending over the tokens, LayerNorm, MLP."""
    tree = {"MAPHead_0/probe": rand(1, 1, WIDTH), "MAPHead_0/LayerNorm_0/scale": rand(WIDTH),
            "MAPHead_0/LayerNorm_0/bias": rand(WIDTH), "MAPHead_0/MultiHeadDotProductAttention_0/out/kernel":
            rand(HEADS, WIDTH // HEADS, WIDTH), "MAPHead_0/MultiHeadDotProductAttention_0/out/bias": rand(WIDTH),
            **dense("MAPHead_0/MlpBlock_0/Dense_0", WIDTH, MLP), **dense("MAPHead_0/MlpBlock_0/Dense_1", MLP, WIDTH)}
    for n in ("query", "key", "value"):
        tree[f"MAPHead_0/MultiHeadDotProductAttention_0/{n}/kernel"] = rand(WIDTH, HEADS, WIDTH // HEADS)
        tree[f"MAPHead_0/MultiHeadDotProductAttention_0/{n}/bias"] = rand(HEADS, WIDTH // HEADS)
    return tree


def original_npz(prefix: str = "") -> dict[str, np.ndarray]:
    """ViT-B_16.npz / AugReg: pre-Linen names, `pre_logits` and `head`."""
    tree = {**flax_vit(PRE_LINEN), **dense("pre_logits", WIDTH, WIDTH), **dense("head", WIDTH, CLASSES)}
    return {prefix + k: v for k, v in tree.items()}


def big_vision(pool: str = "tok", scan: bool = False) -> dict[str, np.ndarray]:
    """big_vision `vit.py`: pos_embedding added to the patches before cls is prepended (so the cls
    parameter here is HF's cls + its positional entry: the same function); `gap` / `map` have no cls."""
    tree = flax_vit(LINEN)
    pos = tree.pop("Transformer/posembed_input/pos_embedding")
    tree["pos_embedding"] = pos[:, 1:]
    if pool == "tok":
        tree["cls"] = tree["cls"] + pos[:, :1]
    else:
        del tree["cls"]
        tree.update(map_head())
    if scan:  # nn.scan: one `encoderblock` with the layer index as leading axis
        for key in [k for k in tree if k.startswith("Transformer/encoderblock_0/")]:
            rest = key.removeprefix("Transformer/encoderblock_0/")
            layers = [tree.pop(f"Transformer/encoderblock_{i}/{rest}") for i in range(DEPTH)]
            tree[f"Transformer/encoderblock/{rest}"] = np.stack(layers)
    tree.update(dense("head", WIDTH, CLASSES))
    return {f"params/{k}": v for k, v in tree.items()}


def big_vision_2021() -> dict[str, np.ndarray]:
    """big_vision before 2022: `Transformer/pos_embedding` over [cls] + patches (cls concatenated first)."""
    tree = flax_vit(LINEN)
    tree["Transformer/pos_embedding"] = tree.pop("Transformer/posembed_input/pos_embedding")
    return {f"params/{k}": v for k, v in {**tree, **dense("head", WIDTH, CLASSES)}.items()}


def scenic_vit() -> dict[str, np.ndarray]:
    """Scenic `baselines/vit.py` ViT: Linen names, `output_projection` head."""
    return {**flax_vit(LINEN), **dense("output_projection", WIDTH, CLASSES)}


def nest(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def flax_msgpack(tree: dict) -> bytes:
    """As flax `serialization.msgpack_serialize`: arrays are ext type 1 = packb((shape, dtype name, C bytes))."""
    def ext(x):
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes("C")), use_bin_type=True))
        raise TypeError(type(x))

    return msgpack.packb(tree, default=ext, strict_types=True)


def scenic_train_state(kind: str) -> dict:
    """Scenic TrainState: legacy flax.optim (`optimizer/target`) or optax (`params` beside `opt_state`)."""
    params = nest(scenic_vit())
    rng = np.array([0, 42], dtype=np.uint32)
    if kind == "optimizer":
        return {"global_step": 7, "optimizer": {"target": params, "state": {"step": np.array(7)}}, "rng": rng}
    return {"global_step": 7, "params": params, "opt_state": {"0": {"mu": nest(scenic_vit())}}, "rng": rng}


def timm_state() -> dict[str, torch.Tensor]:
    """timm `VisionTransformer` state dict: fused qkv, `head`."""
    sd = {"patch_embed.proj.weight": HF["embeddings.patch_embeddings.projection.weight"],
          "patch_embed.proj.bias": HF["embeddings.patch_embeddings.projection.bias"],
          "cls_token": HF["embeddings.cls_token"], "pos_embed": HF["embeddings.position_embeddings"],
          "norm.weight": HF["layernorm.weight"], "norm.bias": HF["layernorm.bias"],
          "head.weight": torch.randn(CLASSES, WIDTH), "head.bias": torch.randn(CLASSES)}
    for i in range(DEPTH):
        b, h = f"blocks.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            sd[f"{b}attn.qkv.{p}"] = torch.cat([HF[f"{h}attention.{n}_proj.{p}"] for n in "qkv"])
            for timm, hf in (("norm1", "layernorm_before"), ("attn.proj", "attention.o_proj"),
                             ("norm2", "layernorm_after"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                sd[f"{b}{timm}.{p}"] = HF[f"{h}{hf}.{p}"]
    return sd


def hf_v4_classifier() -> dict[str, torch.Tensor]:
    """`ViTForImageClassification` with transformers 4.x names: `vit.` prefix, no pooler, `classifier`."""
    sd = {"classifier.weight": torch.randn(CLASSES, WIDTH), "classifier.bias": torch.randn(CLASSES)}
    for key, value in HF.items():
        if m := re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", key):
            key = f"encoder.layer.{m.group(1)}.{HF_V4[m.group(2)]}.{m.group(3)}"
        if not key.startswith("pooler."):
            sd[f"vit.{key}"] = value
    return sd


def npz(path, tree) -> str:
    np.savez(path, **tree)
    return str(path)


def head_keys(tree: dict, prefix: str = "") -> list[str]:
    return sorted(k for k in tree if k.removeprefix(prefix).split("/")[0] in ("head", "pre_logits", "MAPHead_0",
                                                                              "output_projection"))


def sources(tmp_path):
    """layout name -> (source, layout recognised, source keys expected unused)."""
    out = {}
    for name, prefix in (("vit-npz", ""), ("vit-npz opt/target/", "opt/target/"), ("vit-npz params/", "params/")):
        tree = original_npz(prefix)
        out[name] = (npz(tmp_path / f"{len(out)}.npz", tree), "vit-npz", head_keys(tree, prefix))
    linen = {**flax_vit(LINEN), **dense("head", WIDTH, CLASSES)}
    out["linen"] = (npz(tmp_path / "linen.npz", linen), "linen", head_keys(linen))
    linen_params = {f"params/{k}": v for k, v in linen.items()}
    out["linen params/"] = (npz(tmp_path / "linen_params.npz", linen_params), "linen",
                            head_keys(linen_params, "params/"))
    for name, scan in (("big_vision", False), ("big_vision scan", True)):
        tree = big_vision("tok", scan)
        out[name] = (npz(tmp_path / f"{len(out)}.npz", tree), "big_vision", head_keys(tree, "params/"))
    out["big_vision 2021"] = (npz(tmp_path / "bv2021.npz", big_vision_2021()), "big_vision-2021",
                              ["params/head/bias", "params/head/kernel"])
    out["scenic npz"] = (npz(tmp_path / "scenic.npz", scenic_vit()), "scenic", head_keys(scenic_vit()))
    for kind in ("optimizer", "params"):
        state = scenic_train_state(kind)
        (tmp_path / f"checkpoint_{kind}").write_bytes(flax_msgpack(state))
        out[f"scenic msgpack {kind}"] = (str(tmp_path / f"checkpoint_{kind}"), "scenic", head_keys(scenic_vit(), ""))
    save_file(timm_state(), str(tmp_path / "timm.safetensors"))
    out["timm safetensors"] = (str(tmp_path / "timm.safetensors"), "timm", ["head.bias", "head.weight"])
    pooler = ["pooler.dense.bias", "pooler.dense.weight"]
    VIT.save_pretrained(tmp_path / "hf")  # transformers 5.x writes its files with the 4.x names
    out["hf save_pretrained"] = (str(tmp_path / "hf"), "hf-v4", pooler)
    VIT.save_pretrained(tmp_path / "hf sharded", max_shard_size="20KB")  # model.safetensors.index.json + shards
    assert (tmp_path / "hf sharded" / "model.safetensors.index.json").is_file()
    out["hf sharded"] = (str(tmp_path / "hf sharded"), "hf-v4", pooler)
    VIT.save_pretrained(tmp_path / "hf5")
    save_file(HF, str(tmp_path / "hf5" / "model.safetensors"))  # the 5.x in-memory names, config.json beside
    out["hf-v5 folder"] = (str(tmp_path / "hf5"), "hf-v5", pooler)
    out["hf-v5 module"] = (VIT, "hf-v5", pooler)
    out["hf-v4 classifier"] = (hf_v4_classifier(), "hf-v4", ["classifier.bias", "classifier.weight"])
    return out


LAYOUT_CASES = ["vit-npz", "vit-npz opt/target/", "vit-npz params/", "linen", "linen params/", "big_vision",
                "big_vision scan", "big_vision 2021", "scenic npz", "scenic msgpack optimizer", "scenic msgpack params",
                "timm safetensors", "hf save_pretrained", "hf sharded", "hf-v5 folder", "hf-v5 module", "hf-v4 classifier"]


def frames(n: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def video_model(variant: str, num_frames: int = 1, **kw) -> vivit.ViViT:
    kw = dict(num_frames=num_frames, image_size=SIZE, tubelet=(1, PATCH, PATCH), width=WIDTH, depth=DEPTH,
              num_heads=HEADS, mlp_dim=MLP, num_classes=3, temporal_depth=1) | kw
    return vivit.create_model(f"vivit-ti-16x2-{variant}", **kw).eval()


@pytest.mark.parametrize("case", LAYOUT_CASES)
@torch.no_grad()
def test_every_layout_gives_vit_cls_feature(case, tmp_path):
    source, layout, unused = sources(tmp_path)[case]
    image = read_image_vit(source)
    assert image.layout == layout and image.unused == unused
    x = frames(2)
    expected = VIT(pixel_values=x).last_hidden_state[:, 0]
    model1 = video_model("st")
    init_from_image_vit(model1, image, tubelet_init="central_frame")
    got = model1.forward_features(x.unsqueeze(2))  # (B, C, 1, H, W): one frame, the cls token
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()
    fe = video_model("fe", num_frames=2)
    init_from_image_vit(fe, source, tubelet_init="central_frame")
    tokens = fe.tokenizer(x.unsqueeze(0).transpose(1, 2))  # one 2-frame video of both images: (1, 2, n_s, D)
    for t in range(2):
        cls = fe.spatial(tokens[:, t], fe.spatial.grid)[:, 0]
        assert torch.allclose(cls, expected[t:t + 1], atol=1e-5, rtol=0)
    assert expected.std() > 0.1
    if image.num_heads is not None:
        assert image.num_heads == HEADS


@torch.no_grad()
def test_big_vision_gap_map_head_without_cls(tmp_path):
    """No cls token: the patch tokens through ViTModel's own layers are the reference; MAP head unused."""
    tree = big_vision("map")
    image = read_image_vit(npz(tmp_path / "map.npz", tree))
    assert "cls_token" not in image.state and image.state["pos_embed"].shape == (1, 16, WIDTH)
    maps = sorted(k for k in tree if k.startswith("params/MAPHead_0/"))
    assert len(maps) == 15 and set(maps) <= set(image.unused)
    assert image.unused == sorted([*maps, "params/head/bias", "params/head/kernel"])
    model = video_model("st", classifier="gap")
    report = init_from_image_vit(model, image)
    assert set(maps) <= set(report.unexpected)
    x = frames(2)
    h = VIT.embeddings.patch_embeddings(x) + HF["embeddings.position_embeddings"][:, 1:]
    for layer in VIT.layers:
        h = layer(h, None)
    expected = VIT.layernorm(h).mean(dim=1)
    got = model.forward_features(x.unsqueeze(2))
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


def test_unknown_layout_is_one_line_listing_the_layouts():
    for source in ({"conv1.weight": torch.ones(3)},
                   {"embedding/kernel": np.ones((8, 8, 3, WIDTH)), "Encoder/layer_0/attn/kernel": np.ones(3)}):
        with pytest.raises(VivitError) as e:
            read_image_vit(source)
        msg = str(e.value)
        assert "\n" not in msg and "not a recognised image ViT" in msg
        for layout in ("pre-Linen", "big_vision", "Scenic", "Linen", "timm", "transformers 5.x", "transformers 4.x"):
            assert layout in msg


@pytest.mark.parametrize(("tree", "key"), [
    (original_npz("opt/target/"), "opt/target/Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"),
    (big_vision(), "params/embedding/bias"),
    (timm_state(), "blocks.1.mlp.fc2.bias"),
    ({f"vit.{k}": v for k, v in HF.items()}, "vit.layers.0.attention.k_proj.weight"),
])
def test_missing_tensor_of_a_recognised_layout_is_named(tree, key):
    tree = {k: v for k, v in tree.items() if k != key}
    name = key.removeprefix("opt/target/").removeprefix("params/")
    timm_name = {"vit.layers.0.attention.k_proj.weight": "blocks.0.attn.qkv.weight"}.get(key, name)
    with pytest.raises(VivitError, match=re.escape(timm_name)) as e:
        read_image_vit(tree)
    assert "\n" not in str(e.value) and "no tensor" in str(e.value)


def test_head_count_mismatch(tmp_path):
    model = video_model("st", num_heads=4)
    with pytest.raises(VivitError, match="2 attention heads.*num_heads=2"):
        init_from_image_vit(model, original_npz())
    VIT.save_pretrained(tmp_path / "hf")
    with pytest.raises(VivitError, match="2 attention heads"):
        init_from_image_vit(model, tmp_path / "hf")
    with pytest.raises(VivitError, match="2 attention heads"):
        config_for_image_vit(read_image_vit(big_vision()), num_heads=4)
    assert config_for_image_vit(read_image_vit(scenic_vit())).num_heads == HEADS  # width 32: only the tree tells
    init_from_image_vit(model, timm_state())  # timm files do not state a head count


def test_foreign_and_video_tensors_are_refused():
    with pytest.raises(VivitError, match="params/Transformer/encoderblock_0/LayerScale_0/scale"):
        read_image_vit({**big_vision(), "params/Transformer/encoderblock_0/LayerScale_0/scale": rand(WIDTH)})
    video = {**scenic_vit(), "embedding/kernel": rand(2, PATCH, PATCH, 3, WIDTH)}
    hf_video = {**HF, "embeddings.patch_embeddings.projection.weight": torch.randn(WIDTH, 3, 2, PATCH, PATCH)}
    for source in (video, hf_video):
        with pytest.raises(VivitError, match="video checkpoint"):
            read_image_vit(source)


@torch.no_grad()
def test_cli_convert_original_npz(tmp_path, capsys):
    src = npz(tmp_path / "ViT-B_16.npz", original_npz("opt/target/"))
    assert main(["convert", "--from", "image-vit", src, str(tmp_path / "out"), "--frames", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["num_heads"] == HEADS and "opt/target/head/kernel" in out["report"]["unexpected"]
    model = vivit.load_pretrained(tmp_path / "out")  # tubelet 2 x p x p, central frame
    x = frames(2)
    expected = VIT(pixel_values=x).last_hidden_state[:, 0]
    got = model.forward_features(x.unsqueeze(2).repeat(1, 1, 2, 1, 1))
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    (tmp_path / "checkpoint_3").write_bytes(flax_msgpack(scenic_train_state("optimizer")))
    assert main(["convert", "--from", "image-vit", str(tmp_path / "checkpoint_3"), str(tmp_path / "m"),
                 "--frames", "2"]) == 0
    assert "scenic layout" in capsys.readouterr().out


REPR = 24


@pytest.mark.parametrize("layout", ["vit-npz", "timm", "hf"])
def test_image_pre_logits_reach_a_model_with_representation_size(tmp_path, layout):
    """Official init copies the image `pre_logits` Dense when the video model has `representation_size`
    (HF keeps the converted pre-logits as its pooler: tanh(Dense(cls)))."""
    kernel, bias = rand(WIDTH, REPR), rand(REPR)  # Flax Dense kernel is (in, out)
    if layout == "vit-npz":
        tree = {**flax_vit(PRE_LINEN), "pre_logits/kernel": kernel, "pre_logits/bias": bias,
                "head/kernel": rand(REPR, CLASSES), "head/bias": rand(CLASSES)}
        source = tmp_path / "ViT-B_16.npz"
        np.savez(source, **tree)
        names = {"pre_logits/kernel", "pre_logits/bias"}
    elif layout == "timm":
        source = {k: v for k, v in read_image_vit(VIT).state.items() if not k.startswith("pre_logits")}  # timm names
        source.update({"pre_logits.fc.weight": torch.from_numpy(kernel.T.copy()), "pre_logits.fc.bias": torch.from_numpy(bias)})
        names = {"pre_logits.fc.weight", "pre_logits.fc.bias"}
    else:
        source = {**HF, "pooler.dense.weight": torch.from_numpy(kernel.T.copy()), "pooler.dense.bias": torch.from_numpy(bias)}
        names = {"pooler.dense.weight", "pooler.dense.bias"}
    for recipe in ("default", "scenic"):
        model = vivit.create_model("vivit-ti-16x2-st", num_frames=2, image_size=SIZE, tubelet=(2, PATCH, PATCH),
                                   width=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_dim=MLP, num_classes=3,
                                   representation_size=REPR)
        report = init_from_image_vit(model, source, recipe=recipe)
        torch.testing.assert_close(model.pre_logits.weight, torch.from_numpy(kernel.T.copy()), rtol=0, atol=0)
        torch.testing.assert_close(model.pre_logits.bias, torch.from_numpy(bias), rtol=0, atol=0)
        assert names <= set(report.used) and not names & set(report.unexpected)
        assert not any(k.startswith("pre_logits") for k in report.missing)
    plain = vivit.create_model("vivit-ti-16x2-st", num_frames=2, image_size=SIZE, tubelet=(2, PATCH, PATCH),
                               width=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_dim=MLP, num_classes=3)
    report = init_from_image_vit(plain, source)
    assert names <= set(report.unexpected)  # no representation_size: the image pre-logits stay unused
