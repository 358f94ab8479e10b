import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import VARIANTS, tiny_model

import vivit
from vivit.errors import InputShapeError
from vivit.model.blocks import Block, FactorisedSelfAttentionBlock
from vivit.model.encoders import every_token
from vivit.model.tokenizers import TubeletEmbedding, UniformFrameSampling
from vivit.profile import count_flops

# Official-structure counts at ViViT-B/16x2, 32x224x224, 400 classes, FE temporal depth 4.
OFFICIAL_PARAMS_M = {"st": 88.97, "fe": 115.09, "fsa": 117.34, "fdp": 88.97, "fe-avg": 86.71}
OFFICIAL_GMACS = {"st": 451.5, "fe": 283.3, "fsa": 371.1, "fdp": 276.2, "fe-avg": 282.9}


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes(variant):
    model = tiny_model(variant)
    video = torch.randn(2, 3, 4, 16, 16)
    assert model(video).shape == (2, 3)
    assert model.forward_features(video).shape == (2, model.num_features)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_count_matches_official_structure(variant):
    with torch.device("meta"):
        model = vivit.create_model(f"vivit-b-16x2-{variant}", num_classes=400, temporal_depth=4)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params_m - OFFICIAL_PARAMS_M[variant]) < 0.05


@pytest.mark.parametrize("variant", VARIANTS)
def test_macs_match_official_structure(variant):
    cfg = vivit.PRESETS[f"vivit-b-16x2-{variant}"]
    gmacs = count_flops(cfg, official=True) / 2e9
    assert abs(gmacs / OFFICIAL_GMACS[variant] - 1) < 0.02
    # a token classifier's last block computes its cls token alone (Model 2: in each frame and in time), so the
    # other queries' q k^T, attention x v, output projection and MLP are not computed
    def skipped(sequences: int, tokens: int, d: int, mlp: int) -> int:
        return sequences * (tokens - 1) * (d * d + 2 * d * mlp + 2 * tokens * d)

    n_t, n_s = cfg.grid[0], cfg.grid[1] * cfg.grid[2]
    saved = {"st": skipped(1, 1 + n_t * n_s, cfg.width, cfg.mlp_dim),
             "fe": skipped(n_t, 1 + n_s, cfg.width, cfg.mlp_dim) + skipped(1, 1 + n_t, cfg.temporal_dim, cfg.temporal_mlp),
             "fe-avg": skipped(n_t, 1 + n_s, cfg.width, cfg.mlp_dim)}.get(variant, 0)  # fsa, fdp: every token
    assert count_flops(cfg) / 2 == pytest.approx(gmacs * 1e9 - saved, rel=1e-4)


