"""Video decoding with PyAV: metadata without decoding, and clips of chosen frame indices.

Frame indices are positions on the video's time axis at its average frame rate: index i is the frame shown at
time `start + i / fps`. For constant frame rate video that is the i-th frame; for variable frame rate video it is
the frame on screen at that instant (a frame may repeat, one may be skipped). A clip is read by seeking to the
keyframe at or before its first index and decoding forward until its last index, so a 32-frame clip never
decodes the whole file. Indices past the end of the stream (a header that over-counts) repeat the last frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from vivit.errors import DataError

# what a broken or unreadable file raises: PyAV's errors are OSError / ValueError subclasses
DECODE_ERRORS = (OSError, ValueError, RuntimeError, EOFError, DataError)

Size = int | tuple[int, int] | None  # None: native size; int: short side; (height, width): exact size


@dataclass(frozen=True)
class VideoInfo:
    """Stream metadata: frame count (from the header or estimated from duration), fps, seconds, pixels."""

    frames: int
    fps: float
    duration: float
    width: int
    height: int


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DataError("no video stream")
    return container.streams.video[0]


def _rate(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise DataError("unknown frame rate")
    return Fraction(rate)


def _info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    rate = _rate(stream)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    frames = stream.frames or round(duration * rate)
    if frames <= 0:  # neither header count nor duration (some webm/mkv): count packets, still no decoding
        frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        container.seek(0)
        duration = duration or float(frames / rate)
    if frames <= 0:
        raise DataError("video stream has no frames")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise DataError(f"video stream has no picture size ({width}x{height})")
    return VideoInfo(frames=int(frames), fps=float(rate), duration=duration or float(frames / rate),
                     width=width, height=height)


def probe(path: str | Path) -> VideoInfo:
    """Metadata of a video file from its container and stream headers (no frame is decoded)."""
    path = Path(path)
    with av.open(str(path)) as container:
        return _info(container, _video_stream(container))


def count_decodable_frames(path: str | Path) -> int:
    """Open once, check the headers as `probe` does, decode every frame: the number of frames decoded."""
    with av.open(str(path)) as container:
        stream = _video_stream(container)
        _info(container, stream)
        return sum(1 for _ in container.decode(stream))


def output_size(height: int, width: int, size: Size, upscale: bool = True) -> tuple[int, int]:
    """(height, width) of a decoded frame: native, short side scaled to `size` (up only if `upscale`), or (h, w)."""
    if size is None or (isinstance(size, int) and not upscale and size >= min(height, width)):
        return height, width
    if isinstance(size, int):
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return size


class _Lazy:
    """A decoded frame converted to an array only when (and once) it is used."""

    def __init__(self, frame: av.VideoFrame, convert: Callable[[av.VideoFrame], np.ndarray]):
        self.frame, self.convert, self.array = frame, convert, None

    def get(self) -> np.ndarray:
        if self.array is None:
            self.array = self.convert(self.frame)
        return self.array


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream, indices: np.ndarray,
            convert: Callable[[av.VideoFrame], np.ndarray]) -> np.ndarray:
    """Seek to the keyframe before indices.min(), decode forward, convert only the frames that are asked for."""
    wanted = np.unique(indices)
    rate, time_base = _rate(stream), stream.time_base
    start_pts = stream.start_time or 0
    found: dict[int, np.ndarray] = {}

    def run(seek_pts: int | None) -> bool:
        """Decode from a seek point; False when the first decoded frame is past the first wanted index."""
        if seek_pts is not None:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        pending = deque(int(i) for i in wanted)
        previous: _Lazy | None = None
        for count, frame in enumerate(container.decode(stream)):
            if frame.pts is None and seek_pts is not None:
                return False  # no timestamps: only counting from the first frame gives indices
            index = count if frame.pts is None else round((frame.pts - start_pts) * time_base * rate)
            if previous is None and seek_pts is not None and index > pending[0]:
                return False
            current = _Lazy(frame, convert)
            while pending and pending[0] < index:  # a variable-rate gap: the previous frame is still on screen
                found[pending.popleft()] = (previous or current).get()
            if pending and pending[0] == index:
                found[pending.popleft()] = current.get()
            if not pending:
                return True
            previous = current
        if previous is None:
            raise DataError("no frame could be decoded")
        while pending:  # the stream ended before the header's frame count: repeat the last frame
            found[pending.popleft()] = previous.get()
        return True

    first_pts = start_pts + int(Fraction(int(wanted[0])) / rate / time_base)
    if not run(first_pts if wanted[0] > 0 else None):
        found.clear()
        container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        run(None)
    return np.stack([found[int(i)] for i in indices])


Converter = Callable[[av.VideoFrame], np.ndarray]


def _open_clip(path: str | Path, choose: Callable[[VideoInfo], np.ndarray],
               convert_for: Callable[[VideoInfo], Converter], threads: bool) -> tuple[np.ndarray, VideoInfo]:
    """Open once, read the metadata, choose indices, decode them with the converter made for this video."""
    path = Path(path)
    with av.open(str(path)) as container:
        stream = _video_stream(container)
        if threads:  # frame + slice threads: faster alone, no gain when DataLoader workers already fill the cores
            stream.thread_type = "AUTO"
        info = _info(container, stream)
        indices = np.asarray(choose(info), dtype=np.int64)
        if indices.ndim != 1 or indices.size == 0 or indices.min() < 0:
            raise DataError("frame indices must be a non-empty 1-D array of non-negative ints")
        return _decode(container, stream, indices, convert_for(info)), info


def read_clip(path: str | Path, choose: Callable[[VideoInfo], np.ndarray], size: Size = None,
              upscale: bool = True, threads: bool = False) -> tuple[np.ndarray, VideoInfo]:
    """Open a video once, pick indices from its metadata with `choose`, return uint8 RGB (T, H, W, C) and info.

    upscale=False keeps the native size when an int `size` is larger than the short side (cheaper: the
    transforms resize once anyway).
    """
    def convert_for(info: VideoInfo):
        height, width = output_size(info.height, info.width, size, upscale)
        return lambda frame: frame.to_ndarray(format="rgb24", width=width, height=height)

    return _open_clip(path, choose, convert_for, threads)


@dataclass(frozen=True)
class YuvFrames:
    """8-bit planar YUV frames, (T, N) uint8: per frame the Y plane (H x W), then U and V (each
    ceil(H / sy) x ceil(W / sx) for chroma subsampling `chroma` = (sy, sx): (2, 2) 4:2:0, (1, 2) 4:2:2,
    (1, 1) 4:4:4), rows packed without padding, so odd sizes keep every pixel.

    Reading YUV skips the RGB conversion (most of the cost of decoding a clip); the conversion is folded into
    the transforms' colour matrix instead. `full_range`: JPEG range (0..255) rather than video range (16..235);
    `bt709`: ITU-R BT.709 coefficients rather than BT.601.
    """

    data: np.ndarray
    height: int
    width: int
    full_range: bool
    bt709: bool
    chroma: tuple[int, int] = (2, 2)

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y (T, H, W), U and V (T, ceil(H / sy), ceil(W / sx)) planes."""
        h, w = self.height, self.width
        ch, cw = -(-h // self.chroma[0]), -(-w // self.chroma[1])
        u = self.data[:, h * w:h * w + ch * cw].reshape(-1, ch, cw)
        return self.data[:, :h * w].reshape(-1, h, w), u, self.data[:, h * w + ch * cw:].reshape(-1, ch, cw)


# 8-bit planar YUV read as decoded -> chroma subsampling (sy, sx); other frames are converted by swscale
_PLANAR_YUV = {"yuv420p": (2, 2), "yuvj420p": (2, 2), "yuv422p": (1, 2), "yuvj422p": (1, 2),
               "yuv444p": (1, 1), "yuvj444p": (1, 1)}
_BT709, _MPEG_RANGE, _JPEG_RANGE = 1, 1, 2  # AVColorSpace / AVColorRange values


def _encoding(frame: av.VideoFrame) -> tuple[str | None, bool]:
    """(the frame's format if its planes are used as decoded, else None; whether its values are full range).

    Ranges as ffmpeg reads them: yuvj formats and `color_range=pc` are full range, gray is full range unless
    tagged `tv`, RGB and palette frames are converted to full-range YUV. Planes are used as decoded where ffmpeg's
    own YUV -> RGB conversion repeats each chroma sample over its pixels (4:2:0 and 4:2:2 of even height, as
    swscale's unscaled converter) or needs no chroma upsampling (4:4:4); every other frame is converted by
    swscale to 4:4:4 with bicubic chroma, as its scaled path (ffmpeg's default flags) does.
    """
    fmt = frame.format
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer:
        return None, True
    if len([c for c in fmt.components if not c.is_alpha]) == 1:
        return None, frame.color_range != _MPEG_RANGE
    chroma = _PLANAR_YUV.get(fmt.name)
    as_decoded = chroma == (1, 1) or (chroma is not None and frame.height % 2 == 0)
    return fmt.name if as_decoded else None, fmt.name.startswith("yuvj") or frame.color_range == _JPEG_RANGE


def _packed_planes(frame: av.VideoFrame) -> np.ndarray:
    """The three planes of a planar YUV frame, rows without their line padding, one after the other."""
    return np.concatenate([np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:plane.height, :plane.width]
                           .reshape(-1) for plane in frame.planes[:3]])


