"""The benchmark machinery on tiny models: weight conversion parity, interleaving, target verdicts (no timings asserted)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compare_hf  # noqa: E402
import report  # noqa: E402
import timing  # noqa: E402
import vivit  # noqa: E402

TINY = vivit.PRESETS["vivit-ti-16x2-st"].replace(
    num_frames=4, image_size=32, tubelet=(2, 8, 8), width=32, depth=2, num_heads=4, mlp_dim=64, num_classes=5
)


def test_hf_conversion_gives_equal_logits():
    ours, hf = compare_hf.build_pair(TINY)
    video = torch.randn(2, 3, 4, 32, 32)
    with torch.inference_mode():
        logits = ours(video)
    assert logits.abs().max() > 1e-3  # HF's random head: a zero output would make parity vacuous
    assert compare_hf.max_abs_diff(ours, hf, video) < 1e-5


def test_hf_conversion_after_a_training_step_stays_equal():
    ours, hf = compare_hf.build_pair(TINY)
    video = torch.randn(1, 3, 4, 32, 32)
    timing.train_step_fn(hf, lambda: hf(pixel_values=video.transpose(1, 2).contiguous()).logits, torch.tensor([1]))()
    assert compare_hf.max_abs_diff(compare_hf.convert(hf, TINY).eval(), hf.eval(), video) < 1e-5
    assert compare_hf.max_abs_diff(ours, hf, video) > 1e-6  # the step changed HF's weights, not ours


def test_interleave_runs_every_contender_each_round_alternating_order():
    calls = []
    times = timing.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(t) for t in times.values()] == [3, 3]
    assert timing.speedup([1.0, 2.0, 4.0], [2.0, 2.0, 12.0]) == 2.0


@pytest.mark.parametrize("speed, met", [(1.3, True), (1.05, False)])
def test_report_flags_targets(speed, met):
    side = {"forward_ms": {"ours": 1.0, "theirs": speed}, "train_ms": {"ours": 1.0, "theirs": speed},
            "forward_speedup": speed, "train_speedup": speed, "max_abs_diff": 0.0}
    results = {"meta": {"precision": "fp32"}, "hf": {"b": side}, "vitpytorch": {"fe": side},
               "variants": {"rows": [{"preset": "vivit-b-16x2-fe", "mfu": 0.7}]},
               "memory": {"off": {"step_peak_mb": 300.0}, "on": {"step_peak_mb": 100.0}}}
    verdicts = {claim: ok for claim, _, _, ok in report.targets(results)}
    assert verdicts["Model 1 forward vs HF, ViViT-B"] is met
    assert verdicts["Model 2 (factorised encoder) forward vs vit-pytorch"] is met
    assert verdicts["Model 2 forward MFU (fp32 GEMM peak)"] and verdicts["Gradient checkpointing memory cut, Model 1, batch 1"]
    assert [need for claim, _, need, _ in report.targets(results) if "vs" in claim] == [1.2, 1.1, 1.1, 1.1]


def test_each_precision_runs_ours_also_on_pytorchs_own_gemm(monkeypatch):
    """bf16 runs every contender under autocast; "ours, PyTorch GEMM" switches our GEMM route off in either."""
    from vivit.model import linear as linear_mod

    model = vivit.ViViT(TINY)
    video = torch.randn(1, 3, 4, 32, 32)
    outputs, routes = [], []
    forward = timing.forward_fn(model, lambda: outputs.append(model(video)) or routes.append(
        (linear_mod._onednn_enabled, linear_mod._widened_enabled)))
    for precision in ("bf16", "fp32"):
        monkeypatch.setattr(timing, "precision", precision)  # what timing.setup sets in a benchmark process
        for step in timing.our_contenders(forward).values():
            step()
    assert [o.dtype for o in outputs] == [torch.bfloat16] * 2 + [torch.float32] * 2
    onednn, widened = linear_mod._onednn_enabled, linear_mod._widened_enabled  # the defaults: measured routes
    assert routes == [(onednn, widened), (onednn, False), (onednn, widened), (False, widened)]
    with pytest.raises(ValueError, match="precision"):
        timing.setup(1, "fp16")
    old_bf16 = {"meta": {"precision": "bf16"}, "hf": {"b": {"forward_ms": {"ours": 1.0, "theirs": 2.0}}}}
    assert report.contenders(old_bf16) == ("ours", "theirs")  # a bf16 run before the bf16 route had no such column


def test_each_machine_keeps_its_own_results_and_readme_block(tmp_path, monkeypatch):
    """A run on one CPU rewrites that CPU's folder and README block, never another machine's."""
    import json

    saved = json.loads((Path(report.__file__).parent / "results" / "amd-family-26" / "latest.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Performance\n\n<!-- bench:machines -->\n\n## After\n")
    for slug, machine in (("amd-family-26", "AMD EPYC"), ("intel-family-6-model-207", "Intel Xeon"),
                          ("amd-family-26", "AMD EPYC")):
        r = {**saved, "meta": {**saved["meta"], "slug": slug, "machine": machine, "date": f"run on {machine}"}}
        report.write(r, tmp_path / slug, readme)
        assert (tmp_path / slug / "latest.md").read_text().startswith(f"Measured run on {machine}")
    text = readme.read_text()
    assert text.count("<!-- bench:start amd-family-26 -->") == 1 and text.count("<!-- bench:end intel-family-6-model-207 -->") == 1
    assert text.index("### Intel Xeon") < text.index("### AMD EPYC") < text.index("## After")
    assert report.machine_slug() and "/" not in report.machine_slug()


GPU_TINY = dict(width=32, num_heads=4, depth=2, mlp_dim=64, image_size=32, tubelet=(2, 8, 8), temporal_depth=1)


def test_memory_benchmark_measures_the_step_after_the_first(monkeypatch):
    """The reported step peak is the second step's: the first also loads kernels once (kept beside it)."""
    import contextlib

    import memory

    peaks = iter([700.0, 400.0])
    steps = []

    @contextlib.contextmanager
    def fake_peak(device):
        result = {}
        yield result
        result["peak_mb"] = next(peaks)

    monkeypatch.setattr(memory, "peak_memory", fake_peak)
    monkeypatch.setattr(memory, "train_step_fn", lambda model, forward, target: lambda: steps.append(forward().shape))
    out = memory.child("vivit-ti-16x2-st", True, dict(num_frames=4, image_size=32, tubelet=(2, 8, 8), num_classes=5))
    assert len(steps) == 2 and out["step_peak_mb"] == 400.0 and out["first_step_peak_mb"] == 700.0
    assert "| 1 | on | 400 | 700 |" in "\n".join(report_lines(out))
    assert "| 1 | on | 0 | 700 |" in "\n".join(report_lines(dict(out, step_peak_mb=0.0)))  # a tiny model's step


