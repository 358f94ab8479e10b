"""Peak memory of one evaluation item (decode + 4 clips x 3 crops), each video in a fresh child process.

    python benchmarks/data_memory.py VIDEO [VIDEO ...] [--frames 32] [--stride 2] [--size 224]

Make test videos with the ffmpeg CLI, e.g. 1080p and 4K H.264 (2.2 s at 30 fps):
    ffmpeg -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=2.2 -c:v libx264 -preset ultrafast v1080.mp4
    ffmpeg -f lavfi -i testsrc2=size=3840x2160:rate=30:duration=2.2 -c:v libx264 -preset ultrafast v2160.mp4

The child reads `VideoDataset.read(0)` of an eval dataset (num_clips 4, num_crops 3, short side 256 for 224)
inside `vivit.profile.peak_memory` (the rise of the peak resident set, VmHWM, over the resident set before) and
under tracemalloc (the peak of Python/NumPy allocations: the decoded frames). One thread, glibc's mmap threshold
pinned so freed buffers return to the system. The output tensor itself is reported for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import torch

from vivit.data import AugmentConfig, VideoDataset, probe
from vivit.profile import peak_memory


def child(path: Path, frames: int, stride: int, size: int) -> dict:
    dataset = VideoDataset([(path, 0)], ["x"], train=False, num_frames=frames, frame_stride=stride,
                           image_size=size, num_clips=4, num_crops=3, augment=AugmentConfig())
    tracemalloc.start()
    with peak_memory(torch.device("cpu")) as mem:
        views, _, _ = dataset.read(0)
    _, traced = tracemalloc.get_traced_memory()
    info = probe(path)
    return {"video": f"{info.width}x{info.height}", "views": list(views.shape), "rss_peak_mib": mem["peak_mb"],
            "traced_peak_mib": traced / 2**20, "output_mib": views.numel() * views.element_size() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=Path, nargs="+")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(1)
        print(json.dumps(child(args.videos[0], args.frames, args.stride, args.size)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", VIVIT_MALLOC="system")  # RSS follows the live tensors
    print("| video | views | peak RSS rise (MiB) | traced peak (MiB) | output tensor (MiB) |\n|---|---|---|---|---|")
    for video in args.videos:
        cmd = [sys.executable, __file__, str(video), "--child", "--frames", str(args.frames),
               "--stride", str(args.stride), "--size", str(args.size)]
        r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])
        print(f"| {r['video']} | {'x'.join(map(str, r['views']))} | {r['rss_peak_mib']:.0f} | "
              f"{r['traced_peak_mib']:.0f} | {r['output_mib']:.0f} |")


if __name__ == "__main__":
    main()
