"""Video decoding with PyAV that shows what ffmpeg shows: clips of chosen frame indices, upright, as arrays.

What a caller can rely on (each point is tested against ffmpeg's own decode in tests/test_decode_ffmpeg.py):

- **Time axis and frame count** as `vivit.data.media.probe` reports them: index i is the frame on screen at
  `t0 + i / fps`. For constant frame rate video that is the i-th frame `ffmpeg -i X -f rawvideo -` outputs,
  also in B-frame AVIs (XviD, H.264) and MPEG-TS; for variable frame rate video a frame may repeat or be skipped.
  Requested indices past the real end repeat the last frame, with one warning per file.
- **Rotation.** A display matrix (phone videos) turns every frame upright with ffmpeg's own filters, as its
  autorotate does, before any conversion, so RGB and planar YUV readers see the displayed picture.
- **Seeks.** A clip is read by seeking to the keyframe before its first index and decoding forward to its last
  index; a seek that lands after the wanted frame or decodes nothing (MPEG-TS) retries earlier, then decodes
  from the start.
- **Bad media** raises one of `DECODE_ERRORS`; anything else is a bug and is not caught as a bad file.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import av.error
import av.filter
import numpy as np

from vivit.data.media import VideoInfo, probe  # noqa: F401 (re-exported: the decoding API)
from vivit.data.media import Timeline, decoded_frames, open_video, rewind, stream_info, video_stream
from vivit.errors import DataError

log = logging.getLogger(__name__)

# what bad media raises: PyAV's errors (InvalidDataError, EOFError, FileNotFoundError, ...), OS errors, ours;
# not ValueError / RuntimeError in general, so that a bug in the pipeline is not reported as a bad file
DECODE_ERRORS = (av.error.FFmpegError, OSError, DataError)

Size = int | tuple[int, int] | None  # None: native size; int: short side; (height, width): exact size


def output_size(height: int, width: int, size: Size, upscale: bool = True) -> tuple[int, int]:
    """(height, width) of a decoded frame: native, short side scaled to `size` (up only if `upscale`), or (h, w)."""
    if size is None or (isinstance(size, int) and not upscale and size >= min(height, width)):
        return height, width
    if isinstance(size, int):
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    return size


# what ffmpeg's autorotate inserts for a display matrix's clockwise turn
_TURNS = {90: [("transpose", "clock")], 180: [("hflip", ""), ("vflip", "")], 270: [("transpose", "cclock")]}


class _Filters:
    """ffmpeg filters run on each frame (the graph is built for the first one: a stream's frames share a format).
    Turning frames this way lets every converter, RGB or planar YUV, see the picture as displayed."""

    def __init__(self, filters: list[tuple[str, str]]):
        self.filters, self.graph = filters, None

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if not self.filters:
            return frame
        if self.graph is None:
            self.graph = av.filter.Graph()
            self.graph.threads = 1  # DataLoader workers already fill the cores
            nodes = [self.graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                           time_base=frame.time_base or Fraction(1, 1000))]
            nodes += [self.graph.add(name, args) for name, args in self.filters]
            nodes.append(self.graph.add("buffersink"))
            for a, b in zip(nodes, nodes[1:]):
                a.link_to(b)
            self.graph.configure()
        self.graph.push(frame)
        return self.graph.pull()


class _Lazy:
    """A decoded frame converted to an array only when (and once) it is used."""

    def __init__(self, frame: av.VideoFrame, convert: Callable[[av.VideoFrame], np.ndarray]):
        self.frame, self.convert, self.array = frame, convert, None

    def get(self) -> np.ndarray:
        if self.array is None:
            self.array = self.convert(self.frame)
        return self.array


_warned_past_end: set[str] = set()
_SEEK_TRIES = 3  # then decode from the start


_SEARCHED = {"mpegts", "mpeg"}  # MPEG-TS/PS: no index, a seek searches timestamps in the file and can land late


def _earlier(container: av.container.InputContainer, stream: av.video.stream.VideoStream, target: int,
             step: int) -> int:
    """A seek target before the keyframe that a seek to `target` landed on: the indexed keyframe before that one
    (in B-frame AVIs a keyframe is shown after frames decoded after it), or `step` ticks earlier (MPEG-TS/PS)."""
    keys = [entry.timestamp for entry in stream.index_entries if entry.is_keyframe and entry.timestamp <= target]
    if container.format.name in _SEARCHED or len(keys) < 2:
        return target - step
    return sorted(keys)[-2]


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream, indices: np.ndarray,
            convert: Callable[[av.VideoFrame], np.ndarray], info: VideoInfo, timeline: Timeline,
            name: str) -> np.ndarray:
    """Seek to the keyframe before indices.min(), decode forward, convert only the frames that are asked for."""
    wanted = np.unique(indices)
    found: dict[int, np.ndarray] = {}

    def run(seek: int | None) -> bool:
        """Decode from the keyframe before timestamp `seek` (None: the start); False when it landed too late."""
        if seek is None:
            rewind(container, stream)
        else:
            container.seek(seek, stream=stream, backward=True, any_frame=False)
        found.clear()
        pending, previous, shown = deque(int(i) for i in wanted), None, -1
        for frame in decoded_frames(container, stream):
            timestamp = timeline.timestamp(frame)
            if timestamp is not None:
                shown = timeline.first_index(timestamp)  # the first index at which the frame is on screen
            elif previous is not None or seek is None:
                shown += 1  # no timestamp (none in the file, or frames flushed at its end): the next index
            else:
                return False  # nothing to place a first frame after a seek
            if previous is None and seek is not None and shown > pending[0]:
                return False
            current = _Lazy(frame, convert)
            while pending and pending[0] < shown:  # the previous frame is on screen until this one starts
                found[pending.popleft()] = (previous or current).get()
            if not pending:
                return True
            previous = current
        if previous is None:
            if seek is not None:
                return False
            raise DataError("no frame could be decoded")
        if pending[-1] >= info.frames or shown < info.frames - 2:
            if name not in _warned_past_end:
                _warned_past_end.add(name)
                log.warning("%s: frames up to %d were asked for, the video ends after frame %d: repeating it",
                            name, pending[-1], shown)
        while pending:
            found[pending.popleft()] = previous.get()
        return True

    target, step = timeline.seek_target(int(wanted[0])), math.ceil(timeline.ticks_per_frame * Fraction(info.fps))
    for attempt in range(_SEEK_TRIES):  # a seek that lands late or decodes nothing retries earlier
        if target <= timeline.origin:
            break
        if run(target):
            return np.stack([found[int(i)] for i in indices])
        target = _earlier(container, stream, target, step << attempt)
    run(None)
    return np.stack([found[int(i)] for i in indices])


Converter = Callable[[av.VideoFrame], np.ndarray]


@contextmanager
def _opened(path: str | Path, threads: bool) -> Iterator[tuple[av.container.InputContainer,
                                                                av.video.stream.VideoStream, VideoInfo, Timeline,
                                                                _Filters]]:
    """The open container, its video stream, metadata, time axis and the filters that turn frames upright."""
    with open_video(path) as container:
        stream = video_stream(container)
        if threads:  # frame + slice threads: faster alone, no gain when DataLoader workers already fill the cores
            stream.thread_type = "AUTO"
        info, timeline = stream_info(container, stream)
        yield container, stream, info, timeline, _Filters(_TURNS.get(info.rotation, []))


def _open_clip(path: str | Path, choose: Callable[[VideoInfo], np.ndarray],
               convert_for: Callable[[VideoInfo], Converter], threads: bool) -> tuple[np.ndarray, VideoInfo]:
    """Open once, read the metadata, choose indices, decode them upright with the converter made for this video
    (the converter sees frames of the displayed size `info.height` x `info.width`)."""
    with _opened(path, threads) as (container, stream, info, timeline, upright):
        indices = np.asarray(choose(info), dtype=np.int64)
        if indices.ndim != 1 or indices.size == 0 or indices.min() < 0:
            raise DataError("frame indices must be a non-empty 1-D array of non-negative ints")
        convert = convert_for(info)
        return _decode(container, stream, indices, lambda frame: convert(upright(frame)), info, timeline,
                       str(path)), info


def read_clip(path: str | Path, choose: Callable[[VideoInfo], np.ndarray], size: Size = None,
              upscale: bool = True, threads: bool = False) -> tuple[np.ndarray, VideoInfo]:
    """Open a video once, pick indices from its metadata with `choose`, return uint8 RGB (T, H, W, C) and info.

    upscale=False keeps the native size when an int `size` is larger than the short side (cheaper: the
    transforms resize once anyway). RGB comes from the filters `ffmpeg -pix_fmt rgb24` inserts (scale, bicubic,
    then format), so its values are ffmpeg's also where swscale interpolates chroma (odd sizes).
    """
    def convert_for(info: VideoInfo):
        height, width = output_size(info.height, info.width, size, upscale)
        rgb = _Filters([("scale", f"{width}:{height}:flags=bicubic"), ("format", "rgb24")])
        return lambda frame: rgb(frame).to_ndarray()

    return _open_clip(path, choose, convert_for, threads)



@dataclass(frozen=True)
class YuvFrames:
    """8-bit planar YUV frames, (T, N) uint8: per frame the Y plane (H x W), then U and V (each
    ceil(H / sy) x ceil(W / sx) for chroma subsampling `chroma` = (sy, sx): (2, 2) 4:2:0, (1, 2) 4:2:2,
    (1, 1) 4:4:4), rows packed without padding, so odd sizes keep every pixel.

    Reading YUV skips the RGB conversion of whole frames; the transforms convert only their crop, as ffmpeg
    converts frames. `full_range`: JPEG range (0..255) rather than video range (16..235); `bt709`: ITU-R BT.709
    coefficients rather than BT.601.
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
    ffmpeg's scale filter as its scaled path to RGB (ffmpeg's default flags) upsamples chroma (`_to_planar`).
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
                  upscale: bool = True, threads: bool = False,
                  min_shrink: float = 1.0) -> tuple[YuvFrames, VideoInfo]:
    """As `read_clip`, but frames stay planar YUV with ffmpeg's colours (see `_encoding`): 8-bit 4:2:0, 4:2:2
    or 4:4:4 as decoded, or converted by ffmpeg's scale filter (`_to_planar`: other formats such as 10-bit,
    odd heights, and `size`: frames scaled there, bilinear, antialiased when shrinking, as the transforms' resize).

    `min_shrink`: frames are scaled down to `size` only where that divides their short side by at least this
    much, else kept at native size (a small reduction saves little memory and costs the exact crop geometry).
    """
    convert, encoding = _yuv_converter(size, upscale, min_shrink)
    frames, info = _open_clip(path, choose, lambda info: convert, threads)
    return YuvFrames(frames, *encoding), info


