"""Training-pipeline throughput (decode + sample + augment) against decoding the same frames with plain PyAV.

    python benchmarks/data_pipeline.py [--clips 24] [--rounds 3]

Writes H.264 videos (320x240 and 640x360, 30 fps, 6 s, a keyframe every 2 s, textured moving content) to a
temporary folder, then, in one process with one thread (as in one DataLoader worker), times clip by clip,
alternating the two so that both see the same machine load:
  raw:      PyAV seek + decode + `to_ndarray(rgb24)` of the 32 frames (stride 2) of each training clip;
  pipeline: `VideoDataset.__getitem__` of the same clips (the default training recipe: short side 256, scale
            jitter [0.9, 1.33], random crop 224, flip 0.5, colour jitter 0.8, [-1, 1]) -> float (3, 32, 224, 224).
Reports the median over rounds; prints a markdown table and writes it to --out (benchmarks/results/MACHINE/data_pipeline.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from vivit.data import AugmentConfig, VideoDataset, probe
from vivit.data.encode import write_video
from vivit.data.sampling import random_clip

import report  # benchmarks/: the results folder of this machine

NUM_FRAMES, STRIDE, IMAGE_SIZE = 32, 2, 224
SIZES = {"320x240": (240, 320), "640x360": (360, 640)}
RESULTS = report.RESULTS / report.machine_slug() / "data_pipeline.md"


def make_video(path: Path, height: int, width: int, seed: int, frames: int = 180) -> Path:
    """Textured content panning and a bright square moving: bitrate closer to real footage than flat colour."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        video[t] = np.roll(texture, t, axis=1)[:height, :width]
        y, x = (5 * t) % (height - 40), (7 * t) % (width - 40)
        video[t, y:y + 40, x:x + 40] = 255
    return write_video(path, video, fps=30, options={"crf": "23", "g": "60"})


def raw_decode(path: Path, indices: np.ndarray) -> np.ndarray:
    """Plain PyAV: seek to the keyframe before the first index, decode forward, convert the wanted frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        to_pts = lambda i: start + int(i / stream.average_rate / stream.time_base)  # noqa: E731
        container.seek(to_pts(indices[0]), stream=stream, backward=True)
        wanted, out = set(indices.tolist()), []
        for frame in container.decode(stream):
            index = round((frame.pts - start) * stream.time_base * stream.average_rate)
            if index in wanted:
                out.append(frame.to_ndarray(format="rgb24"))
            if index >= indices[-1]:
                break
        return np.stack(out)


def bench(videos: list[Path], clips: int, rounds: int) -> dict[str, float]:
    samples = [(videos[i % len(videos)], 0) for i in range(clips)]
    dataset = VideoDataset(samples, ["x"], train=True, num_frames=NUM_FRAMES, frame_stride=STRIDE,
                           image_size=IMAGE_SIZE, augment=AugmentConfig())
    frames = {p: probe(p).frames for p in videos}
    # the clips the dataset draws: same (seed, epoch, index) generator as VideoDataset.read
    indices = [random_clip(frames[p], NUM_FRAMES, STRIDE, np.random.default_rng((0, 0, i)))
               for i, (p, _) in enumerate(samples)]
    raw, pipeline = [], []
    for _ in range(rounds):  # clip by clip alternation: both sides see the same machine load
        raw_time = pipeline_time = 0.0
        for i, ((path, _), idx) in enumerate(zip(samples, indices)):
            start = time.perf_counter()
            raw_decode(path, idx)
            middle = time.perf_counter()
            clip, _, _ = dataset[i]
            raw_time, pipeline_time = raw_time + middle - start, pipeline_time + time.perf_counter() - middle
            assert clip.shape == (3, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE)
        raw.append(clips / raw_time)
        pipeline.append(clips / pipeline_time)
    raw_rate, pipe_rate = statistics.median(raw), statistics.median(pipeline)
    return {"raw": raw_rate, "pipeline": pipe_rate, "overhead": raw_rate / pipe_rate - 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24, help="clips per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=4, help="videos per resolution")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file for the table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (height, width) in SIZES.items():
            videos = [make_video(Path(tmp) / f"{name}_{i}.mp4", height, width, i) for i in range(args.videos)]
            rows.append((name, bench(videos, args.clips, args.rounds)))
    lines = [f"Training clips of {NUM_FRAMES} frames (stride {STRIDE}) from H.264 30 fps videos, one thread, "
             f"{args.rounds} rounds of {args.clips} clips (median); pipeline = decode + sample + short side 256, "
             f"scale jitter, random crop {IMAGE_SIZE}, flip, colour jitter, [-1, 1] -> float (3, {NUM_FRAMES}, "
             f"{IMAGE_SIZE}, {IMAGE_SIZE}); raw = PyAV seek + decode + rgb24 of the same frames.", "",
             "| video | raw PyAV decode (clips/s) | training pipeline (clips/s) | pipeline overhead |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {r['raw']:.1f} | {r['pipeline']:.1f} | {100 * r['overhead']:+.0f}% |" for name, r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
