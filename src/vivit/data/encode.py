"""Write uint8 frames (T, H, W, C) to a video file with PyAV (synthetic data, tests, benchmarks)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# codec -> pixel format it encodes from RGB
PIXEL_FORMATS = {"libx264": "yuv420p", "libx264rgb": "rgb24", "libvpx-vp9": "yuv420p", "mjpeg": "yuvj420p",
                 "ffv1": "bgr0", "mpeg4": "yuv420p"}


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25, codec: str = "libx264",
                options: dict[str, str] | None = None, pts: list[int] | None = None) -> Path:
    """Encode `frames` with `codec`; `options` go to the encoder (e.g. {"crf": "0"} for lossless H.264).

    `pts` gives each frame's presentation time in milliseconds (variable frame rate); default: constant `fps`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000), options=options or {})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = PIXEL_FORMATS.get(codec, "yuv420p")
        stream.codec_context.thread_count = 1  # identical bytes on every machine
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