def _to_planar(frame: av.VideoFrame, height: int, width: int, full: bool) -> _Filters:
    """ffmpeg's scale filter to 8-bit planar YUV of `height` x `width` (its chroma siting and filters, dithered
    from higher bit depths). At native size, as ffmpeg's `-pix_fmt rgb24` conversion: bicubic chroma, and chroma
    halved horizontally stays so at even widths (4:2:2: each sample then covers two pixels, as swscale's RGB
    output uses it; odd widths force its full chroma interpolation); resized: bilinear to 4:4:4. RGB becomes
    BT.601 YUV."""
    same_size = (frame.height, frame.width) == (height, width)
    halved = not frame.format.is_rgb and frame.width % 2 == 0 and frame.format.chroma_width() * 2 == frame.width
    matrix = ":out_color_matrix=bt601" if frame.format.is_rgb or frame.format.has_palette else ""
    scale = (f"{width}:{height}:flags={'bicubic' if same_size else 'bilinear'}"
             f":out_range={'full' if full else 'limited'}{matrix}")
    return _Filters([("scale", scale), ("format", "yuv422p" if same_size and halved else "yuv444p")])


def _yuv_converter(size: Size, upscale: bool, min_shrink: float) -> tuple[Converter, list]:
    """`read_clip_yuv`'s frame -> packed planes converter, and the list it fills with the planes' encoding
    (height, width, full range, BT.709, chroma subsampling) at its first frame."""
    encoding: list = []
    to_planar: list[_Filters] = []  # made for the first frame that needs it: a stream's frames share one format

    def convert(frame: av.VideoFrame) -> np.ndarray:
        height, width = output_size(frame.height, frame.width, size, upscale)
        short, target = min(frame.height, frame.width), min(height, width)
        if target < short < target * min_shrink:  # shrinking by less than min_shrink: native size
            height, width = frame.height, frame.width
        name, full = _encoding(frame)
        if name is None or (frame.height, frame.width) != (height, width):
            if not to_planar:
                to_planar.append(_to_planar(frame, height, width, full))
            name, frame = to_planar[0].filters[-1][1], to_planar[0](frame)
        if not encoding:  # the scale filter converts to BT.601 (its untagged output), as its RGB output uses
            encoding.extend([height, width, full, frame.colorspace == _BT709, _PLANAR_YUV[name]])
        return _packed_planes(frame)

    return convert, encoding


