"""What a video file holds, read with PyAV as ffmpeg reports it: frame count, frame rate, time axis, displayed
size and rotation (`probe`), without decoding more than the first frame.

- Frame count: the header's where its index lists every packet (mp4/mov, a complete AVI), less what an edit
  list hides; else the video stream's packets, counted by demuxing (Matroska/WebM, MPEG-TS, a truncated AVI),
  never the container's duration (audio may outlast the video, streams may start late).
- Time axis: index i is the frame on screen at `t0 + i / fps`, t0 the first displayed frame's timestamp, fps the
  stream's average rate (exact where it rounds a standard rate), or its packets over their span where the
  container stores none or one they disagree with by more than a frame (`frame_rate`). AVI stores decode order
  only: there the decoder's output dts (ffmpeg's `best_effort_timestamp`) is the display position, and the axis
  also covers the empty chunks of dropped frames, as ffmpeg's default output does. Timestamps that jump (MPEG-TS
  joined with `cat`) are made continuous as ffmpeg's CLI makes them (`Continuity`).
- Rotation: the display matrix, which PyAV exposes on decoded frames only, hence the first frame, read as
  ffmpeg 5.1's autorotate reads it (its angle, and a mirror where the matrix flips the picture).
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.error

from vivit.errors import BadVideoError, DataError, failure_reason


@dataclass(frozen=True)
class VideoInfo:
    """Stream metadata: frames on the time axis, fps, seconds, displayed size and rotation."""

    frames: int
    fps: float
    duration: float
    width: int  # as displayed (after `rotation`)
    height: int
    rotation: int = 0  # clockwise degrees the coded picture is turned for display: 0, 90, 180, 270 (or any)
    mirrored: bool = False  # then flipped left-right (a mirrored display matrix: front cameras)


@dataclass(frozen=True)
class Timeline:
    """Maps a decoded frame's timestamp (time-base ticks) to the first index at which it is on screen."""

    origin: int  # timestamp of the first displayed frame
    ticks_per_frame: Fraction  # 1 / (fps * time_base)
    use_dts: bool  # AVI: the decoder's output dts is the display position, the parsed pts are not
    seekable: bool = True  # False where timestamps jump: only a decode from the start knows their offset

    def timestamp(self, frame: av.VideoFrame) -> int | None:
        return frame_timestamp(frame, self.use_dts)

    def first_index(self, timestamp: int) -> int:
        """ceil of the frame's position, less half a tick: a timestamp rounded to the time base still lands on
        the index it was rounded from."""
        return math.ceil((timestamp - self.origin - Fraction(1, 2)) / self.ticks_per_frame)

    def seek_target(self, index: int) -> int:
        """Where to seek for `index`; the origin (a decode from the start) where the file's timestamps jump."""
        return self.origin + math.floor(index * self.ticks_per_frame) if self.seekable else self.origin


def frame_timestamp(frame: av.VideoFrame, use_dts: bool) -> int | None:
    return frame.dts if use_dts or frame.pts is None else frame.pts


@contextmanager
def open_video(path: str | Path) -> Iterator[av.container.InputContainer]:
    """The open container; tags that are not UTF-8 (Latin-1 titles in old AVIs) are not an error, an empty file
    (an interrupted download or copy) is said to be one rather than ffmpeg's 'invalid data'. What bad media
    raises while it is open (PyAV's and the OS's errors, ours) becomes a `BadVideoError` naming the file."""
    path = Path(path)
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise DataError("empty file (0 bytes)")
        with av.open(str(path), metadata_errors="replace") as container:
            yield container
    except BadVideoError:
        raise
    except (av.error.FFmpegError, OSError, DataError) as e:
        raise BadVideoError(path, failure_reason(e)) from e


def is_image_format(demuxer: str) -> bool:
    """ffmpeg's image demuxers (libavformat img2dec.c: image2, <codec>_pipe; gif, apng, webp): one frame there is a
    still picture, which a video model is not meant to classify; an animated GIF or APNG is a video."""
    return demuxer in ("image2", "image2pipe", "gif", "apng", "webp") or demuxer.endswith("_pipe")


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise DataError("no video stream")
    return container.streams.video[0]


