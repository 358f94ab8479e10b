"""`vivit predict VIDEO --timeline`: one sequential decode (`iter_frames_yuv`, frame for frame what
`read_clip_yuv` gives), a ring buffer that never holds the whole video, and windows scored as the dataset's
clips of the same frames would be."""

import csv
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import vivit.engine.timeline as timeline_module
from vivit.cli import main
from vivit.config import ViViTConfig
from vivit.data.decode import YuvFrames, iter_frames_yuv, probe, read_clip_yuv
from vivit.data.encode import write_video
from vivit.data.transforms import eval_transform
from vivit.engine.checkpoint import save_checkpoint
from vivit.engine.timeline import hop_frames, smooth, timeline, window_starts
from vivit.model import create_model

MEDIA = Path(__file__).parent / "fixtures" / "media"


@pytest.mark.parametrize("name", ["rotate90.mp4", "vfr.mkv", "h264_bframes.avi", "truncated_mjpeg.avi",
                                  "odd_321x241.mkv", "edit_list.mp4", "cut_faststart.mp4"])
@pytest.mark.parametrize("size, step", [(None, 1), (24, 3)])
def test_sequential_frames_are_read_clip_yuvs(name, size, step):
    frames = probe(MEDIA / name).frames
    expected, _ = read_clip_yuv(MEDIA / name, lambda info: np.arange(0, info.frames, step), size=size, upscale=False)
    got = list(iter_frames_yuv(MEDIA / name, size=size, upscale=False, step=step))
    assert [i for i, _ in got] == list(range(0, frames, step))
    assert np.array_equal(np.concatenate([f.data for _, f in got]), expected.data)
    assert (got[0][1].height, got[0][1].width, got[0][1].chroma) == (expected.height, expected.width, expected.chroma)


def test_windows_and_hops():
    assert hop_frames(None, 25.0, 8, 2) == 16  # one clip's duration: windows tile the video
    assert hop_frames(0.5, 25.0, 8, 2) == 12  # 12.5 frames -> whole strides
    assert hop_frames(0.01, 25.0, 8, 2) == 2
    assert window_starts(100, 8, 2, 16) == [0, 16, 32, 48, 64, 80]  # 80 + 15-frame span <= 100
    assert window_starts(10, 8, 2, 16) == [0]  # shorter than a clip: one window, looping back


def test_smoothing_is_a_centred_moving_average():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(smooth(probs, 3), torch.tensor([[0.5, 0.5], [1 / 3, 2 / 3], [0.0, 1.0]]))
    assert smooth(probs, 1) is probs


