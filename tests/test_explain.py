"""`vivit explain`: rollout and relevance on hand-set attention maps (exact), captured attention against a
manual softmax(q k^T / sqrt(E)) from each attention module's input, relevance against autograd through explicit
attention, and the command's files."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import VARIANTS, tiny_model
from engine_fixtures import untrained_checkpoint

from vivit.cli import main
from vivit.data import synthetic
from vivit.data.encode import write_video
from vivit.model.encoders import every_token
from vivit.engine.demo import RECIPE
from vivit.errors import ConfigError, InputShapeError
from vivit.explain import explain_clip
from vivit.explain.attention_capture import capture_attention
from vivit.explain.relevance import relevance_steps
from vivit.explain.rollout import RELEVANCE, ROLLOUT, Step, propagate, token_map
from vivit.model import create_model
from vivit.model.attention import Attention

T, H, W = 2, 2, 2  # token grid of the hand-set cases
S = H * W


def stochastic(*shape):
    return torch.rand(*shape).softmax(dim=-1)


def dense(kind, a):
    """The (T*S, T*S) token mixing of a factorised map, written out entry by entry (time-major tokens)."""
    m = torch.zeros(T * S, T * S)
    for t in range(T):
        for s in range(S):
            for u in range(S if kind == "space" else T):
                if kind == "space":
                    m[t * S + s, t * S + u] = a[t, s, u]
                else:
                    m[t * S + s, u * S + s] = a[s, t, u]
    return m


def product(mixings):
    """M_L ... M_1 of the forward-order list, with M = 0.5 A + 0.5 I."""
    r = torch.eye(mixings[0].shape[0])
    for a in mixings:
        r = (0.5 * a + 0.5 * torch.eye(a.shape[0])) @ r
    return r


# --- rollout on hand-set attentions -------------------------------------------------------------

def uniform_steps(variant):
    n = 1 + T * S
    if variant == "st":
        return {"encoder": [Step("joint", {"joint": torch.full((1, n, n), 1 / n)})] * 2}
    if variant == "fe":
        return {"spatial": [Step("joint", {"joint": torch.full((T, 1 + S, 1 + S), 1 / (1 + S))})] * 2,
                "temporal": [Step("joint", {"joint": torch.full((1, 1 + T, 1 + T), 1 / (1 + T))})] * 2}
    space, time = torch.full((T, S, S), 1 / S), torch.full((S, T, T), 1 / T)
    if variant == "fsa":
        return {"encoder": [Step("space", {"space": space}), Step("time", {"time": time})] * 2}
    return {"encoder": [Step("fdp", {"time": time, "space": space}, (0.5, 0.5))] * 2}


@pytest.mark.parametrize("variant", ["st", "fe", "fsa", "fdp"])
@pytest.mark.parametrize("mixing", [ROLLOUT, RELEVANCE])
def test_uniform_attention_gives_a_uniform_map(variant, mixing):
    prefix = int(variant in ("st", "fe"))  # a cls token, read by the classifier
    starts = {"encoder": torch.eye(1, 1 + T * S) if prefix else torch.full((1, T * S), 1 / (T * S)),
              "spatial": torch.eye(T, 1 + S)[:1].expand(T, 1 + S), "temporal": torch.eye(1, 1 + T)}
    result = token_map(variant, uniform_steps(variant), starts, (T, H, W), prefix, mixing)
    torch.testing.assert_close(result, torch.full((T, H, W), 1 / (T * S)))


def test_layers_attending_only_to_one_token_move_all_mass_there():
    n, j = 1 + T * S, 5
    one_token = torch.zeros(1, n, n)
    one_token[..., j] = 1
    steps = {"encoder": [Step("joint", {"joint": one_token})] * 3}
    cls = token_map("st", steps, {"encoder": torch.eye(1, n)}, (T, H, W), 1)
    assert cls.flatten()[j - 1] == 1 and cls.sum() == 1
    # mean over the output tokens (gap, no cls): (1 - 0.5^L) there, the rest of the mass stays where it was
    to_j = torch.zeros(1, n - 1, n - 1)
    to_j[..., j - 1] = 1
    gap = token_map("st", {"encoder": [Step("joint", {"joint": to_j})] * 3},
                    {"encoder": torch.full((1, n - 1), 1 / (n - 1))}, (T, H, W), 0)
    expected = torch.full((n - 1,), 0.5 ** 3 / (n - 1))
    expected[j - 1] += 1 - 0.5 ** 3
    torch.testing.assert_close(gap.flatten(), expected)


def test_fsa_without_temporal_mixing_is_the_per_frame_spatial_rollout():
    spaces = [stochastic(T, S, S) for _ in range(3)]
    identity = torch.eye(T).expand(S, T, T)  # each frame attends only to itself
    steps = [s for space in spaces for s in (Step("space", {"space": space}), Step("time", {"time": identity}))]
    result = token_map("fsa", {"encoder": steps}, {"encoder": torch.full((1, T * S), 1 / (T * S))}, (T, H, W), 0)
    for t in range(T):  # a ViT's rollout on frame t alone, with its share 1/T of the uniform start
        frame = torch.full((S,), 1 / S) @ product([space[t] for space in spaces])
        torch.testing.assert_close(result[t].flatten(), frame / T)


@pytest.mark.parametrize("order", ["space_time", "time_space"])
def test_fsa_rollout_is_the_product_of_temporal_and_spatial_mixing_in_block_order(order):
    blocks = [(stochastic(T, S, S), stochastic(S, T, T)) for _ in range(2)]
    steps, mixings = [], []
    for space, time in blocks:
        pair = [Step("space", {"space": space}), Step("time", {"time": time})]
        steps += pair if order == "space_time" else pair[::-1]
        mixings += [dense("space", space), dense("time", time)][:: 1 if order == "space_time" else -1]
    start = torch.rand(T * S)
    expected = start @ product(mixings)
    torch.testing.assert_close(propagate(start.reshape(T, S), steps).flatten(), expected)


def test_fdp_rollout_mixes_the_head_groups_by_their_share_of_heads():
    time, space = stochastic(S, T, T), stochastic(T, S, S)
    start = torch.rand(T * S)
    a = 0.25 * dense("time", time) + 0.75 * dense("space", space)  # 1 of 4 heads over time
    result = propagate(start.reshape(T, S), [Step("fdp", {"time": time, "space": space}, (0.25, 0.75))])
    torch.testing.assert_close(result.flatten(), start @ (0.5 * a + 0.5 * torch.eye(T * S)))


def test_relevance_accumulates_r_plus_a_r():
    a1, a2 = torch.rand(1, 5, 5), torch.rand(1, 5, 5)
    steps = [Step("joint", {"joint": a1}), Step("joint", {"joint": a2})]
    start = torch.eye(1, 5)
    expected = start @ (torch.eye(5) + a2[0]) @ (torch.eye(5) + a1[0])  # R_2 = (I + A_2) R_1, R_1 = I + A_1
    torch.testing.assert_close(propagate(start, steps, RELEVANCE), expected)


# --- captured attention on tiny models -----------------------------------------------------------

def manual_attention(module, x, grid):
    """Head means of softmax(q k^T / sqrt(E)) from the module's input x (B, N, D), written out with exp."""
    b, n, d = x.shape
    h = module.num_heads
    q, k, _ = (x @ module.qkv.weight.T + module.qkv.bias).reshape(b, n, 3, h, d // h).unbind(2)  # (B, N, H, E)

    def probs(qh, kh):
        e = torch.exp(qh @ kh.transpose(-1, -2) / (d // h) ** 0.5)
        return e / e.sum(-1, keepdim=True)

    if grid is None or type(module) is Attention:
        return {"joint": sum(probs(q[:, :, i], k[:, :, i]) for i in range(h)) / h}
    t, s = grid  # Model 4: heads [0, h/2) over time at each spatial index, the rest over space in each frame
    qt, kt = (z.reshape(t, s, h, -1) for z in (q[0], k[0]))
    ht = h // 2
    return {"time": sum(probs(qt[:, :, i].transpose(0, 1), kt[:, :, i].transpose(0, 1)) for i in range(ht)) / ht,
            "space": sum(probs(qt[:, :, i], kt[:, :, i]) for i in range(ht, h)) / (h - ht)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_captured_attention_equals_a_manual_softmax_for_every_layer(variant):
    model = tiny_model(variant).eval()
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append((m, args[0], args[1] if len(args) > 1 else None)))
             for m in model.modules() if isinstance(m, Attention)]
    video = torch.randn(1, 3, 4, 16, 16)
    with torch.no_grad(), capture_attention(model) as capture:
        out = model(video)
    for hook in hooks:
        hook.remove()
    steps = [s for name in ("spatial", "temporal", "encoder") for s in capture.steps().get(name, [])]
    assert len(steps) == len(calls) == len(hooks)  # every attention module, once
    for step, (module, x, grid) in zip(steps, calls):
        expected = manual_attention(module, x, grid)
        maps = step.maps if step.kind in ("fdp", "joint") else {"joint": step.maps[step.kind]}
        assert maps.keys() == expected.keys()
        for key in maps:
            torch.testing.assert_close(maps[key], expected[key], atol=1e-6, rtol=1e-5)
    # the forward is the model's own, and the modules have their own attend again afterwards
    torch.testing.assert_close(out, model(video), atol=0, rtol=0)
    assert not any("attend" in vars(m) for m in model.modules())


@pytest.mark.parametrize("variant", VARIANTS)
def test_relevance_equals_autograd_through_explicit_attention(variant):
    model = tiny_model(variant).eval()
    torch.nn.init.normal_(model.head.weight)
    video = torch.randn(1, 3, 4, 16, 16)
    with capture_attention(model, keep_values=True) as capture:
        logits = model(video)[0]
    steps = relevance_steps(capture, logits[1])
    ours = [s for name in ("spatial", "temporal", "encoder") for s in steps.get(name, [])]

    kept = []

    def explicit_sdpa(self, q, k, v):  # each softmax call of attend, with its map kept for the gradient
        a = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        a.retain_grad()
        kept.append((self, a))
        return a @ v

    modules = [m for m in model.modules() if isinstance(m, Attention)]
    for m in modules:
        m.sdpa = explicit_sdpa.__get__(m)
    with every_token(model):  # every query's map, as the capture keeps them
        model(video)[0, 1].backward()
    for m in modules:
        del m.sdpa
    expected = []
    for module, a in kept:
        r = (a.grad * a).clamp(min=0)  # Chefer et al. Eq. 5, before the head mean
        if type(module) is Attention:
            expected.append(r.mean(1))  # (B, H, N, N)
        else:  # Model 4's (1, (h s), t, t) and (1, (h t), s, s) calls; 2 of the 4 heads in each group
            expected.append(r.reshape(2, -1, *r.shape[-2:]).mean(0))
    flat = [m for s in ours for m in ((s.maps["time"], s.maps["space"]) if s.kind == "fdp" else s.maps.values())]
    assert len(flat) == len(expected)
    for got, want in zip(flat, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_explain_clip_maps_every_variant_and_classifier(variant):
    classifiers = ("token", "0", "gap", "gmp", "gsp") if variant.startswith(("st", "fe")) else ("gap", "gmp", "gsp")
    for classifier in classifiers:
        model = tiny_model(variant, classifier=classifier)
        torch.nn.init.normal_(model.head.weight)
        video = torch.randn(1, 3, 4, 16, 16)
        for method in ("rollout", "relevance"):
            result = explain_clip(model, video, method)
            assert result.maps[0].shape == (2, 2, 2) and torch.isclose(result.maps[0].sum(), torch.tensor(1.0))
            assert (result.maps[0] >= 0).all()
            torch.testing.assert_close(result.logits, model(video)[0].detach())
        assert result.targets == [int(result.logits.argmax())]
        assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())
    with pytest.raises(InputShapeError, match="one clip"):
        explain_clip(model, torch.randn(2, 3, 4, 16, 16))
    with pytest.raises(ConfigError, match="method"):
        explain_clip(model, video, "saliency")


def test_multi_head_models_explain_each_split():
    model = tiny_model("st", num_classes=5, class_splits=(3, 2), split_names=("noun", "verb"))
    torch.nn.init.normal_(model.head.weight)
    result = explain_clip(model, torch.randn(1, 3, 4, 16, 16), "relevance")
    assert len(result.maps) == 2
    assert result.targets[0] in range(3) and result.targets[1] in range(3, 5)
    assert result.targets == [int(result.logits[:3].argmax()), 3 + int(result.logits[3:].argmax())]


# --- the command ---------------------------------------------------------------------------------

def test_cli_writes_the_overlay_strip_plot_and_raw_map(tmp_path, capsys):
    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")
    video = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (20, 20, 20, 3), np.uint8), fps=8)
    out = tmp_path / "out"
    assert main(["explain", str(video), "--model", str(ckpt), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "explain.json").read_text(encoding="utf-8"))
    assert printed["grid"] == [4, 2, 2] and printed["frame_indices"] == list(range(2, 17, 2))  # centre 8 of 20, stride 2
    assert set(printed["predictions"]["class"]) == {"label", "probability"}
    (entry,) = printed["explanations"]
    saved = np.load(out / "map.npy")
    np.testing.assert_allclose(saved, entry["map"], atol=1e-6)
    assert saved.shape == (4, 2, 2) and abs(saved.sum() - 1) < 1e-5
    np.testing.assert_allclose(entry["frame_importance"], saved.sum(axis=(1, 2)), atol=1e-5)
    for name in ("overlay.mp4", "strip.png", "temporal.png"):
        assert (out / name).stat().st_size > 0
    with av.open(str(out / "overlay.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape[0] >= 224  # 16-px clip enlarged for viewing

    assert main(["explain", str(video), "--model", str(ckpt), "--out", str(tmp_path / "rel"), "--method", "relevance",
                 "--class", "dark", "--format", "gif"]) == 0
    result = json.loads((tmp_path / "rel" / "explain.json").read_text())
    assert result["explanations"][0]["class"] == "dark" and (tmp_path / "rel" / "overlay.gif").is_file()
    capsys.readouterr()
    assert main(["explain", str(ckpt), str(video), "--out", str(tmp_path / "alias")]) == 0  # MODEL VIDEO
    assert (tmp_path / "alias" / "strip.png").is_file()
    capsys.readouterr()
    assert main(["explain", str(video), "--model", str(ckpt), "--class", "dark"]) == 2
    assert capsys.readouterr().err.startswith("error: --class needs --method relevance")
    assert main(["explain", str(video), "--model", str(ckpt), "--method", "relevance", "--class", "grey"]) == 2
    assert "'grey' is not one of the model's 2 labels (bright, dark)" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert main(["explain", str(broken), "--model", str(ckpt)]) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot decode {broken}")


# --- a trained factorised encoder on the synthetic moving square ----------------------------------

def moving_squares(n, seed, monkeypatch, frames=8, size=32):
    """n clips (n, 3, T, S, S) in [-1, 1] of `synthetic.render` ("direction" task, 2 classes), labels, and
    each clip's square as the pixel coverage (n, T, S, S) the generator draws it with (its `_coverage`)."""
    drawn, coverage = [], synthetic._coverage
    monkeypatch.setattr(synthetic, "_coverage", lambda *a: drawn.append(coverage(*a)) or drawn[-1])
    names, clips, boxes = synthetic.class_names(2, "direction"), [], []
    for i in range(n):
        drawn.clear()
        video = synthetic.render(synthetic.class_directions(names[i % 2]), frames, size,
                                 np.random.default_rng((seed, i)), "direction")
        clips.append(torch.from_numpy(video).permute(3, 0, 1, 2).float() / 127.5 - 1)
        boxes.append(drawn[0][:, :, None] * drawn[1][:, None, :])  # (T, y) x (T, x) of the one square
    monkeypatch.undo()
    return torch.stack(clips), torch.arange(n) % 2, np.stack(boxes)


def mask_tubelets(clip, indices, tubelet):
    """The clip with the given flat token indices' tubelets set to 0 (mid-grey)."""
    clip = clip.clone()
    t, h, w = tubelet
    n_h, n_w = clip.shape[-2] // h, clip.shape[-1] // w
    for index in indices:
        i, j, k = index // (n_h * n_w), index // n_w % n_h, index % n_w
        clip[..., i * t:(i + 1) * t, j * h:(j + 1) * h, k * w:(k + 1) * w] = 0
    return clip


@pytest.mark.slow
def test_a_trained_factorised_encoder_looks_at_the_moving_square(monkeypatch):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train_x, train_y, _ = moving_squares(256, 0, monkeypatch)
    val_x, val_y, boxes = moving_squares(32, 1, monkeypatch)
    # the demo's factorised encoder (2x8x8 tubelets on 32 px), one layer per encoder at width 32
    model = create_model(RECIPE["model"]["name"], num_classes=2, num_frames=8, image_size=32, tubelet=(2, 8, 8),
                         width=32, depth=1, num_heads=2, mlp_dim=64, temporal_depth=1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    for _ in range(8):
        model.train()
        for batch in torch.randperm(len(train_x)).split(32):
            loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        logits = model(val_x)
    assert (logits.argmax(1) == val_y).float().mean() >= 0.7
    tubelet = model.config.tubelet
    for method in ("rollout", "relevance"):
        maps = torch.stack([explain_clip(model, val_x[i:i + 1], method).maps[0] for i in range(len(val_x))])
        per_pixel = maps.repeat_interleave(2, 1).repeat_interleave(8, 2).repeat_interleave(8, 3) / (2 * 8 * 8)
        inside, share = (per_pixel.numpy() * boxes).sum(), boxes.mean(axis=(1, 2, 3)).sum()
        assert inside >= 2 * share, (method, inside / share)
    # deletion: masking the 4 most relevant of 64 tubelets moves the explained logit more than 4 random ones
    rng = np.random.default_rng(0)
    top_drop, random_drop = [], []
    for i, token_map in enumerate(maps):
        c = int(logits[i].argmax())
        with torch.no_grad():
            top = model(mask_tubelets(val_x[i:i + 1], token_map.flatten().topk(4).indices.tolist(), tubelet))[0, c]
            chance = [model(mask_tubelets(val_x[i:i + 1], rng.choice(64, 4, replace=False).tolist(), tubelet))[0, c]
                      for _ in range(4)]
        top_drop.append(abs(float(logits[i, c] - top)))
        random_drop.append(np.mean([abs(float(logits[i, c] - r)) for r in chance]))
    assert np.mean(top_drop) > 1.5 * np.mean(random_drop), (np.mean(top_drop), np.mean(random_drop))


def test_cli_explains_each_split_of_a_multi_head_model(tmp_path):
    from vivit.engine.checkpoint import save_checkpoint

    model = tiny_model("fe", num_frames=8, num_classes=4, class_splits=(2, 2), split_names=("noun", "verb"))
    torch.nn.init.normal_(model.head.weight)
    ckpt = tmp_path / "multi.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": model.config.to_dict(),
                           "classes": ["open", "cup/mug", "open", "pour it"]})
    video = write_video(tmp_path / "clip.mp4", np.random.default_rng(0).integers(0, 255, (20, 16, 16, 3), np.uint8))
    assert main(["explain", str(video), "--model", str(ckpt), "--out", str(tmp_path / "all"), "--method", "relevance"]) == 0
    result = json.loads((tmp_path / "all" / "explain.json").read_text())
    assert list(result["predictions"]) == ["noun", "verb"]
    assert [e["split"] for e in result["explanations"]] == ["noun", "verb"]
    for e in result["explanations"]:
        assert e["class"] == result["predictions"][e["split"]]["label"]
        name = f"{e['split']}-{e['class'].replace('/', '_').replace(' ', '_')}-"
        assert all(Path(f).name.startswith(name) and Path(f).parent == tmp_path / "all" for f in e["files"].values())
    assert main(["explain", str(video), "--model", str(ckpt), "--out", str(tmp_path / "one"), "--method", "relevance",
                 "--class", "verb:open"]) == 0  # "open" is a noun too
    (entry,) = json.loads((tmp_path / "one" / "explain.json").read_text())["explanations"]
    assert (entry["split"], entry["class"]) == ("verb", "open")
