"""Tiny test videos written with PyAV: smooth patterns (near-lossless under lossy codecs) and broken files."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vivit.data.encode import write_video


def pattern(frames: int, height: int, width: int) -> np.ndarray:
    """uint8 (T, H, W, 3): smooth gradients whose phase moves with t, so every frame differs."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    red = 128 + 100 * np.sin(2 * np.pi * (x / width + t / 17))
    green = 128 + 100 * np.cos(2 * np.pi * (y / height + t / 11))
    blue = 40 + 5 * (t % 32)
    return np.stack([red, green, blue], -1).round().astype(np.uint8)


def garbage_stream(path: Path, frames: int = 10) -> Path:
    """A valid AVI container whose MJPEG packets are random bytes (the stream cannot be decoded)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuvj420p"
        for i in range(frames):
            packet = av.Packet(bytes(rng.integers(0, 255, 500, dtype=np.uint8)))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 25)
            container.mux(packet)
    return path


def bad_files(folder: Path, good: Path) -> dict[str, Path]:
    """The broken inputs the pipeline must skip: zero bytes, truncated, text, undecodable stream, missing."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    files = {"zero": folder / "zero.mp4", "truncated": folder / "truncated.mp4", "text": folder / "text.mp4",
             "undecodable": folder / "undecodable.avi", "missing": folder / "missing.mp4"}
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("this is not a video\n" * 20)
    garbage_stream(files["undecodable"])
    return files


def good_video(path: Path, frames: int = 24, size: tuple[int, int] = (32, 48), **kw) -> Path:
    return write_video(path, pattern(frames, *size), fps=kw.pop("fps", 25), **kw)