def test_the_ring_buffer_holds_one_window_not_the_video(monkeypatch):
    """2000 frames decoded once; never more frames alive than one window plus one hop."""
    alive, calls = [], []  # weak references to the frames handed out
    most = 0

    def fake_frames(path, size, upscale, min_shrink, step):
        nonlocal most
        calls.append(step)
        for i in range(0, 2000, step):
            frame = YuvFrames(np.full((1, 16 * 16 * 3 // 2), i % 256, np.uint8), 16, 16, False, 2)
            alive[:] = [r for r in alive if r() is not None] + [weakref.ref(frame)]
            most = max(most, len(alive))
            yield i, frame

    monkeypatch.setattr(timeline_module, "iter_frames_yuv", fake_frames)
    starts = window_starts(2000, 8, 2, 6)
    clips = list(timeline_module.clips("x.mp4", starts, 2000, num_frames=8, frame_stride=2, image_size=16,
                                       short_side=16, normalization="minus_one_one"))
    assert calls == [2] and len(clips) == len(starts) == 331
    assert most <= 8 + 6 // 2 + 1
    window_1 = YuvFrames(np.stack([np.full(16 * 16 * 3 // 2, i, np.uint8) for i in range(6, 21, 2)]), 16, 16,
                         False, 2)  # frames 6, 8, .., 20
    torch.testing.assert_close(clips[1], eval_transform(window_1, 16, 1, "minus_one_one", 16)[0])



def test_a_short_video_window_loops_back_as_its_test_clip(monkeypatch):
    """10 frames, 8 every 2: the one window is frames 0 2 4 6 8 0 2 4, the dataset's test clip of that video
    (official loop-back of dmvr/processors.py `sample_or_pad_sequence_indices`), not the last frame repeated."""
    def fake_frames(path, size, upscale, min_shrink, step):
        for i in range(0, 10, step):
            yield i, YuvFrames(np.full((1, 16 * 16 * 3 // 2), i, np.uint8), 16, 16, False, 2)

    monkeypatch.setattr(timeline_module, "iter_frames_yuv", fake_frames)
    (clip,) = timeline_module.clips("x.mp4", window_starts(10, 8, 2, 16), 10, num_frames=8, frame_stride=2,
                                    image_size=16, short_side=16, normalization="minus_one_one")
    looped = YuvFrames(np.stack([np.full(16 * 16 * 3 // 2, i, np.uint8) for i in [0, 2, 4, 6, 8, 0, 2, 4]]), 16,
                       16, False, 2)
    torch.testing.assert_close(clip, eval_transform(looped, 16, 1, "minus_one_one", 16)[0])

def random_checkpoint(path: Path, **config) -> Path:
    """A tiny model whose head is not zero (distinct probabilities), 8 frames of 16 px."""
    torch.manual_seed(0)
    model = create_model("vivit-ti-16x2-st", num_frames=8, image_size=16, width=32, depth=1, num_heads=2,
                         mlp_dim=64, tubelet=(2, 8, 8), **config)
    torch.nn.init.normal_(model.head.weight, std=1.0)
    classes = [f"c{i}" for i in range(model.config.num_classes)]
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": classes})
    return path


@pytest.fixture
def video(tmp_path):
    """70 frames of 40x24 (landscape: the eval crop is the centre), 10 fps."""
    rng = np.random.default_rng(0)
    path = tmp_path / "long.mp4"
    write_video(path, rng.integers(0, 255, (70, 24, 40, 3), dtype=np.uint8), fps=10, options={"crf": "0"})
    return path


def test_windows_are_scored_as_their_clips(video, tmp_path):
    ckpt = random_checkpoint(tmp_path / "ckpt.pt", num_classes=5)
    result = timeline(ckpt, video, window_stride=1.0, top_k=2, batch_size=3, quiet=True)
    starts = [0, 10, 20, 30, 40, 50]  # hop 1 s = 10 frames (5 strides of 2), span 15 frames, 70 frames
    assert [r["start"] for r in result["rows"]] == [s / 10 for s in starts]
    assert [r["end"] for r in result["rows"]] == [(s + 15) / 10 for s in starts]
    model = create_model("vivit-ti-16x2-st", num_classes=5, num_frames=8, image_size=16, width=32, depth=1,
                         num_heads=2, mlp_dim=64, tubelet=(2, 8, 8))
    model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
    short_side = round(16 * 256 / 224)  # the checkpoint's eval resize (no training config: the defaults)
    for n, s in enumerate(starts):
        frames, _ = read_clip_yuv(video, lambda info: np.arange(s, s + 16, 2), size=short_side, upscale=False,
                                  min_shrink=2.0)
        with torch.no_grad():
            expected = model.eval()(eval_transform(frames, 16, 1, "minus_one_one", short_side)).softmax(-1)[0]
        torch.testing.assert_close(result["probs"]["class"][n], expected)
        top = expected.topk(2)
        assert [p["label"] for p in result["rows"][n]["predictions"]] == [f"c{c}" for c in top.indices.tolist()]


def test_cli_writes_csv_json_and_png(video, tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "ckpt.pt", num_classes=3)
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(video), "--timeline", "--timeline-out", str(out), "--smooth", "3",
                 "--top-k", "2", "--json", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["rows"]) == 4 and printed["smoothing"] == 3  # hop = one clip (16 frames)
    with open(out / "long.mp4.timeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["start", "end", "label_1", "probability_1", "label_2", "probability_2"]
    assert json.loads((out / "long.mp4.timeline.json").read_text())["rows"] == printed["rows"]
    assert (out / "long.mp4.timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["predict", str(ckpt), str(video), str(video), "--timeline"]) == 2
    assert "error: --timeline takes one video file" in capsys.readouterr().err


@pytest.mark.skipif("class_splits" not in ViViTConfig.__dataclass_fields__, reason="no multi-head models")
def test_multi_head_models_rank_each_split(video, tmp_path):
    ckpt = random_checkpoint(tmp_path / "ckpt.pt", num_classes=5, class_splits=(3, 2), split_names=("noun", "verb"))
    result = timeline(ckpt, video, top_k=2, quiet=True)
    preds = result["rows"][0]["predictions"]
    assert set(preds) == {"noun", "verb"} and {p["label"] for p in preds["verb"]} <= {"c3", "c4"}
    torch.testing.assert_close(result["probs"]["verb"].sum(-1), torch.ones(4))