def report_lines(on: dict) -> list[str]:
    off = dict(on, checkpointing=False, step_peak_mb=800.0, first_step_peak_mb=900.0)
    return report.memory_table({"off": off, "on": on})


def test_gpu_benchmark_machinery_on_the_cpu():
    """`run.py --device cuda`'s functions, device-agnostic: every variant measured, the SDPA kernel read off
    the profiler and confirmed alone, MFU finite, DDP on a one-process (gloo, loopback) group."""
    import gpu

    result = gpu.run(torch.device("cpu"), batch=2, frames=4, sizes=("ti",), warmup=0, iters=1, **GPU_TINY)
    assert [r["model"] for r in result["rows"]] == [f"vivit-ti-16x2-{v}" for v in gpu.VARIANTS]
    for row in result["rows"]:
        assert row["used"] == ["flash (CPU)"] and row["runs_restricted_to_it"] == {"flash (CPU)": True}
        assert row["train_clips_per_s"] > 0 and 0 < row["forward_mfu"] < float("inf")
        assert row["train_tokens_per_s"] == pytest.approx(row["train_clips_per_s"] * 2 * 4 * 4)
    assert result["ddp"]["ddp_train_s"] > 0 and result["peak_used"] == "measured matmul"
    assert "| vivit-ti-16x2-fsa | 2 |" in gpu.markdown(result)


def test_gpu_benchmark_names_the_datasheet_peak_and_refuses_without_cuda(capsys):
    import gpu

    assert gpu.datasheet_tflops("NVIDIA H100 PCIe") == 756.0 and gpu.datasheet_tflops("NVIDIA H200") == 989.0
    assert gpu.datasheet_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and gpu.datasheet_tflops("Some GPU") is None
    if not torch.cuda.is_available():
        assert gpu.main(8, 32, None, Path("unused")) == 2
        assert capsys.readouterr().err.startswith("error: --device cuda needs a CUDA GPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_benchmark_on_cuda_uses_a_fused_attention_kernel():
    import gpu

    result = gpu.run(torch.device("cuda"), batch=2, frames=8, sizes=("ti",), warmup=1, iters=2)
    for row in result["rows"]:
        assert set(row["used"]) <= {"flash", "memory-efficient", "cudnn"} and all(row["runs_restricted_to_it"].values())


@pytest.mark.parametrize("script", ["predict_e2e.py", "inference.py", "timeline.py", "data_memory.py", "gelu.py"])
def test_standalone_benchmark_scripts_start(script):
    """The scripts `make bench` does not run parse their arguments (a name shadowing a module broke one)."""
    import subprocess

    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / script), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_hf_comparison_times_the_forward_in_eval_mode_and_may_skip_training(monkeypatch):
    modes = []
    real = timing.forward_fn

    def recording(model, forward):
        run = real(model, forward)
        return lambda: (modes.append(model.training), run())[1]

    monkeypatch.setattr(timing, "forward_fn", recording)
    result = compare_hf.compare(TINY, rounds=1, train_rounds=0)
    assert modes and not any(modes) and "train_ms" not in result and result["forward_speedup"] > 0
