"""What a video file holds, read with PyAV as ffmpeg reports it: frame count, frame rate, time axis, displayed
size and rotation (`probe`), without decoding more than the first frame.

- Frame count: the header's where its index lists every packet (mp4/mov, a complete AVI), less what an edit
  list hides; else the video stream's packets, counted by demuxing (Matroska/WebM, MPEG-TS, a truncated AVI),
  never the container's duration (audio may outlast the video, streams may start late).
- Time axis: index i is the frame on screen at `t0 + i / fps`, t0 the first displayed frame's timestamp, fps the
  stream's average rate (or its packets over their span where the container stores none). AVI stores decode
  order only: there the decoder's output dts (ffmpeg's `best_effort_timestamp`) is the display position.
- Rotation: the display matrix, which PyAV exposes on decoded frames only, hence the first frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.error

from vivit.errors import DataError


@dataclass(frozen=True)
class VideoInfo:
    """Stream metadata: frames on the time axis, fps, seconds, displayed size and rotation."""

    frames: int
    fps: float
    duration: float
    width: int  # as displayed (after `rotation`)
    height: int
    rotation: int = 0  # clockwise degrees the coded picture is turned for display: 0, 90, 180 or 270


@dataclass(frozen=True)
class Timeline:
    """Maps a decoded frame's timestamp (time-base ticks) to the first index at which it is on screen."""

    origin: int  # timestamp of the first displayed frame
    ticks_per_frame: Fraction  # 1 / (fps * time_base)
    use_dts: bool  # AVI: the decoder's output dts is the display position, the parsed pts are not

    def timestamp(self, frame: av.VideoFrame) -> int | None:
        return frame_timestamp(frame, self.use_dts)

    def first_index(self, timestamp: int) -> int:
        """ceil of the frame's position, less half a tick: a timestamp rounded to the time base still lands on
        the index it was rounded from."""
        return math.ceil((timestamp - self.origin - Fraction(1, 2)) / self.ticks_per_frame)

    def seek_target(self, index: int) -> int:
        return self.origin + math.floor(index * self.ticks_per_frame)


def frame_timestamp(frame: av.VideoFrame, use_dts: bool) -> int | None:
    return frame.dts if use_dts or frame.pts is None else frame.pts


def open_video(path: str | Path) -> av.container.InputContainer:
    """Open for reading; tags that are not UTF-8 (Latin-1 titles in old AVIs) are not an error, an empty file
    (an interrupted download or copy) is said to be one rather than ffmpeg's 'invalid data'."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise DataError("empty file (0 bytes)")
    return av.open(str(path), metadata_errors="replace")


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


def decoded_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream
                   ) -> Iterator[av.VideoFrame]:
    """The stream's frames as ffmpeg decodes them: a packet the decoder rejects (a file cut short, a corrupt
    packet) is skipped as ffmpeg skips it, and the frames still in the decoder come out at the end."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


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


def _count_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream
                   ) -> tuple[int, int | None]:
    """(packets of the video stream, ticks they span or None): demuxing only, no decoding."""
    starts, steps = [], []
    count = 0
    for packet in container.demux(stream):
        if packet.size > 0 and not packet.is_discard:
            count += 1
            if packet.pts is not None:
                starts.append(packet.pts)
                steps.append(packet.duration or 0)
    rewind(container, stream)
    if len(starts) < 2 or max(starts) == min(starts):
        return count, None
    end = max(start + step for start, step in zip(starts, steps))
    if not any(steps):  # no packet durations (some VFR Matroska): the mean step stands for the last one
        end += (end - min(starts)) / (len(starts) - 1)
    return count, int(end - min(starts))


def stream_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream
          ) -> tuple[VideoInfo, Timeline]:
    """Metadata from the headers, the video packets where the header has no complete count, and the first frame
    (PyAV exposes the display matrix only on decoded frames)."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise DataError(f"video stream has no picture size ({width}x{height})")
    frames, span = indexed_frames(stream), None
    if not frames:  # no per-stream count (Matroska, MPEG-TS), or an incomplete index (a truncated AVI)
        frames, span = _count_packets(container, stream)
    if frames <= 0:
        raise DataError("video stream has no frames")
    rate = stream.average_rate or (Fraction(frames) / (span * stream.time_base) if span else None)
    rate = rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0 or stream.time_base is None:
        raise DataError("unknown frame rate")
    first = next(decoded_frames(container, stream), None)
    if first is None:
        raise DataError("no frame could be decoded")
    rewind(container, stream)
    rotation = round(-(first.rotation or 0) / 90) % 4 * 90  # PyAV: counter-clockwise degrees in [-180, 180]
    if rotation in (90, 270):
        width, height = height, width
    use_dts, rate = container.format.name == "avi", Fraction(rate)
    timeline = Timeline(frame_timestamp(first, use_dts) or 0, 1 / (rate * stream.time_base), use_dts)
    return VideoInfo(frames=int(frames), fps=float(rate), duration=float(frames / rate), width=width,
                     height=height, rotation=rotation), timeline


def probe(path: str | Path) -> VideoInfo:
    """Metadata of a video file: headers, video packets where needed, and its first frame for the rotation."""
    with open_video(path) as container:
        return stream_info(container, video_stream(container))[0]


def count_frames(path: str | Path) -> tuple[int, int]:
    """(frames that decode, frames the file promises: `probe`'s count, or the header's where it has no index)."""
    with open_video(path) as container:
        stream = video_stream(container)
        info, _ = stream_info(container, stream)
        promised = info.frames if indexed_frames(stream) else max(info.frames, stream.frames)
        return sum(1 for _ in decoded_frames(container, stream)), promised
