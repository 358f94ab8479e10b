"""The official classifiers (token, 0, gap, gmp, gsp) and the pre-logits layer (representation_size).

Official semantics (scenic/projects/vivit/model.py, `ViViT.__call__` and `SpaceTimeViViT.__call__`): `token`
prepends a cls token and takes token 0; `0` prepends nothing and takes token 0 (the first patch token);
`gap` / `gmp` / `gsp` are the mean / max / sum over all tokens. The factorised encoder pools every frame
and then the temporal encoder's output with the same classifier; its average-pool baseline takes the mean
over frames whatever the classifier. An optional `pre_logits` Dense + tanh comes before the head.
"""

import pytest
import torch

from vivit.config import ViViTConfig
from vivit.errors import ConfigError
from vivit.model.vivit import ViViT
from vivit.model.encoders import every_token
from vivit.weights import hf
from vivit.weights.store import load_pretrained, load_pretrained_with_report

TINY = dict(width=16, depth=1, num_heads=2, mlp_dim=32, num_frames=4, image_size=8, tubelet=(2, 4, 4), num_classes=5)
TOKENS = 2 * 2 * 2  # (4/2) x (8/4) x (8/4)
# The classifiers written out by hand from their definitions, on an encoder output z (B, N, D).
HAND = {"token": lambda z: z[:, 0], "0": lambda z: z[:, 0], "gap": lambda z: z.mean(1),
        "gmp": lambda z: z.max(1).values, "gsp": lambda z: z.sum(1)}


def tiny(**overrides) -> ViViT:
    torch.manual_seed(0)
    model = ViViT(ViViTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # the head is zero-initialised: give it weights so that logits tell features apart
        for p in model.head.parameters():
            p.normal_()
    return model


def run_with_outputs(model: ViViT, video: torch.Tensor, names: tuple[str, ...]) -> tuple[torch.Tensor, dict]:
    """Logits, and the (inputs, output) of the named encoders during that forward."""
    seen: dict[str, tuple] = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, (a[0], o))) for n in names]
    with torch.no_grad(), every_token(model):  # the encoders' outputs of all tokens, not only the pooled one
        logits = model(video)
    for h in hooks:
        h.remove()
    return logits, seen


def head(model: ViViT, feature: torch.Tensor) -> torch.Tensor:
    return feature @ model.head.weight.T + model.head.bias


@pytest.mark.parametrize("variant, classifier", [(v, c) for v in ("st", "fsa", "fdp") for c in HAND
                                                 if v == "st" or c not in ("token", "0")])
def test_single_encoder_pooling_is_the_hand_computation(variant, classifier):
    model = tiny(variant=variant, classifier=classifier)
    logits, seen = run_with_outputs(model, torch.randn(2, 3, 4, 8, 8), ("encoder",))
    z = seen["encoder"][1]
    assert z.shape[1] == TOKENS + (classifier == "token")  # "0" has no cls: token 0 is the first patch
    torch.testing.assert_close(logits, head(model, HAND[classifier](z)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classifier", list(HAND))
@pytest.mark.parametrize("temporal_pool", ["transformer", "avg"])
def test_factorised_encoder_pools_frames_then_time_with_the_classifier(classifier, temporal_pool):
    model = tiny(variant="fe", classifier=classifier, temporal_pool=temporal_pool)
    names = ("spatial", "temporal") if temporal_pool == "transformer" else ("spatial",)
    logits, seen = run_with_outputs(model, torch.randn(2, 3, 4, 8, 8), names)
    frames = seen["spatial"][1]  # (B * n_t, [cls +] n_h * n_w, D)
    assert frames.shape[:2] == (2 * 2, 4 + (classifier == "token"))
    per_frame = HAND[classifier](frames).reshape(2, 2, -1)  # (B, n_t, D), batch-major as the input
    if temporal_pool == "avg":  # official spatial_only_baseline: mean over frames, whatever the classifier
        torch.testing.assert_close(logits, head(model, per_frame.mean(1)), rtol=1e-5, atol=1e-5)
        return
    temporal_in, temporal_out = seen["temporal"]
    torch.testing.assert_close(temporal_in, per_frame)
    assert temporal_out.shape[1] == 2 + (classifier == "token")
    torch.testing.assert_close(logits, head(model, HAND[classifier](temporal_out)), rtol=1e-5, atol=1e-5)


def test_factorised_attention_refuses_token_classifiers():
    for variant in ("fsa", "fdp"):
        for classifier in ("token", "0"):
            with pytest.raises(ConfigError, match=f"classifier='{classifier}'"):
                ViViTConfig(**{**TINY, "variant": variant, "classifier": classifier})
    with pytest.raises(ConfigError, match="classifier='max'"):
        ViViTConfig(**{**TINY, "classifier": "max"})


def test_pre_logits_is_tanh_of_a_dense_before_the_head():
    model = tiny(classifier="gap", representation_size=6)
    assert model.pre_logits.weight.shape == (6, 16) and model.head.weight.shape == (5, 6)
    video = torch.randn(2, 3, 4, 8, 8)
    logits, seen = run_with_outputs(model, video, ("encoder",))
    hidden = torch.tanh(seen["encoder"][1].mean(1) @ model.pre_logits.weight.T + model.pre_logits.bias)
    torch.testing.assert_close(logits, head(model, hidden), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(video), pre_logits=True), hidden)
    with pytest.raises(ConfigError, match="representation_size"):
        ViViTConfig(**{**TINY, "representation_size": 0})


def test_saved_model_keeps_classifier_and_pre_logits(tmp_path):
    model = tiny(variant="fe", classifier="gsp", representation_size=6)
    model.save_pretrained(tmp_path / "m")
    again = load_pretrained(tmp_path / "m")
    assert (again.config.classifier, again.config.representation_size) == ("gsp", 6)
    video = torch.randn(1, 3, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again(video), model(video))
    fresh, report = load_pretrained_with_report(tmp_path / "m", num_classes=3)  # a new head, the same pre-logits
    assert fresh.head.weight.shape == (3, 6) and torch.equal(fresh.pre_logits.weight, model.pre_logits.weight)
    assert all(k.startswith("head.") for k in report.missing)


def test_hf_has_no_pre_logits_or_pooling_classifiers():
    with pytest.raises(ConfigError, match="representation_size"):
        hf.to_hf(tiny(representation_size=6))
    with pytest.raises(ConfigError, match="classifier='token'"):
        hf.to_hf(tiny(classifier="gmp"))