def iter_frames_yuv(path: str | Path, size: Size = None, upscale: bool = True, min_shrink: float = 1.0,
                    step: int = 1, threads: bool = False) -> Iterator[tuple[int, YuvFrames]]:
    """Frames 0, step, 2 step, ... of the time axis in one sequential decode, each `(index, one-frame YuvFrames)`
    exactly as `read_clip_yuv` returns that index (upright, at reduced size, placed by timestamp: a VFR frame
    may repeat or be skipped; a file cut short gives the frames ffmpeg decodes, then repeats the last); only one
    decoded frame is held at a time, so memory does not grow with length. `threads`: frame threading, about
    1.5x faster on 2 cores, but it drops the frames around a corrupt packet without a word."""
    if step < 1:
        raise DataError(f"step must be >= 1, got {step}")
    with _opened(path, threads) as (container, stream, info, timeline, upright):
        convert, encoding = _yuv_converter(size, upscale, min_shrink)
        convert_upright = lambda f: convert(upright(f))  # noqa: E731
        index, previous, shown = 0, None, -1
        for frame in decoded_frames(container, stream):
            timestamp = timeline.timestamp(frame)
            shown = shown + 1 if timestamp is None else timeline.first_index(timestamp)
            current = _Lazy(frame, convert_upright)
            while index < min(shown, info.frames):  # the previous frame is on screen until this one starts
                if index % step == 0:
                    data = (previous or current).get()
                    yield index, YuvFrames(data[None], *encoding)
                index += 1
            if index >= info.frames:
                return
            previous = current
        if previous is None:
            raise DataError("no frame could be decoded")
        if index < info.frames - 2:
            log.warning("%s: the video ends after frame %d of %d: repeating it", path, index - 1, info.frames)
        for index in range(index, info.frames):
            if index % step == 0:
                yield index, YuvFrames(previous.get()[None], *encoding)


def read_frames(path: str | Path, indices, size: Size = None, threads: bool = False) -> np.ndarray:
    """uint8 frames (T, H, W, C) at `indices` (any order, repeats allowed); `size` decodes at reduced size."""
    frames, _ = read_clip(path, lambda info: np.asarray(indices), size, threads=threads)
    return frames
