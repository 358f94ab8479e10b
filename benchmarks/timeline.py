"""`vivit predict --timeline` on long 360p videos: windows/s and peak memory per video length (must stay flat).

    python benchmarks/timeline.py --minutes 10 60 [--model vivit-ti-16x2-fe] [--frames 32] [--threads 2]

A 60-second 640x360 25 fps H.264 clip (ffmpeg's testsrc2, keyframe every 2 s) is looped with the ffmpeg CLI
(`-stream_loop`, stream copy) to each length, in a temporary folder. The model is the preset with random
weights (saved as a pretrained folder), fed as a trained model would be: frame stride 2, short side 256 for a
224 crop. Each length runs in a fresh child process that reports its wall time, windows/s, the peak resident
set (VmHWM) and its rise over the resident set after the model was loaded (`vivit.profile.peak_memory`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_video(folder: Path, minutes: float) -> Path:
    """A `minutes`-long 360p video: a 60 s testsrc2 clip looped by stream copy."""
    base = folder / "base.mp4"
    if not base.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=60",
                        "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", str(base)],
                       check=True)
    out = folder / f"{minutes:g}min.mp4"
    loops = int(-(-minutes // 1))  # whole minutes of the base clip, then cut to length
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", str(loops - 1), "-i", str(base), "-c", "copy",
                    "-t", str(minutes * 60), str(out)], check=True)
    return out


def child(video: Path, model: Path, batch_size: int) -> dict:
    from vivit.data.decode import probe
    from vivit.engine.timeline import timeline
    from vivit.profile import peak_memory

    info = probe(video)
    start = time.perf_counter()
    with peak_memory(torch.device("cpu")) as mem:
        result = timeline(model, video, batch_size=batch_size, device="cpu", quiet=True)
    wall = time.perf_counter() - start
    windows = len(result["rows"])
    return {"minutes": info.duration / 60, "frames": info.frames, "windows": windows, "wall_s": wall,
            "windows_per_s": windows / wall, "frames_per_s": info.frames / wall,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rise_mib": mem["peak_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--model", default="vivit-ti-16x2-fe", help="preset, random weights")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", nargs=2, metavar=("VIDEO", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.batch_size)))
        return
    from vivit import create_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = create_model(args.model, num_classes=400, num_frames=args.frames)
        model.save_pretrained(folder / "model", labels=[f"class {i}" for i in range(400)])
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
        print(f"{args.model}, {args.frames} frames x stride 2, 224 px, batch {args.batch_size}; {cpu}, "
              f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
        print("| video (min) | frames | windows | wall (s) | windows/s | frames/s | peak RSS (MiB) | rise (MiB) |\n"
              "|---|---|---|---|---|---|---|---|")
        for minutes in args.minutes:
            video = make_video(folder, minutes)
            cmd = [sys.executable, __file__, "--child", str(video), str(folder / "model"),
                   "--batch-size", str(args.batch_size)] + (["--threads", str(args.threads)] if args.threads else [])
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            print(f"| {r['minutes']:.1f} | {r['frames']} | {r['windows']} | {r['wall_s']:.0f} | "
                  f"{r['windows_per_s']:.2f} | {r['frames_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
                  f"{r['peak_rise_mib']:.0f} |", flush=True)
            video.unlink()


if __name__ == "__main__":
    main()