def read_clip_yuv(path: str | Path, choose: Callable[[VideoInfo], np.ndarray], size: Size = None,
                  upscale: bool = True, threads: bool = False) -> tuple[YuvFrames, VideoInfo]:
    """As `read_clip`, but frames stay planar YUV with ffmpeg's colours (see `_encoding`): 8-bit 4:2:0, 4:2:2
    or 4:4:4 as decoded, or converted by swscale to 4:4:4 (other formats, odd heights, and `size`: frames
    scaled there, bilinear, antialiased when shrinking, as the transforms' resize)."""
    encoding: list = []  # (height, width, full range, BT.709, chroma subsampling) of the returned planes
    reformatter = VideoReformatter()

    def convert(frame: av.VideoFrame) -> np.ndarray:
        height, width = output_size(frame.height, frame.width, size, upscale)
        name, full = _encoding(frame)
        if name is None or (frame.height, frame.width) != (height, width):
            colour_range = ColorRange.JPEG if full else ColorRange.MPEG
            same_size = (frame.height, frame.width) == (height, width)
            name, frame = "yuv444p", reformatter.reformat(
                frame, width, height, "yuv444p", Colorspace.ITU601 if frame.format.is_rgb else None,
                Colorspace.ITU601 if frame.format.is_rgb else None,
                Interpolation.BICUBIC if same_size else Interpolation.BILINEAR, colour_range, colour_range)
        if not encoding:  # swscale rescales YUV without changing its matrix; RGB becomes BT.601
            encoding.extend([height, width, full, frame.colorspace == _BT709, _PLANAR_YUV[name]])
        return _packed_planes(frame)

    frames, info = _open_clip(path, choose, lambda info: convert, threads)
    return YuvFrames(frames, *encoding), info


def read_frames(path: str | Path, indices, size: Size = None, threads: bool = False) -> np.ndarray:
    """uint8 frames (T, H, W, C) at `indices` (any order, repeats allowed); `size` decodes at reduced size."""
    frames, _ = read_clip(path, lambda info: np.asarray(indices), size, threads=threads)
    return frames
