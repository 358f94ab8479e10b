"""`make bench`: ours against transformers' and vit-pytorch's ViViTs, the Table-2 variants with MFU,
training-step memory with and without gradient checkpointing, and the `torch.compile` path.

Each comparison runs in its own process with the same thread count and precision (fp32 by default,
or bf16 autocast with --precision bf16); results go to benchmarks/results/MACHINE/latest.{md,png,json}
(MACHINE: the CPU's vendor, family and model, e.g. intel-family-6-model-207) and that machine's block of the
README's Performance section (fp32 full runs), or to results/MACHINE/{bf16,quick,smoke}/: one machine's
figures never replace another's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import report
from timing import PRECISIONS, setup

HERE = Path(__file__).resolve().parent
PARTS = ("hf-b", "hf-s", "vitpytorch-fe", "vitpytorch-fsa", "variants", "compile")
SMALL = dict(width=384, num_heads=6, depth=12, mlp_dim=1536)  # the small config (ViT-S sizes)
TINY = dict(width=64, num_heads=4, depth=2, mlp_dim=128, image_size=32, tubelet=(2, 8, 8), temporal_depth=2)


def settings(args: argparse.Namespace) -> dict:
    """Rounds and sizes: the full run, --quick (8 frames, fewer rounds) or --smoke (tiny models)."""
    if args.smoke:
        return dict(frames=4, rounds=2, train_rounds=1, sizes={"b": TINY, "s": TINY}, memory_size=TINY, memory_batches=(1,), gemm_n=256)
    if args.quick:
        return dict(frames=8, rounds=3, train_rounds=2, sizes={"b": {}, "s": SMALL}, memory_size={}, memory_batches=(1,), gemm_n=2048)
    # 11 forward and 5 training rounds: with 5 and 3, rows moved by up to 0.1 between runs on a shared 2-core VM (README)
    return dict(frames=16, rounds=11, train_rounds=5, sizes={"b": {}, "s": SMALL}, memory_size={}, memory_batches=(1, 4), gemm_n=4096)


def overrides(size: dict, frames: int) -> dict:
    """Table-2 settings (400 classes, FE temporal depth 4) at the given frames, resized by `size`."""
    return dict(num_frames=frames, num_classes=400, temporal_depth=4) | size


def config(kind: str, size: dict, frames: int):
    import vivit

    return vivit.PRESETS[f"vivit-b-16x2-{kind}"].replace(**overrides(size, frames))


def run_part(part: str, s: dict) -> dict:
    """One comparison, in this (child) process."""
    if part.startswith("hf-"):
        import compare_hf

        return compare_hf.compare(config("st", s["sizes"][part[3:]], s["frames"]), s["rounds"], s["train_rounds"])
    if part.startswith("vitpytorch-"):
        import compare_vitpytorch

        return compare_vitpytorch.compare(config(part.split("-")[1], s["sizes"]["b"], s["frames"]), s["rounds"], s["train_rounds"])
    if part == "variants":
        import variants

        return variants.compare("b", s["rounds"], s["gemm_n"], **overrides(s["sizes"]["b"], s["frames"]))
    if part == "compile":
        import compiled

        return compiled.compare(config("st", s["sizes"]["s"], s["frames"]), s["rounds"]) | {"size": "s"}
    raise ValueError(f"unknown part {part!r}; choose from {PARTS}")


def in_child(part: str, args: argparse.Namespace) -> dict:
    """Run one part in a fresh interpreter and read back its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, __file__, "--part", part, "--threads", str(args.threads), "--precision", args.precision,
               "--json-out", f.name]
        cmd += ["--quick"] * args.quick + ["--smoke"] * args.smoke
        subprocess.run(cmd, check=True)
        return json.loads(Path(f.name).read_text())


def isa_flags() -> str:
    """The ISA extensions that decide fp32/bf16 GEMM speed, as the CPU lists them."""
    from vivit.backends import cpu_flags

    flags = cpu_flags()
    wanted = {"AVX-512": "avx512f", "AVX512-BF16": "avx512_bf16", "AMX": "amx_bf16"}
    return ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for name, flag in wanted.items())


def meta(args: argparse.Namespace, s: dict) -> dict:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "unknown CPU")
    return dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), machine=model,
                slug=report.machine_slug(), isa=isa_flags(),
                cores=len(__import__("os").sched_getaffinity(0)), threads=args.threads, precision=args.precision,
                torch=torch.__version__, transformers=pkg("transformers"), vit_pytorch=pkg("vit-pytorch"), frames=s["frames"],
                image_size=32 if args.smoke else 224, quick=args.quick, smoke=args.smoke,
                rounds=s["rounds"], train_rounds=s["train_rounds"])


def data_pipeline(out: Path, smoke: bool) -> str | None:
    """Output of the data-loading benchmark (one short round with --smoke), when that module exists."""
    script = HERE / "data_pipeline.py"
    if not script.exists():
        return None
    cmd = [sys.executable, str(script), "--out", str(out / "data_pipeline.md")] + ["--clips", "2", "--rounds", "1"] * smoke
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return done.stdout if done.returncode == 0 else f"failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 frames, fewer rounds (about a third of the time)")
    parser.add_argument("--smoke", action="store_true", help="tiny models: checks the machinery in seconds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32, or bf16 autocast for every contender (as run.precision=bf16 trains)")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, help="comparisons to run")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: results/MACHINE/; bf16 runs under bf16/ there, --quick "
                             "and --smoke runs under quick/ and smoke/)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: the four variants at ViViT-B and L in bf16 on the GPU (benchmarks/gpu.py)")
    parser.add_argument("--batch", type=int, default=8, help="clips per step with --device cuda")
    parser.add_argument("--frames", type=int, default=32, help="frames per clip with --device cuda")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda":
        import gpu

        raise SystemExit(gpu.main(args.batch, args.frames, args.out, report.RESULTS))
    if args.out is None:  # a bf16, quick or smoke run never replaces the full fp32 run's results
        sub = Path("bf16" if args.precision == "bf16" else "") / ("smoke" if args.smoke else "quick" if args.quick else "")
        args.out = report.RESULTS / report.machine_slug() / sub
    setup(args.threads, args.precision)
    s = settings(args)
    if args.part:  # child mode
        args.json_out.write_text(json.dumps(run_part(args.part, s)))
        return
    import memory

    results: dict = {"meta": meta(args, s), "hf": {}, "vitpytorch": {}}
    for part in args.parts:
        print(f"[bench] {part} ...", flush=True)
        res = in_child(part, args)
        print(f"[bench] {part}: {report.one_line(res)}", flush=True)
        if part.startswith("hf-"):
            results["hf"][part[3:]] = res
        elif part.startswith("vitpytorch-"):
            results["vitpytorch"][part.split("-")[1]] = res
        else:
            results[part] = res
    print("[bench] memory ...", flush=True)
    size = overrides(s["memory_size"], s["frames"])
    # batch 1 (the target) and 4: the parameter gradients, which checkpointing cannot cut, weigh less as the batch grows
    results["memory"] = {key + (f"@{batch}" if batch > 1 else ""):
                         memory.measure("vivit-b-16x2-st", key == "on", args.threads, args.precision, batch, **size)
                         for batch in s["memory_batches"] for key in ("off", "on")}
    results["data_pipeline"] = data_pipeline(args.out, args.smoke) if args.precision == "fp32" else None
    readme = None if args.smoke or args.quick or args.precision != "fp32" else HERE.parent / "README.md"
    print(report.write(results, args.out, readme))


if __name__ == "__main__":
    main()