def rewind(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> None:
    """Back to the first packet: a seek to time 0 (one to the stream's start time can land later in MPEG-TS),
    else to the first indexed timestamp (FLV starting after 0 has no entry at or before 0: EPERM)."""
    try:
        container.seek(min(0, container.start_time or 0))
    except av.error.FFmpegError:
        first = min((entry.timestamp for entry in stream.index_entries), default=stream.start_time)
        if first is None:
            raise
        container.seek(first, stream=stream)


_TS_DISCONT = 0x200  # AVFMT_TS_DISCONT: formats whose timestamps may jump (MPEG-TS/PS)


class Continuity:
    """Packet timestamps made continuous as ffmpeg's CLI makes them for formats flagged AVFMT_TS_DISCONT
    (fftools/ffmpeg.c process_input, FFmpeg 5.1): a packet whose dts is more than 10 s from the dts expected after
    the previous packet, or over 0.1 s before the previous packet's dts or frame's timestamp (files joined with
    `cat`: timestamps restart), is moved to the expected dts, and every later packet by as much."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream):
        base, rate = stream.time_base, stream.average_rate or stream.guessed_rate
        self.active = bool(container.format.flags & _TS_DISCONT) and base is not None
        self.near, self.far = (Fraction(1, 10) / base, 10 / base) if self.active else (0, 0)
        self.step = round(1 / (rate * base)) if self.active and rate else 0  # a packet without a duration
        self.offset, self.next_dts, self.dts, self.pts, self.jumps = 0, None, None, None, 0

    def packet(self, packet: av.Packet) -> None:
        if not self.active:
            return
        if packet.dts is not None and self.next_dts is not None:
            delta = packet.dts + self.offset - self.next_dts
            latest = max(t for t in (self.dts, self.pts) if t is not None)
            if abs(delta) > self.far or packet.dts + self.offset + self.near < latest:
                self.offset, self.jumps = self.offset - delta, self.jumps + 1
        if self.offset:
            packet.dts = None if packet.dts is None else packet.dts + self.offset
            packet.pts = None if packet.pts is None else packet.pts + self.offset
        if packet.dts is not None:
            self.dts = packet.dts
            step = packet.duration or self.step
            self.next_dts = packet.dts + step if step else None

    def frame(self, frame: av.VideoFrame) -> None:
        self.pts = frame.pts if frame.pts is not None else self.pts


def decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream
                   ) -> Iterator[av.VideoFrame]:
    """The stream's frames as ffmpeg decodes them: a packet the decoder rejects (a file cut short, a corrupt
    packet) is skipped as ffmpeg skips it, and the frames still in the decoder come out at the end; timestamps
    that jump are made continuous (`Continuity`)."""
    continuity = Continuity(container, stream)
    for packet in container.demux(stream):
        continuity.packet(packet)
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue
        for frame in frames:
            continuity.frame(frame)
            yield frame


def indexed_frames(stream: av.video.stream.VideoStream) -> int:
    """The header's frame count where its index lists every packet (mp4/mov, a complete AVI), less the packets
    an edit list hides at the start or end (a cut made with stream copy); 0 where the index is incomplete."""
    entries = stream.index_entries
    total = len(entries)
    if not stream.frames or stream.frames != total:
        return 0
    head = next((i for i in range(total) if not entries[i].is_discard), total)
    tail = next((i for i in range(total - head) if not entries[total - 1 - i].is_discard), 0)
    return total - head - tail


def avi_frames(stream: av.video.stream.VideoStream) -> int:
    """AVI: frames on the time axis where the index lists every chunk up to the header's last frame, counting the
    empty chunks of dropped frames, which the index leaves out but whose time ffmpeg's default output fills with
    the frame before; 0 where the index is incomplete (a truncated file)."""
    entries = stream.index_entries
    if not entries or not stream.frames or entries[-1].timestamp + 1 != stream.frames:
        return 0
    return entries[-1].timestamp - entries[0].timestamp + 1


@dataclass(frozen=True)
class Packets:
    """The video packets that hold a frame, demuxed without decoding, their timestamps made continuous."""

    count: int
    stamped: int  # how many carry a timestamp (the pts; the dts in AVI)
    first: int | None  # the earliest and latest of those timestamps
    last: int | None
    jumps: int  # timestamp jumps made continuous (`Continuity`)


def _count_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   use_dts: bool) -> Packets:
    continuity = Continuity(container, stream)
    count, stamps = 0, []
    for packet in container.demux(stream):
        continuity.packet(packet)
        if packet.size > 0 and not packet.is_discard:
            count += 1
            stamp = packet.dts if use_dts else packet.pts
            if stamp is not None:
                stamps.append(stamp)
    if count:  # (a stream without packets cannot be rewound: EPERM)
        rewind(container, stream)
    return Packets(count, len(stamps), min(stamps, default=None), max(stamps, default=None), continuity.jumps)


def _standard_rate(rate: Fraction, tolerance: Fraction = Fraction(1, 100000)) -> Fraction:
    """The standard rate within `tolerance` (relative) of `rate`, else `rate`: a whole rate, a multiple of 1/12 fps
    or an NTSC rate k * 1000/1001 (ffmpeg's list, libavformat get_std_framerate, holds such rates). Matroska
    stores a frame's duration in ns, which ffmpeg reads back as 19001/317 for 60000/1001, and its timestamps in
    ms: at any rate but the exact one, a frame whose timestamp is rounded up from a half lands an index late."""
    for standard in (Fraction(round(rate * 12), 12), Fraction(round(rate * Fraction(1001, 1000)) * 1000, 1001)):
        if standard and abs(rate / standard - 1) <= tolerance:
            return standard
    return rate


def frame_rate(stream: av.video.stream.VideoStream, packets: Packets | None) -> Fraction | None:
    """The stream's average rate, exact where it rounds a standard rate; where `packets` were counted, their own
    rate (intervals over their span) where the container stores no rate, or one that puts their last timestamp
    more than a frame from where it is (a Matroska DefaultDuration of 30 fps over a webcam's frames 67 ms apart;
    24 then 30 fps joined by stream copy)."""
    stored = stream.average_rate
    if packets and packets.stamped > 1 and packets.last > packets.first:
        intervals, span = packets.stamped - 1, (packets.last - packets.first) * stream.time_base
        if not stored or abs(span * stored - intervals) > 1:  # a standard rate where the timestamps allow it
            return _standard_rate(Fraction(intervals) / span, stream.time_base / span)
    rate = stored or stream.guessed_rate or stream.base_rate
    return _standard_rate(Fraction(rate)) if rate else None


def stream_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream
          ) -> tuple[VideoInfo, Timeline]:
    """Metadata from the headers, the video packets where the header has no complete count, and the first frame
    (PyAV exposes the display matrix only on decoded frames)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise DataError(f"video stream has no picture size ({width}x{height})")
    use_dts, packets = container.format.name == "avi", None
    frames = avi_frames(stream) if use_dts else indexed_frames(stream)
    if not frames:  # no per-stream count (Matroska, MPEG-TS), or an incomplete index (a truncated AVI)
        packets = _count_packets(container, stream, use_dts)
        frames = packets.count
    if frames <= 0:
        raise DataError("video stream has no frames")
    if frames == 1 and is_image_format(container.format.name):
        raise DataError(f"a still image ({container.format.name}), not a video")
    rate = frame_rate(stream, None if use_dts else packets)  # AVI: its rate is the time base, dts count frames
    if not rate or rate <= 0 or stream.time_base is None:
        raise DataError("unknown frame rate")
    if use_dts and packets and packets.stamped:  # dropped frames (empty chunks) keep their place on the axis
        frames = round((packets.last - packets.first) * stream.time_base * rate) + 1
    first = next(decoded_frames(container, stream), None)
    if first is None:
        raise DataError("no frame could be decoded")
    rewind(container, stream)
    rotation, mirrored = display_turn(first)
    if rotation in (90, 270):
        width, height = height, width
    timeline = Timeline(frame_timestamp(first, use_dts) or 0, 1 / (rate * stream.time_base), use_dts,
                        seekable=not (packets and packets.jumps))
    return VideoInfo(frames=int(frames), fps=float(rate), duration=float(frames / rate), width=width,
                     height=height, rotation=rotation, mirrored=mirrored), timeline


def _c_round(x: float) -> float:
    return math.copysign(math.floor(abs(x) + 0.5), x)  # C's round(): halves away from zero


def display_turn(frame: av.VideoFrame) -> tuple[int, bool]:
    """(clockwise degrees, mirrored) that show `frame` as ffmpeg 5.1's autorotate does: its angle is
    -round(av_display_rotation_get) in [0, 360) (fftools/cmdutils.c get_rotation), and at 0, 90, 180 and 270 the
    signs of matrix entries 0, 3 and 4 choose a flip (fftools/ffmpeg_filter.c configure_input_video_filter:
    transpose cclock_flip / clock_flip, hflip, vflip); other angles turn without a flip (its rotate filter)."""
    side = next((s for s in frame.side_data if s.type.name == "DISPLAYMATRIX"), None)
    if side is None:
        return 0, False
    m = [int.from_bytes(bytes(side)[4 * i:4 * i + 4], sys.byteorder, signed=True) / 65536 for i in range(5)]
    if math.hypot(m[0], m[3]) == 0 or math.hypot(m[1], m[4]) == 0:  # no angle (NaN): ffmpeg inserts nothing
        return 0, False
    angle = -_c_round(-math.degrees(math.atan2(m[1] / math.hypot(m[1], m[4]), m[0] / math.hypot(m[0], m[3]))))
    angle = int(angle - 360 * math.floor(angle / 360 + 0.9 / 360))
    if angle == 90:
        return 90, m[3] > 0  # transpose=cclock_flip: turned clockwise, then mirrored
    if angle == 270:
        return 270, m[3] < 0  # transpose=clock_flip
    if angle in (0, 180):  # hflip where m[0] < 0 (at 180 only), vflip where m[4] < 0; both: a half turn
        hflip, vflip = angle == 180 and m[0] < 0, m[4] < 0
        return (180, not hflip) if vflip else (0, hflip)  # a vflip is a half turn, mirrored
    return (angle, False) if angle > 1 else (0, False)


def probe(path: str | Path) -> VideoInfo:
    """Metadata of a video file: headers, video packets where needed, and its first frame for the rotation."""
    with open_video(path) as container:
        return stream_info(container, video_stream(container))[0]


def count_frames(path: str | Path) -> tuple[int, int]:
    """(frames that decode, frames the file promises: `probe`'s count, or the header's where it has no index)."""
    with open_video(path) as container:
        stream = video_stream(container)
        info, _ = stream_info(container, stream)
        if container.format.name == "avi" and avi_frames(stream):  # chunks that hold a frame: not dropped ones
            promised = len(stream.index_entries)
        else:
            promised = info.frames if indexed_frames(stream) else max(info.frames, stream.frames)
        return sum(1 for _ in decoded_frames(container, stream)), promised
