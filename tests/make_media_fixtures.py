"""Regenerate tests/fixtures/media/: small videos made by the ffmpeg CLI, with ffmpeg's own decode of each.

    python tests/make_media_fixtures.py        # needs `ffmpeg` and `ffprobe` on PATH (apt-get install ffmpeg)
    python tests/make_media_fixtures.py NAME   # only fixture NAME (its files and expected.json entry)

For every fixture X this writes X (the video), X.npz (`frames`: uint8 (T, H, W, 3), exactly what
`ffmpeg -i X -map 0:v:0 -fps_mode passthrough -f rawvideo -pix_fmt rgb24 -` prints: every decoded frame once, in
display order, upright) and one entry of expected.json with ffprobe's facts: displayed size, rotation, frame
count of the decode, frame rate, the header's frame count, and each decoded frame's timestamp. The test suite
reads only these committed files; it never runs ffmpeg. Re-running gives the same frames and facts (checked
with ffmpeg 5.1); Matroska/WebM files differ only in the random segment UIDs their muxer writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
import struct
from typing import Callable
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "fixtures" / "media"


def source(seconds: float, size: str = "32x24") -> str:
    """A lavfi source of moving colour bands (0..255, a moving square): every frame differs from the next."""
    red = "8*floor(16+15.9*sin(2*PI*(X/W+N/17)))"  # 8-level steps keep ffmpeg's decode small once compressed
    green = "8*floor(16+15.9*cos(2*PI*(Y/H+N/11)))"
    blue = "if(lt(abs(X-mod(3*N,W)),4)*lt(abs(Y-H/2),4),255,8*mod(N,32))"
    return f"nullsrc=s={size}:r=25:d={seconds},format=gbrp,geq=r='{red}':g='{green}':b='{blue}'"


@dataclass(frozen=True)
class Fixture:
    name: str
    args: list[str]  # ffmpeg arguments between the inputs and the output file
    inputs: list[str] = field(default_factory=lambda: lavfi(source(0.4)))
    note: str = ""
    remux: tuple[list[str], list[str]] | None = None  # a second pass, stream copy: (input, output) options
    cut: float | None = None  # keep only this fraction of the file's bytes (a download or copy cut short)
    finish: Callable[[Path], None] | None = None  # edits the written file (what the ffmpeg CLI cannot write)


def lavfi(graph: str) -> list[str]:
    return ["-f", "lavfi", "-i", graph]


# frame times (ms) 0, 53, 80, 133, 160, ...: gaps of 53 and 27 ms alternate, and frames 9-12 are dropped
VFR = lavfi(f"{source(1.6)},settb=1/1000,setpts='(N*40+13*mod(N*N,4))/1000/TB',select='not(between(n,9,12))'")
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1"]
FIXTURES = [
    # ffmpeg 5.1 writes a display matrix when remuxing with a rotate tag, which it takes counter-clockwise
    *[Fixture(f"rotate{r}.mp4", [*X264, "-g", "5"], note=f"display matrix: shown turned {r} degrees clockwise",
              remux=([], ["-c", "copy", "-metadata:s:v:0", f"rotate={(360 - r) % 360}"])) for r in (90, 180, 270)],
    Fixture("edit_list.mp4", [*X264, "-bf", "2", "-g", "25"], lavfi(source(4)),
            "cut with stream copy (-ss 1.3 -c copy -t 1.5): an edit list hides the 13 frames before 1.3 s",
            remux=(["-ss", "1.3"], ["-c", "copy", "-t", "1.5"])),
    Fixture("h264_bframes.avi", [*X264, "-bf", "3", "-g", "15"], lavfi(source(1.6)),
            "H.264 in AVI with B-frames: packets carry no presentation time"),
    Fixture("mpeg4_bframes.avi", ["-c:v", "mpeg4", "-bf", "2", "-g", "12", "-q:v", "3", "-vtag", "XVID"],
            lavfi(source(1.6)), "MPEG-4 Part 2 (XviD fourcc) in AVI with B-frames, as UCF101/HMDB51"),
    Fixture("h264_bframes.ts", [*X264, "-bf", "3", "-g", "15"], lavfi(source(1.6)),
            "MPEG-TS with B-frames (no index: seeks by timestamp)"),
    Fixture("long_audio.mkv", [*X264, "-c:a", "aac", "-b:a", "12k", "-ac", "1"],
            [*lavfi(source(1)), *lavfi("sine=f=440:r=8000:d=6")],
            "1 s of video, 6 s of audio: the container lasts 6 s"),
    Fixture("start_offset.webm", ["-c:v", "libvpx", "-b:v", "100k", "-g", "10", "-output_ts_offset", "2.5"],
            note="WebM (no per-stream frame count) whose first frame is at 2.5 s"),
    Fixture("truncated_mjpeg.avi", ["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p", "-s", "16x16"],
            lavfi(source(10)), "MJPEG AVI whose header says 250 frames, cut after 32"),
    *[Fixture(f"mjpeg_{fmt}.avi", ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", fmt], note=f"full-range {fmt}")
      for fmt in ("yuvj420p", "yuvj422p", "yuvj444p")],
    Fixture("mjpeg_odd_33x25.avi", ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"], lavfi(source(0.4, "33x25")),
            "full-range 4:2:0 MJPEG of odd width and height (a webcam's odd-size crop)"),
    Fixture("gray.mkv", ["-c:v", "ffv1", "-pix_fmt", "gray"], note="8-bit gray, lossless"),
    Fixture("rgb.mkv", ["-c:v", "ffv1", "-pix_fmt", "bgr0"], note="RGB (bgr0), lossless"),
    Fixture("vfr.mkv", ["-c:v", "ffv1", "-fps_mode", "vfr"],
            VFR,
            "variable frame rate, lossless: irregular gaps of 27-53 ms and four frames dropped"),
    Fixture("vfr.mp4", [*X264, "-bf", "2", "-fps_mode", "vfr", "-video_track_timescale", "1000"],
            VFR,
            "variable frame rate H.264 with B-frames"),
    Fixture("latin1_title.avi", ["-c:v", "mpeg4", "-q:v", "3", "-metadata", "title=caf\udce9"],
            note="a title tag in Latin-1, not UTF-8 (the byte 0xe9), as old AVI tools write"),
    Fixture("odd_321x241.mkv", ["-c:v", "ffv1", "-pix_fmt", "yuv420p"],
            lavfi("testsrc=s=321x241:r=25:d=0.12"), "odd size, 4:2:0, lossless"),
    Fixture("odd_321x241.avi", ["-c:v", "mpeg4", "-q:v", "4", "-pix_fmt", "yuv420p"],
            lavfi("testsrc=s=321x241:r=25:d=0.12"), "odd size, MPEG-4 Part 2"),
    Fixture("late_start.flv", ["-c:v", "flv", "-q:v", "4", "-c:a", "libmp3lame", "-b:a", "8k", "-ac", "1"],
            [*lavfi(source(0.4)), *lavfi("sine=f=440:r=11025:d=0.4")],
            "FLV whose video starts at 25 ms, after the MP3 audio's delay: no index entry at time 0"),
    Fixture("h264_10bit.mp4", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p10le", "-threads", "1"],
            note="10-bit 4:2:0 H.264 (as HDR phone video): converted by ffmpeg's scaler, not used as decoded"),
    Fixture("cut_faststart.mp4", [*X264, "-g", "10", "-movflags", "+faststart"], lavfi(source(1.6)),
            "mp4 with its index first, cut at 60 % of its bytes: the index lists 40 frames, 12 decode", cut=0.6),
    Fixture("odd_height_422.mp4", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv422p", "-threads", "1"],
            lavfi(f"{source(0.4, '32x25')}"), "4:2:2 of odd height (25 rows): converted by ffmpeg's scaler"),
    # time axis: rates that disagree with the frames' timestamps, dropped frames, timestamps that jump
    Fixture("webcam_25_real15.mkv", ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj422p", "-fps_mode", "passthrough",
                                     "-bsf:v", "setts=ts='round(N*200/3)'"], lavfi(f"{source(0.6)},settb=1/1000"),
            "Matroska whose DefaultDuration says 25 fps while its frames come every 66.7 ms (15 fps, ms timestamps)"),
    Fixture("rate_25_then_30.mkv", ["-c:v", "mpeg4", "-q:v", "3", "-fps_mode", "passthrough",
                                    "-bsf:v", "setts=ts='if(lt(N,12),TS,480+round((N-12)*100/3))'"],
            lavfi(f"{source(1.08)},settb=1/1000"),
            "12 frames at 25 fps then 15 at 30 fps, DefaultDuration 25 fps (as parts joined by stream copy)"),
    Fixture("dropped_frames.avi", ["-c:v", "mpeg4", "-q:v", "3", "-fps_mode", "passthrough"],
            lavfi(f"{source(0.8)},select='not(between(n,5,9))'"),
            "AVI of 20 chunks whose frames 5-9 were dropped: empty chunks keep their time"),
    Fixture("ntsc_5994.mkv", [*X264, "-bf", "2"], lavfi(source(0.55).replace(":r=25:", ":r=60000/1001:")),
            "59.94 fps in Matroska: ms timestamps, a rate read back as 19001/317; frame 30 at 500.5 ms is 501"),
]


# --- pixel path fixtures: display matrices, 4:2:2 turned, a size change, colour matrices, 4:1:1 / 4:1:0 ---
def display_matrix(a: int, b: int, c: int, d: int) -> Callable[[Path], None]:
    """Writes the tkhd matrix (a b; c d) of an mp4 in place (ffmpeg writes rotations only, not mirrors)."""
    def finish(path: Path) -> None:
        data = bytearray(path.read_bytes())
        tkhd = data.find(b"tkhd")
        assert data[tkhd + 4] == 0  # version 0: the matrix is 40 bytes after the version and flags
        struct.pack_into(">9i", data, tkhd + 44, a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
        path.write_bytes(bytes(data))
    return finish


def append_ts(graph: str, offset: float) -> Callable[[Path], None]:
    """Appends a second MPEG-TS whose timestamps continue at `offset` s (TS parts join by concatenation)."""
    def finish(path: Path) -> None:
        part = path.with_name(f"part_{path.name}")
        ffmpeg(*lavfi(graph), *X264, "-g", "5", "-output_ts_offset", str(offset), str(part))
        path.write_bytes(path.read_bytes() + part.read_bytes())
        part.unlink()
    return finish


SHORT = lavfi(source(0.2))  # 5 frames
X264_422 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv422p", "-threads", "1"]
FIXTURES += [
    *[Fixture(f"mirror_{name}.mp4", X264, SHORT, f"display matrix {matrix} (tkhd patched after ffmpeg): "
              f"ffmpeg 5.1 shows it {shown}", finish=display_matrix(*matrix))
      for name, matrix, shown in [("hflip", (-1, 0, 0, 1), "flipped left-right"),
                                  ("vflip", (1, 0, 0, -1), "flipped upside down"),
                                  ("transpose", (0, 1, 1, 0), "transposed"),
                                  ("antitranspose", (0, -1, -1, 0), "transposed along the other diagonal")]],
    Fixture("rotate45.mp4", X264_422, SHORT, "4:2:2, display matrix of 45 degrees: ffmpeg's rotate filter (on RGB)",
            remux=([], ["-c", "copy", "-metadata:s:v:0", "rotate=315"])),
    Fixture("yuv422p_rotate90.mp4", X264_422, SHORT,
            "4:2:2 turned 90 degrees: ffmpeg converts to RGB before turning (transpose takes no 4:2:2)",
            remux=([], ["-c", "copy", "-metadata:s:v:0", "rotate=270"])),
    Fixture("size_change.ts", [*X264, "-g", "5"], SHORT,
            "32x24 then 24x18 from 0.2 s (MPEG-TS parts joined): ffmpeg scales the second part to 32x24",
            finish=append_ts(source(0.2, "24x18"), 0.28)),  # 5 frames + x264's 2 frames of B-frame delay
    *[Fixture(f"x264_{space}.mp4", [*X264, "-colorspace", space], SHORT, f"8-bit 4:2:0 tagged {space}")
      for space in ("bt2020nc", "smpte240m", "fcc")],
    *[Fixture(f"ffv1_{fmt}.mkv", ["-c:v", "ffv1", "-pix_fmt", fmt], SHORT, f"{fmt}, lossless (as DV NTSC: 4:1:1)")
      for fmt in ("yuv411p", "yuv410p")],
    Fixture("h264_10bit_bt709_turned270.mp4", [*X264[:4], "-pix_fmt", "yuv420p10le", "-colorspace", "bt709",
                                               "-threads", "1"], lavfi(source(0.4)),
            "10-bit BT.709 4:2:0 shown turned 270 degrees (phone HDR-less 10-bit video)",
            remux=([], ["-c", "copy", "-metadata:s:v:0", "rotate=90"])),
    Fixture("png_rgb48.mov", ["-c:v", "png", "-pix_fmt", "rgb48be"], SHORT, "16-bit RGB PNG frames in QuickTime"),
]
FIXTURES += [  # time axis: MPEG-TS parts joined by concatenation, the second's timestamps starting again
    Fixture("joined_by_cat.ts", [*X264, "-g", "5"], lavfi(source(0.6)),
            "two MPEG-TS files joined by `cat` (the second's bytes appended): timestamps restart where it begins",
            finish=append_ts(f"{source(0.6)},negate", 0)),
]


def ffmpeg(*args: str, stdout=None) -> bytes:
    done = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                          check=True, stdout=stdout or subprocess.PIPE)
    return done.stdout


def ffprobe(path: Path, *args: str) -> dict:
    done = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout)


def make(fixture: Fixture) -> Path:
    path = OUT / fixture.name
    if fixture.remux:
        plain = OUT / f"plain_{fixture.name}"
        ffmpeg(*fixture.inputs, *fixture.args, str(plain))
        ffmpeg(*fixture.remux[0], "-i", str(plain), *fixture.remux[1], str(path))
        plain.unlink()
    elif fixture.name.startswith("truncated"):
        ffmpeg(*fixture.inputs, *fixture.args, str(path))
        packets = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pos")["packets"]
        assert len(packets) == 250, len(packets)
        path.write_bytes(path.read_bytes()[:int(packets[32]["pos"]) - 8])  # before the 33rd chunk's header
    else:
        ffmpeg(*fixture.inputs, *fixture.args, str(path))
        if fixture.cut:
            data = path.read_bytes()
            path.write_bytes(data[:int(len(data) * fixture.cut)])
    if fixture.finish:
        fixture.finish(path)
    return path


def facts(path: Path, note: str) -> tuple[dict, np.ndarray]:
    stream = ffprobe(path, "-select_streams", "v:0", "-show_streams", "-count_packets")["streams"][0]
    rotation = 0
    for side in stream.get("side_data_list", []):
        if "rotation" in side:  # ffprobe: counter-clockwise degrees; we record the clockwise turn for display
            rotation = int(-side["rotation"]) % 360
    frames = ffprobe(path, "-select_streams", "v:0", "-show_entries",
                     "frame=best_effort_timestamp,pts,pkt_dts")["frames"]
    assert not path.name.startswith("rotate") or rotation == int(path.name[6:-4]), (path, rotation)
    width, height = stream["width"], stream["height"]
    if rotation in (90, 270):
        width, height = height, width
    raw = ffmpeg("-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "rawvideo",
                 "-pix_fmt", "rgb24", "-")
    decoded = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    default = ffmpeg("-i", str(path), "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-")
    assert len(decoded) == len(frames), (path, len(decoded), len(frames))
    changes = np.abs(np.diff(decoded.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert changes.size == 0 or changes.min() > 0.1, (path, changes.min())  # neighbours differ: order is testable
    return {
        "note": note,
        "codec": stream["codec_name"],
        "pix_fmt": stream["pix_fmt"],
        "width": width,  # displayed (after rotation)
        "height": height,
        "rotation": rotation,
        "frames": len(decoded),  # frames ffmpeg decodes
        "header_frames": int(stream.get("nb_frames", 0) or 0),  # what the header claims (0: not stored)
        "packets": int(stream["nb_read_packets"]),
        "avg_frame_rate": stream["avg_frame_rate"],
        "r_frame_rate": stream["r_frame_rate"],
        "time_base": stream["time_base"],
        "start_time": stream.get("start_time"),
        "default_output_equals_passthrough": default == raw,  # ffmpeg's plain `-f rawvideo` gives the same
        "timestamps": [f.get("best_effort_timestamp") for f in frames],  # in time_base units, display order
    }, decoded


def main(names: list[str]) -> None:
    """Every fixture, or only those named (their files and expected.json entries; the others are kept)."""
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        raise SystemExit("error: ffmpeg and ffprobe are needed (apt-get install ffmpeg)")
    unknown = set(names) - {fixture.name for fixture in FIXTURES}
    if unknown:
        raise SystemExit(f"error: no fixture named {sorted(unknown)}")
    OUT.mkdir(parents=True, exist_ok=True)
    expected = json.loads((OUT / "expected.json").read_text())["files"] if names else {}
    for fixture in [f for f in FIXTURES if not names or f.name in names]:
        path = make(fixture)
        expected[fixture.name], frames = facts(path, fixture.note)
        np.savez_compressed(OUT / f"{fixture.name}.npz", frames=frames)
        fps = expected[fixture.name]["avg_frame_rate"]
        print(f"{fixture.name:22} {path.stat().st_size:7d} B  {frames.shape}  average rate {fps}")
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    expected = {fixture.name: expected[fixture.name] for fixture in FIXTURES if fixture.name in expected}
    (OUT / "expected.json").write_text(json.dumps({"ffmpeg": version, "files": expected}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
