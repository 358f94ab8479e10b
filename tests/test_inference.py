"""`prepare_for_inference`: bf16 matmul weights cast once (no per-call cast), int8 dynamic linears on a copy,
fp16 under autocast, and refusals of combinations that cannot run; `vivit predict` takes the prepared model."""

import pytest
import torch
from conftest import op_calls, tiny_model
from torch.ao.nn.quantized import dynamic as nnqd

from vivit.engine import inference
from vivit.engine.inference import prepare_for_inference
from vivit.errors import ConfigError


@pytest.fixture
def model_and_video():
    model = tiny_model("st").eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the zero-initialised head would hide every difference
    return model, torch.rand(3, 3, 4, 16, 16) * 2 - 1


def copies(fn) -> int:
    """How many dtype casts (`aten::_to_copy`) one call of `fn` makes."""
    return op_calls(fn, "aten::_to_copy")


def test_bf16_casts_the_matmul_weights_once_and_gives_autocasts_logits(model_and_video, monkeypatch):
    model, video = model_and_video

    def autocast_forward():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return model(video).float()

    reference, per_call = autocast_forward(), copies(autocast_forward)
    monkeypatch.setattr(inference.backends, "has_bf16_units", lambda: True)
    prepared = prepare_for_inference(model, "bf16")
    matmuls = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))]
    assert {p.dtype for m in matmuls for p in m.parameters()} == {torch.bfloat16}  # cast in place, once
    others = {n: p for n, p in model.named_parameters() if not any(p is q for m in matmuls for q in m.parameters())}
    assert others and {p.dtype for p in others.values()} == {torch.float32}  # LayerNorm, tokens, pos-embed
    logits = prepared(video)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)  # autocast's numerics, bit for bit
    weights = sum(1 for m in matmuls for _ in m.parameters())
    assert copies(lambda: prepared(video)) <= per_call - weights  # no weight cast per call
    with torch.autocast("cpu", dtype=torch.float16):  # a caller's autocast changes nothing
        torch.testing.assert_close(prepared(video), reference, rtol=0, atol=0)


def test_int8_quantises_every_linear_of_a_copy(model_and_video):
    model, video = model_and_video
    reference = model(video)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    prepared = prepare_for_inference(model, quantize="int8")
    assert sum(isinstance(m, nnqd.Linear) for m in prepared.modules()) == linears
    assert not any(isinstance(m, torch.nn.Linear) for m in prepared.modules())
    assert all(isinstance(m, torch.nn.Linear) for m in model.modules() if "Linear" in type(m).__name__)  # untouched
    drift = (prepared(video) - reference).abs().max() / reference.abs().max()
    assert 0 < drift < 0.05 and (prepared(video).argmax(1) == reference.argmax(1)).all()


def test_fp16_runs_under_autocast_and_fp32_is_unchanged(model_and_video):
    model, video = model_and_video
    reference = model(video)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(torch.is_autocast_enabled("cpu")))
    torch.testing.assert_close(prepare_for_inference(model, "fp32")(video), reference)
    assert prepare_for_inference(model, "fp16")(video).dtype == torch.float32
    assert seen == [False, True]


def test_refused_combinations_name_the_options(model_and_video):
    model, _ = model_and_video
    with pytest.raises(ConfigError, match="--quantize int8"):
        prepare_for_inference(model, "bf16", quantize="int8")
    with pytest.raises(ConfigError, match="--quantize"):
        prepare_for_inference(model, quantize="int4")
    with pytest.raises(ConfigError, match="precision"):
        prepare_for_inference(model, "int8")


def test_cli_options_reach_prepare_for_inference():
    import argparse

    parser = argparse.ArgumentParser()
    inference.add_options(parser)
    assert inference.options(parser.parse_args(["--compile", "--quantize", "int8"])) == {"compile": True, "quantize": "int8"}
    assert inference.options(parser.parse_args([])) == {"compile": False, "quantize": None}


def test_predict_runs_the_prepared_model(tmp_path, capsys, monkeypatch):
    import json

    import numpy as np
    from engine_fixtures import untrained_checkpoint

    from vivit.cli import main
    from vivit.data.encode import write_video

    ckpt = untrained_checkpoint(tmp_path / "ckpt.pt")
    video = tmp_path / "a.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), fps=8)
    seen, real = [], inference.prepare_for_inference
    monkeypatch.setattr(inference.backends, "has_bf16_units", lambda: True)
    monkeypatch.setattr(inference, "prepare_for_inference",
                        lambda model, precision, **kw: seen.append((precision, kw)) or real(model, precision, **kw))
    for flags in (["--precision", "bf16"], ["--quantize", "int8"]):
        assert main(["predict", str(ckpt), str(video), "--json", "--quiet", "--workers", "0", *flags]) == 0
        assert len(json.loads(capsys.readouterr().out)["results"]) == 1
    assert seen == [("bf16", {"compile": False, "quantize": None}), ("fp32", {"compile": False, "quantize": "int8"})]


def test_bf16_without_bf16_units_is_flagged(model_and_video, monkeypatch):
    monkeypatch.setattr(inference.backends, "has_bf16_units", lambda: False)
    with pytest.warns(UserWarning, match="AVX512-BF16 nor AMX"):
        prepare_for_inference(model_and_video[0], "bf16")
    monkeypatch.undo()
    if inference.backends.platform.machine() == "x86_64":
        assert inference.backends.has_bf16_units() == bool({"avx512_bf16", "amx_bf16"} & inference.backends.cpu_flags())


def test_eager_inference_keeps_pytorch_gelu_kernel(model_and_video, monkeypatch):
    """A few predicted clips cannot repay the compiled GELU's first call; training still takes it."""
    from vivit import backends
    from vivit.model import activations

    monkeypatch.setenv(backends.GELU_ENV, "compiled")
    monkeypatch.setattr(activations, "MIN_NUMEL", 0)
    backends.reset()
    calls = []
    kernel = activations.compiled_gelu_tanh()
    monkeypatch.setattr(activations, "compiled_gelu_tanh", lambda: (lambda x: calls.append(1) or kernel(x)))
    model, video = model_and_video
    prepare_for_inference(model)(video)
    assert calls == []
    model.train()
    model(video)
    assert len(calls) == model.config.depth
    backends.reset()