@pytest.mark.parametrize("tubelet", [(2, 8, 8), (1, 4, 8), (3, 4, 4)])
def test_tubelet_embedding_is_the_strided_conv3d_of_fig_3(tubelet):
    """The tokeniser's linear on flattened tubes equals PyTorch's Conv3d (kernel = stride = tubelet) on its weight,
    tokens ordered (time, row, column), and its gradients too."""
    torch.manual_seed(0)
    tok = TubeletEmbedding(3, 16, tubelet)
    video = torch.randn(2, 3, 6, 16, 24, requires_grad=True)
    tokens = tok(video)
    conv = F.conv3d(video, tok.proj.weight, tok.proj.bias, stride=tubelet)  # (B, D, n_t, n_h, n_w)
    torch.testing.assert_close(tokens, conv.flatten(3).permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    g = torch.randn_like(tokens)
    ours = torch.autograd.grad(tokens, (video, tok.proj.weight, tok.proj.bias), g)
    reference = torch.autograd.grad(conv, (video, tok.proj.weight, tok.proj.bias), g.permute(0, 3, 1, 2).unflatten(3, conv.shape[3:]))
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("init", ["central_frame", "inflate"])
def test_tubelet_init_on_static_video_equals_2d_patch_embedding(init):
    conv2d = torch.nn.Conv2d(3, 32, kernel_size=8, stride=8)
    tok = TubeletEmbedding(3, 32, (4, 8, 8))
    tok.load_image_kernel(conv2d.weight, conv2d.bias, init)
    frame = torch.randn(2, 3, 16, 16)
    video = frame.unsqueeze(2).expand(-1, -1, 8, -1, -1)
    tokens = tok(video)  # (B, 2, 4, D)
    expected = conv2d(frame).flatten(2).transpose(1, 2)  # (B, 4, D)
    for t in range(tokens.shape[1]):
        torch.testing.assert_close(tokens[:, t], expected, rtol=1e-5, atol=1e-5)


def test_central_frame_uses_only_frame_floor_t_over_2():
    conv2d = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)
    for t in (1, 2, 3, 4):
        tok = TubeletEmbedding(3, 8, (t, 4, 4))
        tok.load_image_kernel(conv2d.weight, conv2d.bias, "central_frame")
        nonzero = [i for i in range(t) if tok.proj.weight[:, :, i].abs().sum() > 0]
        assert nonzero == [t // 2]


def test_uniform_frame_sampling_embeds_each_frame_with_the_2d_kernel():
    conv2d = torch.nn.Conv2d(3, 32, kernel_size=8, stride=8)
    tok = UniformFrameSampling(3, 32, (8, 8))
    tok.load_image_kernel(conv2d.weight, conv2d.bias)
    video = torch.randn(2, 3, 5, 16, 16)
    tokens = tok(video)
    assert tokens.shape == (2, 5, 4, 32)
    torch.testing.assert_close(tokens[:, 3], conv2d(video[:, :, 3]).flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-5)
    model = tiny_model("st", tokenizer="uniform_frame", tubelet=(1, 8, 8))
    assert model(torch.randn(1, 3, 4, 16, 16)).shape == (1, 3)


def _masked_reference(attn, x, t, s):
    """FDP computed as joint attention with masks: temporal heads see the same spatial index,
    spatial heads the same frame."""
    b, n, d = x.shape
    h = attn.num_heads
    q, k, v = attn.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
    frame = torch.arange(n) // s
    place = torch.arange(n) % s
    same_place = place[:, None] == place[None, :]
    same_frame = frame[:, None] == frame[None, :]
    mask = torch.stack([same_place if i < h // 2 else same_frame for i in range(h)])  # (H, N, N)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
    weights = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("heads", [4, 3])
def test_factorised_dot_product_attention_equals_masked_joint_attention(heads):
    model = tiny_model("fdp", num_heads=heads, width=12 * heads // 3, num_frames=6, image_size=24)  # grid (3, 3, 3)
    attn = model.encoder.blocks[0].attn
    t, s = 3, 9
    x = torch.randn(2, t * s, model.config.width)
    torch.testing.assert_close(attn(x, (t, s)), _masked_reference(attn, x, t, s), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_linear_layer_reads_rows_of_one_matrix(variant, batch):
    """A linear layer's input must flatten into one (rows, features) matrix without a copy: otherwise CPU
    bf16 matmul copies the weight once per sequence. At batch 1 the temporal view of factorised
    self-attention was such an input, and its bf16 forward 7x slower, until made contiguous."""
    model = tiny_model(variant, fsa_order="time_space") if variant == "fsa" else tiny_model(variant)
    strided = []

    def check(module, args):
        try:
            args[0].view(-1, args[0].shape[-1])
        except RuntimeError:
            strided.append(name_of[module])

    name_of = {m: n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for module in name_of:
        module.register_forward_pre_hook(check)
    model(torch.randn(batch, 3, 4, 16, 16))
    assert strided == []


@pytest.mark.parametrize("order", ["space_time", "time_space"])
def test_fsa_with_zero_temporal_attention_equals_per_frame_spatial_blocks(order):
    model = tiny_model("fsa", fsa_zero_init_temporal=True, fsa_order=order).eval()
    torch.nn.init.normal_(model.head.weight)
    video = torch.randn(2, 3, 4, 16, 16)
    enc = model.encoder
    # The same computation written as a per-frame ViT: joint-attention blocks built from the spatial parts.
    x = model.tokenizer(video)  # (B, T, S, D)
    x = (x.flatten(1, 2) + enc.pos_embed).unflatten(1, x.shape[1:3]).flatten(0, 1)  # (B*T, S, D)
    for fsa in enc.blocks:
        assert isinstance(fsa, FactorisedSelfAttentionBlock)
        block = Block(32, fsa.attn_space, 64, 0.0, 0.0, 1e-6, "tanh")
        block.norm1, block.norm2, block.mlp = fsa.norm_space, fsa.norm_mlp, fsa.mlp
        x = block(x)
    expected = model.head(enc.norm(x).unflatten(0, (2, 2)).flatten(1, 2).mean(1))
    torch.testing.assert_close(model(video), expected, rtol=1e-5, atol=1e-5)
    # and with temporal attention active the output changes (so the check above is not vacuous)
    torch.nn.init.normal_(enc.blocks[0].attn_time.proj.weight)
    assert not torch.allclose(model(video), expected, atol=1e-4)


def test_factorised_encoder_temporal_stage_sees_one_token_per_time_step():
    model = tiny_model("fe", num_frames=8)  # n_t = 4
    seen = {}
    model.temporal.register_forward_pre_hook(lambda m, args: seen.update(shape=tuple(args[0].shape)))
    model(torch.randn(2, 3, 8, 16, 16))
    assert seen["shape"] == (2, 4, 32)


def test_average_pool_baseline_of_a_static_video_is_the_spatial_cls_of_one_frame():
    model = tiny_model("fe-avg").eval()
    frame = torch.randn(1, 3, 16, 16)
    video = torch.stack([frame] * 4, dim=2)
    per_frame = model.spatial(model.tokenizer(video)[:, 0], (2, 2))[:, 0]  # cls output of frame 0
    torch.testing.assert_close(model.forward_features(video), per_frame, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
    model = tiny_model(variant, fsa_zero_init_temporal=False)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # the official zero head would block the backbone's gradient
    for p in model.parameters():
        if p.ndim and not p.abs().sum():  # zero-initialised biases / cls tokens: give them values too
            torch.nn.init.normal_(p, std=0.02)
    F.cross_entropy(model(torch.randn(2, 3, 4, 16, 16)), torch.tensor([0, 2])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", ["st", "fe", "fsa", "fdp"])
def test_torch_compile_fullgraph_matches_eager(variant):
    model = tiny_model(variant, depth=1, temporal_depth=1).eval()
    torch.nn.init.normal_(model.head.weight)
    video = torch.randn(2, 3, 4, 16, 16)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(video), model(video), rtol=1e-4, atol=1e-4)


def test_wrong_input_shapes_raise_clear_errors():
    model = tiny_model("st")
    with pytest.raises(InputShapeError, match=r"expected a video of shape \(B, 3, 4, 16, 16\).*got \(2, 3, 6, 16, 16\)"):
        model(torch.randn(2, 3, 6, 16, 16))
    with pytest.raises(InputShapeError, match="not divisible by the tubelet"):
        model(torch.randn(2, 3, 5, 16, 16))
    with pytest.raises(InputShapeError, match="B, C, T, H, W"):
        model(torch.randn(3, 4, 16, 16))


@pytest.mark.parametrize("variant", VARIANTS)
def test_dynamic_size_runs_other_frame_counts_and_sizes(variant):
    model = tiny_model(variant, dynamic_size=True).eval()
    video = torch.randn(1, 3, 4, 16, 16)
    reference = model(video)
    for shape in [(1, 3, 8, 16, 16), (1, 3, 2, 24, 32), (1, 3, 6, 8, 8)]:
        assert torch.isfinite(model(torch.randn(shape))).all()
    torch.testing.assert_close(model(video), reference)


def test_dropout_is_inactive_in_eval():
    model = tiny_model("fdp", dropout=0.3, attention_dropout=0.3, drop_path=0.3).eval()
    torch.nn.init.normal_(model.head.weight)
    video = torch.randn(1, 3, 4, 16, 16)
    torch.testing.assert_close(model(video), model(video))
    model.train()
    assert not torch.allclose(model(video), model(video))


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model("fsa")
    torch.nn.init.normal_(model.head.weight)
    video = torch.randn(2, 3, 4, 16, 16)
    model(video).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(video).sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g)


def test_profile_cli_table_prints_ours_next_to_the_papers(capsys):
    from vivit.cli import main

    assert main(["profile", "--table", "--no-latency"]) == 0
    out = capsys.readouterr().out
    for name, gmacs, paper in [("Spatio-temporal", "451.5", "455.2"), ("Average-pool", "282.9", "283.9")]:
        line = next(line for line in out.splitlines() if name in line)
        assert gmacs in line and paper in line
    assert main(["profile", "vivit-ti-16x2-fe", "--frames", "4", "--size", "32", "--iters", "1", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["input_shape"] == [1, 3, 4, 32, 32] and report["macs"] * 2 == report["flops"] > 0
    assert report["latency_ms"] > 0


@pytest.mark.parametrize("variant, classifier", [(v, c) for v in ("st", "fe", "fe-avg") for c in ("token", "0", "gap")]
                         + [("fsa", "gap"), ("fdp", "gap")])
def test_the_last_block_computing_only_the_pooled_token_changes_no_value(variant, classifier):
    """A token classifier reads token 0 alone, so the last block computes only it (`Encoder.forward`'s
    `first`): logits and every gradient equal those of the forward that computes every token."""
    torch.manual_seed(0)
    model = tiny_model(variant, classifier=classifier)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    video = torch.randn(2, 3, 4, 16, 16)

    def logits_and_grads(full: bool):
        model.zero_grad()
        with every_token(model) if full else contextlib.nullcontext():
            logits = model(video)
        logits.square().sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    fast, fast_grads = logits_and_grads(full=False)
    full, full_grads = logits_and_grads(full=True)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-5)
    assert fast.abs().max() > 0.1  # not a vacuous zero head
    for name in full_grads:
        torch.testing.assert_close(fast_grads[name], full_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_last_block_skips_the_unread_tokens():
    """Model 1 with a cls classifier: the last block's MLP sees the cls token alone."""
    model = tiny_model("st", classifier="token").eval()
    seen = []
    model.encoder.blocks[-1].mlp.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    model.encoder.blocks[0].mlp.register_forward_hook(lambda m, a, out: seen.append(out.shape[1]))
    with torch.no_grad():
        model(torch.randn(1, 3, 4, 16, 16))
    assert seen[0] == model.encoder.num_prefix + math.prod(model.config.grid) and seen[1] == 1


def test_stochastic_depth_keeps_the_branch_unscaled_as_the_official_code():
    """The official `Encoder1DBlock` adds `y * (1 - drop)` to the residual: a kept branch is not rescaled;
    `drop_path_rescale=True` is the common DropPath (kept branch / (1 - p))."""
    from vivit.model.blocks import DropPath

    torch.manual_seed(0)
    y = torch.ones(4000, 3)
    official, common = DropPath(0.25).train(), DropPath(0.25, rescale=True).train()
    kept = official(y)
    assert set(kept.unique().tolist()) == {0.0, 1.0} and abs(kept[:, 0].mean().item() - 0.75) < 0.03
    torch.testing.assert_close(common(y).unique(), torch.tensor([0.0, 1.0 / 0.75]))
    model = tiny_model("st", drop_path=0.3)
    assert all(not m.rescale for m in model.modules() if isinstance(m, DropPath))
    assert all(m.rescale for m in tiny_model("fsa", drop_path=0.3, drop_path_rescale=True).modules()
               if isinstance(m, DropPath))
