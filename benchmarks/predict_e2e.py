"""`vivit predict` end to end against transformers' `pipeline("video-classification")` on real-size videos.

Both hold the same Model 1 weights (ours saved with `save_pretrained`, converted with `vivit convert --to hf`)
and see the same frames and crop: every clip is exactly num_frames x frame_stride frames long, so our single
centre clip (frames 0, 2, ..., 62 at 32 x 2) and the pipeline's (`np.linspace(0, 63, 32)`: the same but
63 for the last) share all frames but the last, and the converted preprocessor config resizes the short
side and centre-crops as our eval transform does. Each side runs as a
command of its own (imports and model loading included), alternating over rounds; the share spent decoding
vs in the model is measured apart (decode-only loader / pipeline.preprocess, and the model alone).

    .venv/bin/python benchmarks/predict_e2e.py            # 30 clips, 720p and 1080p H.264, ViViT-B Model 1
    .venv/bin/python benchmarks/predict_e2e.py --clips 6 --rounds 1   # a quick look (~6 min on 2 cores)

The full run takes about 25 minutes on 2 cores (ViViT-B at 32 frames is ~2.5 s a clip there, and each of
the 3 rows and the pipeline runs 3 times, then once more apart), so `make bench` does not include it.

Results: benchmarks/results/MACHINE/predict_e2e.md (and .json), naming the CPU and its AVX-512 / AVX512-BF16 / AMX flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report  # benchmarks/: the results folder of this machine

HERE = Path(__file__).resolve().parent
SIZES = ("1280x720", "1920x1080")
FPS = 25
HF_SCRIPT = """
import json, sys, time
start = time.perf_counter()
from transformers import pipeline
pipe = pipeline("video-classification", model=sys.argv[1], device="cpu")
videos = json.loads(sys.argv[2])
out = pipe(videos, top_k=1, frame_sampling_rate=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - start, "top1": [o[0]["label"] for o in out]}))
"""


def cpu_info() -> dict[str, str]:
    """lscpu's model name and number, and whether the ISA extensions that matter are exposed."""
    fields = {}
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("Flags", "").split())
    has = {name: name in flags for name in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}
    return {"model name": fields.get("Model name", "?"), "model": fields.get("Model", "?"),
            "cores": str(len(os.sched_getaffinity(0))), **{k: "yes" if v else "no" for k, v in has.items()}}


def make_videos(folder: Path, count: int, frames: int) -> list[Path]:
    """`count` H.264 clips of `frames` frames, alternately 720p and 1080p (ffmpeg's testsrc2 pattern)."""
    videos = []
    for i in range(count):
        size = SIZES[i % len(SIZES)]
        path = folder / f"clip{i:03d}_{size.split('x')[1]}p.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={FPS}",
                        "-vf", f"hue=h={37 * i}", "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
        videos.append(path)
    return videos


def make_models(folder: Path, name: str, classes: int) -> tuple[Path, Path, int, int]:
    """Our pretrained folder and its transformers conversion: (ours, hf, num_frames, frame_stride)."""
    import torch

    import vivit

    torch.manual_seed(0)
    model = vivit.create_model(name, num_classes=classes)
    torch.nn.init.normal_(model.head.weight, std=0.05)  # the zero-initialised head would tie every class
    ours = model.save_pretrained(folder / "ours", labels=[f"class{i}" for i in range(classes)])
    converted = subprocess.run([str(Path(sys.executable).with_name("vivit")), "convert", "--to", "hf", str(ours),
                                str(folder / "hf"), "--json", "--quiet"], check=True, capture_output=True, text=True)
    stride = json.loads(converted.stdout)["frame_stride"]
    return ours, folder / "hf", model.config.num_frames, stride


def fast_paths() -> dict[str, list[str]]:
    """Our rows: fp32, int8 linears, and bf16 weights where the CPU has bf16 units (emulated, it is slower)."""
    from vivit.backends import has_bf16_units

    rows = {"vivit predict": [], "vivit predict --quantize int8": ["--quantize", "int8"]}
    if has_bf16_units():
        rows["vivit predict --precision bf16"] = ["--precision", "bf16"]
    return rows


def run_ours(model: Path, videos: Path, args: argparse.Namespace, flags: list[str]) -> tuple[float, list[str]]:
    cmd = [str(Path(sys.executable).with_name("vivit")), "predict", str(model), str(videos), "--views", "1x1",
           "--top-k", "1", "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--json", "--quiet",
           *flags]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    results = sorted(json.loads(out)["results"], key=lambda r: r["file"])
    return seconds, [r["predictions"][0]["label"] for r in results]


def run_hf(model: Path, videos: list[Path], stride: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", HF_SCRIPT, str(model), json.dumps([str(v) for v in videos]), str(stride)],
                         check=True, capture_output=True, text=True).stdout
    seconds = time.perf_counter() - start
    return seconds, json.loads(out.strip().splitlines()[-1])["top1"]


