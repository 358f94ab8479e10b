"""The filters ffmpeg puts between decoder and output: the display turn of a rotated or mirrored video, run
as ffmpeg graphs on PyAV frames (fftools/ffmpeg_filter.c configure_input_video_filter, FFmpeg 5.1)."""

from __future__ import annotations

from fractions import Fraction

import av
import av.filter

from vivit.data.media import VideoInfo

Filter = tuple[str, str]  # an ffmpeg filter's name and arguments

# what ffmpeg 5.1's autorotate inserts for (clockwise turn, mirrored) (`media.display_turn`)
TURNS: dict[tuple[int, bool], list[Filter]] = {
    (0, True): [("hflip", "")], (90, False): [("transpose", "clock")], (90, True): [("transpose", "cclock_flip")],
    (180, False): [("hflip", ""), ("vflip", "")], (180, True): [("vflip", "")],
    (270, False): [("transpose", "cclock")], (270, True): [("transpose", "clock_flip")]}


def display_filters(info: VideoInfo) -> list[Filter]:
    """ffmpeg's filters that show the coded picture as displayed: a turn and mirror, or its rotate filter (an
    angle that is not a multiple of 90 degrees: the picture keeps its size, corners filled black)."""
    if info.rotation % 90:
        return [("rotate", f"{info.rotation:f}*PI/180")]
    return TURNS.get((info.rotation, info.mirrored), [])


def turns_late(info: VideoInfo, frame: av.VideoFrame) -> bool:
    """Whether ffmpeg converts this frame before turning it: its transpose filter takes only formats whose chroma
    is subsampled alike in both directions (not 4:2:2, 4:1:1, 4:4:0), so they become RGB first."""
    return info.rotation in (90, 270) and frame.format.chroma_width(256) != frame.format.chroma_height(256)


class Filters:
    """ffmpeg filters run on each frame; the graph is rebuilt when the frames' size or format changes (ffmpeg
    reconfigures its graph then)."""

    def __init__(self, filters: list[Filter]):
        self.filters, self.graph, self.source = filters, None, None

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if not self.filters:
            return frame
        if self.source != (frame.width, frame.height, frame.format.name):
            self.source = (frame.width, frame.height, frame.format.name)
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


def displayed_size(info: VideoInfo, frame: av.VideoFrame) -> tuple[int, int]:
    """(height, width) of `frame` as displayed."""
    return (frame.width, frame.height) if info.rotation in (90, 270) else (frame.height, frame.width)
