"""Video decoding with PyAV that shows what ffmpeg shows: clips of chosen frame indices, upright, as arrays.

What a caller can rely on (each point is tested against ffmpeg's own decode in tests/test_decode_ffmpeg.py):

- **Time axis and frame count** as `vivit.data.media.probe` reports them: index i is the frame on screen at
  `t0 + i / fps`. For constant frame rate video that is the i-th frame `ffmpeg -i X -f rawvideo -` outputs,
  also in B-frame AVIs (XviD, H.264) and MPEG-TS; for variable frame rate video a frame may repeat or be skipped.
  Requested indices past the real end repeat the last frame, with one warning per file.
- **Rotation.** A display matrix (phone videos; mirrored: front cameras) shows every frame as ffmpeg 5.1's
  autorotate does, with its filters (transpose, hflip, vflip; rotate for other angles) where it puts them: before
  the conversion, after it for formats its transpose does not take (4:2:2 turned a quarter), so RGB and planar
  YUV readers see the displayed picture. Frames whose size changes mid-stream are scaled to the first size.
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
import numpy as np

from vivit.data.filters import Filter, Filters, display_filters, displayed_size, turns_late
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
                                                                av.video.stream.VideoStream, VideoInfo, Timeline]]:
    """The open container, its video stream, metadata and time axis."""
    with open_video(path) as container:
        stream = video_stream(container)
        if threads:  # frame + slice threads: faster alone, no gain when DataLoader workers already fill the cores
            stream.thread_type = "AUTO"
        yield container, stream, *stream_info(container, stream)


def _open_clip(path: str | Path, choose: Callable[[VideoInfo], np.ndarray],
               convert_for: Callable[[VideoInfo], Converter], threads: bool) -> tuple[np.ndarray, VideoInfo]:
    """Open once, read the metadata, choose indices, decode them with the converter made for this video (it
    shows frames as displayed, `info.height` x `info.width`, or at the size it was asked for)."""
    with _opened(path, threads) as (container, stream, info, timeline):
        indices = np.asarray(choose(info), dtype=np.int64)
        if indices.ndim != 1 or indices.size == 0 or indices.min() < 0:
            raise DataError("frame indices must be a non-empty 1-D array of non-negative ints")
        return _decode(container, stream, indices, convert_for(info), info, timeline, str(path)), info


def read_clip(path: str | Path, choose: Callable[[VideoInfo], np.ndarray], size: Size = None,
              upscale: bool = True, threads: bool = False) -> tuple[np.ndarray, VideoInfo]:
    """Open a video once, pick indices from its metadata with `choose`, return uint8 RGB (T, H, W, C) and info.

    upscale=False keeps the native size when an int `size` is larger than the short side (cheaper: the
    transforms resize once anyway). RGB comes from the filter graph of `ffmpeg -pix_fmt rgb24 [-s WxH]`: the
    display turn, a scale (bicubic) where the size changes, then the format, so its values are ffmpeg's also
    where swscale interpolates chroma (odd sizes) or converts before turning (4:2:2). Frames of another size than
    the first (a resolution change mid-stream) are scaled to the first's size, as ffmpeg's autoscale does.
    """
    def convert_for(info: VideoInfo) -> Converter:
        height, width = output_size(info.height, info.width, size, upscale)
        scale = [("scale", f"{width}:{height}:flags=bicubic")]
        graphs = {same: Filters([*display_filters(info), *([] if same else scale), ("format", "rgb24")])
                  for same in (False, True)}
        return lambda frame: graphs[displayed_size(info, frame) == (height, width)](frame).to_ndarray()

    return _open_clip(path, choose, convert_for, threads)



@dataclass(frozen=True)
class YuvFrames:
    """8-bit planar YUV frames, (T, N) uint8: per frame the Y plane (H x W), then U and V (each
    ceil(H / sy) x ceil(W / sx) for chroma subsampling `chroma` = (sy, sx): (2, 2) 4:2:0, (1, 2) 4:2:2,
    (2, 1) 4:2:2 turned a quarter, (1, 1) 4:4:4), rows packed without padding, so odd sizes keep every pixel.

    Reading YUV skips the RGB conversion of whole frames; the transforms convert only their crop, as ffmpeg
    converts frames. `full_range`: JPEG range (0..255) rather than video range (16..235); `colorspace`: the
    AVColorSpace whose coefficients swscale applies (1 BT.709, 4 FCC, 7 SMPTE 240M, 9 and 10 BT.2020, any
    other BT.601; `sws_getCoefficients`), or 0 (AVCOL_SPC_RGB): the planes are G, B, R
    (RGB sources, and YUV frames ffmpeg converts through its scaled path: its own RGB, 4:4:4).
    """

    data: np.ndarray
    height: int
    width: int
    full_range: bool
    colorspace: int
    chroma: tuple[int, int] = (2, 2)

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y (T, H, W), U and V (T, ceil(H / sy), ceil(W / sx)) planes."""
        h, w = self.height, self.width
        ch, cw = -(-h // self.chroma[0]), -(-w // self.chroma[1])
        u = self.data[:, h * w:h * w + ch * cw].reshape(-1, ch, cw)
        return self.data[:, :h * w].reshape(-1, h, w), u, self.data[:, h * w + ch * cw:].reshape(-1, ch, cw)


# 8-bit planar YUV read as decoded -> chroma subsampling (sy, sx); other frames are converted by swscale
_PLANAR_YUV = {"yuv420p": (2, 2), "yuvj420p": (2, 2), "yuv422p": (1, 2), "yuvj422p": (1, 2),
               "yuv444p": (1, 1), "yuvj444p": (1, 1), "gbrp": (1, 1)}
_LAYOUT = {(2, 2): "yuv420p", (1, 2): "yuv422p", (2, 1): "yuv440p", (1, 1): "yuv444p"}  # what swscale makes
_MPEG_RANGE, _JPEG_RANGE = 1, 2  # AVColorRange values
_RGB, _BT470BG = 0, 5  # AVColorSpace values: planar RGB; BT.601 (what swscale reads a YUV frame tagged 0 as)
# the scale filter's name of each AVColorSpace with its own coefficients (the others are BT.601 to swscale)
_MATRIX_NAMES = {1: "bt709", 4: "fcc", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}


def _encoding(frame: av.VideoFrame) -> tuple[str | None, bool]:
    """(the frame's format if its planes are used as decoded, else None; whether its values are full range).

    Ranges as ffmpeg reads them: yuvj formats and `color_range=pc` are full range, gray is full range unless
    tagged `tv`, RGB and palette frames become planar RGB (gbrp). Planes are used as decoded where ffmpeg's
    own YUV -> RGB conversion repeats each chroma sample over its pixels (4:2:0 and 4:2:2 of even height, as
    swscale's unscaled converter); every other frame (4:4:4 too: swscale converts it at 15 bits) becomes ffmpeg's
    own RGB (`_to_planar`).
    """
    fmt = frame.format
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer:
        return None, True
    if len([c for c in fmt.components if not c.is_alpha]) == 1:
        return None, frame.color_range != _MPEG_RANGE
    chroma = _PLANAR_YUV.get(fmt.name)
    as_decoded = chroma not in (None, (1, 1)) and frame.height % 2 == 0
    return fmt.name if as_decoded else None, fmt.name.startswith("yuvj") or frame.color_range == _JPEG_RANGE


def _packed_planes(frame: av.VideoFrame) -> list[np.ndarray]:
    """The three planes of a planar YUV frame, rows without their line padding (a negative line size, as ffmpeg's
    vflip makes: rows from the bottom up in memory, which PyAV's buffer starts at); of an rgb24 frame its
    G, B and R planes (as gbrp)."""
    if frame.format.name == "rgb24":
        rgb = frame.to_ndarray()
        return [rgb[..., 1], rgb[..., 2], rgb[..., 0]]
    rows = [np.frombuffer(plane, np.uint8).reshape(-1, abs(plane.line_size))[:plane.height, :plane.width]
            for plane in frame.planes[:3]]
    return [r[::-1] if plane.line_size < 0 else r for r, plane in zip(rows, frame.planes)]


def read_clip_yuv(path: str | Path, choose: Callable[[VideoInfo], np.ndarray], size: Size = None,
                  upscale: bool = True, threads: bool = False,
                  min_shrink: float = 1.0) -> tuple[YuvFrames, VideoInfo]:
    """As `read_clip`, but frames stay planar YUV with ffmpeg's colours (see `_encoding`): 8-bit 4:2:0, 4:2:2
    as decoded; other formats (4:4:4, 10-bit, odd sizes, 4:1:1) as ffmpeg's own RGB planes; with `size`, frames
    scaled there by ffmpeg's scale filter (`_to_planar`: bilinear, antialiased when shrinking, as the transforms' resize).

    `min_shrink`: frames are scaled down to `size` only where that divides their short side by at least this
    much, else kept at native size (a small reduction saves little memory and costs the exact crop geometry).
    """
    made: list[_YuvConverter] = []

    def convert_for(info: VideoInfo) -> _YuvConverter:
        made.append(_YuvConverter(info, size, upscale, min_shrink))
        return made[0]

    frames, info = _open_clip(path, choose, convert_for, threads)
    return YuvFrames(frames, *made[0].encoding), info


def _to_planar(frame: av.VideoFrame, height: int, width: int, full: bool, layout: str | None = None,
               before: tuple[Filter, ...] = ()) -> Filters:
    """The filters that make a frame that is not used as decoded `height` x `width` planes, after the filters
    `before`. At native size a YUV frame becomes ffmpeg's own RGB (`-pix_fmt rgb24`: its chroma upsampling, 15-bit
    intermediates and dithering from higher bit depths, so odd sizes, 10-bit, 4:1:1 are its pixels exactly; kept as
    planar RGB by `_packed_planes`). Otherwise ffmpeg's scale filter to 8-bit planar YUV keeping the frame's matrix
    (a conversion to BT.601 would round twice): resized, bilinear to 4:4:4; `layout`: that format, bicubic (ffmpeg's
    autoscale). RGB (and palette, Bayer) becomes planar RGB, so its crops are its pixels."""
    same_size = (frame.height, frame.width) == (height, width)
    rgb = frame.format.is_rgb or frame.format.has_palette or frame.format.is_bayer
    if same_size and not rgb and layout is None:
        return Filters([*before, ("format", "rgb24")])
    flags = "bicubic" if same_size or layout else "bilinear"
    layout = layout or ("gbrp" if rgb else "yuv444p")
    matrix = _MATRIX_NAMES.get(frame.colorspace, "bt601")
    scale = f"{width}:{height}:flags={flags}" + ("" if rgb else f":out_range={'full' if full else 'limited'}"
                                                 f":in_color_matrix={matrix}:out_color_matrix={matrix}")
    return Filters([*before, ("scale", scale), ("format", layout)])


def _turn_planes(planes: list[np.ndarray], info: VideoInfo) -> list[np.ndarray]:
    """Planes turned a quarter clockwise (90) or counter-clockwise (270), then mirrored where the video is."""
    turned = [np.rot90(plane, -1 if info.rotation == 90 else 1) for plane in planes]
    return [plane[:, ::-1] for plane in turned] if info.mirrored else turned


class _YuvConverter:
    """`read_clip_yuv`'s frame -> packed planes; `encoding`: the planes' (height, width, full range, colorspace,
    chroma subsampling), set at the first frame.

    Frames are turned as displayed first (ffmpeg's filters), except where ffmpeg converts before turning
    (`filters.turns_late`): their planes are turned here, chroma (1, 2) becoming (2, 1). Frames of another size or
    format than the first (a resolution change mid-stream) are scaled to the first's size and layout, as
    ffmpeg's autoscale scales them to its first output size."""

    def __init__(self, info: VideoInfo, size: Size, upscale: bool, min_shrink: float):
        self.info, self.size, self.upscale, self.min_shrink = info, size, upscale, min_shrink
        rgb = [("format", "gbrp")] if info.rotation % 90 else []  # ffmpeg's rotate filter turns RGB: so do we
        self.turn = Filters(display_filters(info) + rgb)
        self.encoding: tuple | None = None
        self.source: tuple[int, int, str] | None = None  # the first frame's width, height and format
        self.planar: Filters | None = None  # the first frame's scale filter, where it needs one
        self.autoscale: Filters | None = None

    def _size(self, frame: av.VideoFrame) -> tuple[int, int]:
        """A frame's (height, width) as displayed, or at reduced size (shrinking by at least min_shrink)."""
        height, width = displayed_size(self.info, frame)
        target = output_size(height, width, self.size, self.upscale)
        return (height, width) if min(target) < min(height, width) < min(target) * self.min_shrink else target

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        source = (frame.width, frame.height, frame.format.name)
        if self.encoding and source != self.source:
            height, width, full, colorspace, chroma = self.encoding
            if self.autoscale is None:
                layout = "gbrp" if colorspace == _RGB else _LAYOUT[chroma]
                self.autoscale = _to_planar(frame, height, width, full, layout, tuple(self.turn.filters))
            return np.concatenate([p.reshape(-1) for p in _packed_planes(self.autoscale(frame))])
        height, width = self._size(frame)
        late = (height, width) == displayed_size(self.info, frame) and turns_late(self.info, frame)
        if not late:
            frame = self.turn(frame)
        name, full = _encoding(frame)
        if name is None or (not late and (frame.height, frame.width) != (height, width)):
            if self.planar is None:  # a late turn is at native size: the frame's own
                self.planar = _to_planar(frame, *((frame.height, frame.width) if late else (height, width)), full)
            name, frame = self.planar.filters[-1][1], self.planar(frame)
            if name == "rgb24":  # ffmpeg's RGB, as planar RGB
                name, full = "gbrp", True
        planes, chroma = _packed_planes(frame), _PLANAR_YUV[name]
        if late:
            planes, chroma = _turn_planes(planes, self.info), chroma[::-1]
        if self.encoding is None:
            colorspace = _RGB if name == "gbrp" else frame.colorspace or _BT470BG
            self.source, self.encoding = source, (height, width, full, colorspace, chroma)
        return np.concatenate([p.reshape(-1) for p in planes])


def iter_frames_yuv(path: str | Path, size: Size = None, upscale: bool = True, min_shrink: float = 1.0,
                    step: int = 1, threads: bool = False) -> Iterator[tuple[int, YuvFrames]]:
    """Frames 0, step, 2 step, ... of the time axis in one sequential decode, each `(index, one-frame YuvFrames)`
    exactly as `read_clip_yuv` returns that index (upright, at reduced size, placed by timestamp: a VFR frame
    may repeat or be skipped; a file cut short gives the frames ffmpeg decodes, then repeats the last); only one
    decoded frame is held at a time, so memory does not grow with length. `threads`: frame threading, about
    1.5x faster on 2 cores, but it drops the frames around a corrupt packet without a word."""
    if step < 1:
        raise DataError(f"step must be >= 1, got {step}")
    with _opened(path, threads) as (container, stream, info, timeline):
        convert = _YuvConverter(info, size, upscale, min_shrink)
        index, previous, shown = 0, None, -1
        for frame in decoded_frames(container, stream):
            timestamp = timeline.timestamp(frame)
            shown = shown + 1 if timestamp is None else timeline.first_index(timestamp)
            current = _Lazy(frame, convert)
            while index < min(shown, info.frames):  # the previous frame is on screen until this one starts
                if index % step == 0:
                    data = (previous or current).get()
                    yield index, YuvFrames(data[None], *convert.encoding)
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
                yield index, YuvFrames(previous.get()[None], *convert.encoding)


def read_frames(path: str | Path, indices, size: Size = None, threads: bool = False) -> np.ndarray:
    """uint8 frames (T, H, W, C) at `indices` (any order, repeats allowed); `size` decodes at reduced size."""
    frames, _ = read_clip(path, lambda info: np.asarray(indices), size, threads=threads)
    return frames