def shares_ours(model_dir: Path, videos: list[Path], args: argparse.Namespace) -> dict[str, float]:
    """Seconds decoding + preprocessing alone (the loader, same workers) and in the model alone (same batches)."""
    import torch

    from vivit.data import build_dataset, make_loader
    from vivit.engine.checkpoint import load_model
    from vivit.engine.evaluate import eval_preprocessing

    loaded = load_model(model_dir)
    model = loaded.model.eval()
    stride, augment = eval_preprocessing(loaded.train_config)
    dataset = build_dataset([str(v) for v in videos], train=False, num_frames=model.config.num_frames,
                            frame_stride=stride, image_size=model.config.image_size[0], augment=augment)
    start = time.perf_counter()
    batches = [batch.videos for batch in make_loader(dataset, batch_size=args.batch_size, shuffle=False,
                                                     num_workers=args.workers)]
    decode = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        for views in batches:  # (B, V, C, T, H, W): one view here
            model(views.flatten(0, 1) if views.ndim == 6 else views)
    return {"decode_s": decode, "model_s": time.perf_counter() - start}


def shares_hf(model_dir: Path, videos: list[Path], stride: int) -> dict[str, float]:
    """Seconds in the pipeline's preprocess (PyAV decode + image processor) and in its forward."""
    from transformers import pipeline

    pipe = pipeline("video-classification", model=str(model_dir), device="cpu")
    decode = model = 0.0
    for video in videos:
        start = time.perf_counter()
        inputs = pipe.preprocess(str(video), frame_sampling_rate=stride)
        decode += time.perf_counter() - start
        start = time.perf_counter()
        pipe.forward(inputs)
        model += time.perf_counter() - start
    return {"decode_s": decode, "model_s": model}


def markdown(result: dict) -> str:
    cpu, n, hf = result["cpu"], result["clips"], result["hf"]
    lines = [
        "# `vivit predict` end to end vs transformers' video-classification pipeline",
        "",
        f"CPU: {cpu['model name']} (model {cpu['model']}), {cpu['cores']} cores; AVX-512 {cpu['avx512f']}, "
        f"AVX512-BF16 {cpu['avx512_bf16']}, AMX {cpu['amx_bf16']}. torch {result['torch']}, transformers "
        f"{result['transformers']}. Load average before/after: {result['load_before']} / {result['load_after']}.",
        "",
        f"{n} H.264 clips ({', '.join(SIZES)} alternately, {result['frames_per_video']} frames at {FPS} fps), "
        f"{result['model']} ({result['num_frames']} frames, stride {result['frame_stride']}), single view, "
        f"ours with --workers {result['workers']} --batch-size {result['batch_size']}; the pipeline one clip at a "
        f"time. Median of {result['rounds']} rounds, each command timed whole (start-up and model loading included).",
        f"Frames: ours 0, {result['frame_stride']}, ..., the pipeline the same but for its last, one later "
        "(its `np.linspace` sampling); same short-side resize and centre crop.",
        "",
        "| | clips/s | wall s | speed-up | top-1 = pipeline's |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in result["ours"].items():
        lines.append(f"| {name} | {n / r['wall_s']:.3f} | {r['wall_s']:.1f} | {hf['wall_s'] / r['wall_s']:.2f}x "
                     f"| {r['top1_agreement']:.0%} |")
    lines.append(f"| transformers pipeline | {n / hf['wall_s']:.3f} | {hf['wall_s']:.1f} | 1.00x | |")
    lines += ["", "Where the time goes (measured apart, fp32: our decode with the same DataLoader workers and the "
              "model alone on its batches; the pipeline's `preprocess` and `forward`):", "",
              "| | decode + preprocess s | model s | decode share |", "|---|---:|---:|---:|"]
    for name, r in (("vivit predict", result["ours_shares"]), ("transformers pipeline", hf)):
        lines.append(f"| {name} | {r['decode_s']:.1f} | {r['model_s']:.1f} "
                     f"| {100 * r['decode_s'] / (r['decode_s'] + r['model_s']):.0f} % |")
    return "\n".join(lines + [""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=30)
    p.add_argument("--model", default="vivit-b-16x2-st", help="a Model 1 preset")
    p.add_argument("--classes", type=int, default=400)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="end-to-end runs of each command (median)")
    p.add_argument("--out", type=Path, default=report.RESULTS / report.machine_slug() / "predict_e2e.md")
    args = p.parse_args()
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours_dir, hf_dir, num_frames, stride = make_models(tmp, args.model, args.classes)
        (tmp / "videos").mkdir()
        videos = make_videos(tmp / "videos", args.clips, num_frames * stride)
        load_before = os.getloadavg()[0]
        rows = fast_paths()
        walls: dict[str, list[float]] = {name: [] for name in [*rows, "hf"]}
        top1: dict[str, list[str]] = {}
        for r in range(args.rounds):
            for side in walls if r % 2 == 0 else reversed(list(walls)):
                if side == "hf":
                    seconds, top1[side] = run_hf(hf_dir, videos, stride)
                else:
                    seconds, top1[side] = run_ours(ours_dir, tmp / "videos", args, rows[side])
                walls[side].append(seconds)
        result = {"cpu": cpu_info(), "torch": torch.__version__, "transformers": transformers.__version__,
                  "model": args.model, "num_frames": num_frames, "frame_stride": stride, "clips": args.clips,
                  "frames_per_video": num_frames * stride, "workers": args.workers, "batch_size": args.batch_size,
                  "rounds": args.rounds,
                  "ours": {name: {"wall_s": statistics.median(walls[name]),
                                  "top1_agreement": sum(a == b for a, b in zip(top1[name], top1["hf"])) / len(videos)}
                           for name in rows},
                  "ours_shares": shares_ours(ours_dir, videos, args),
                  "hf": {"wall_s": statistics.median(walls["hf"]), **shares_hf(hf_dir, videos, stride)},
                  "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
