import json

import numpy as np
import pytest

from vivit.cli import main
from vivit.data import read_frames
from vivit.data.sources import find_samples
from vivit.data.synthetic import generate

FRAMES, SIZE = 16, 32


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth") / "data", classes=4, videos_per_class=40, frames=FRAMES,
                    size=SIZE, seed=0)


@pytest.fixture(scope="module")
def videos(synth):
    """split -> (videos (N, T, H, W, 3) float in [0, 1], labels (N,), class names)."""
    out = {}
    for split in ("train", "val"):
        samples, classes = find_samples(synth, split)
        frames = np.stack([read_frames(p, range(FRAMES)) for p, _ in samples]).astype(np.float32) / 255
        out[split] = frames, np.array([label for _, label in samples]), classes
    return out


def nearest_mean_accuracy(train_x, train_y, test_x, test_y) -> float:
    """Nearest class-mean classifier on standardised features."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    means = np.stack([((train_x[train_y == k] - mu) / sd).mean(0) for k in range(4)])
    pred = np.argmin(((((test_x - mu) / sd)[:, None, :] - means[None]) ** 2).sum(-1), 1)
    return float((pred == test_y).mean())


def frame_features(frames: np.ndarray) -> np.ndarray:
    """Per-frame statistics: 4x4-pooled colours, colour mean/std, and the foreground centroid."""
    n, h, w, c = frames.shape
    pooled = frames.reshape(n, 4, h // 4, 4, w // 4, c).mean((2, 4)).reshape(n, -1)
    fg = np.abs(frames - np.median(frames, (1, 2), keepdims=True)).sum(-1)
    ys, xs = np.mgrid[0:h, 0:w]
    centroid = np.stack([(fg * xs).sum((1, 2)), (fg * ys).sum((1, 2))], 1) / fg.sum((1, 2))[:, None]
    return np.concatenate([pooled, frames.mean((1, 2)), frames.std((1, 2)), centroid], 1)


def motion(video: np.ndarray) -> tuple[float, float]:
    """Signed horizontal and vertical motion: correlation of consecutive foregrounds under +-1..4 pixel shifts."""
    fg = np.abs(video - np.median(video, 0)).sum(-1)
    fg -= fg.mean((1, 2), keepdims=True)
    score = []
    for axis in (2, 1):
        score.append(sum((fg[1:] * np.roll(fg[:-1], k, axis)).sum() - (fg[1:] * np.roll(fg[:-1], -k, axis)).sum()
                         for k in (1, 2, 3, 4)))
    return score[0], score[1]


def test_layout_names_and_determinism(synth, tmp_path):
    samples, classes = find_samples(synth, "train")
    assert classes == ["left-right+down-up", "left-right+up-down", "right-left+down-up", "right-left+up-down"]
    assert len(samples) == 4 * 30
    assert len(find_samples(synth, "val")[0]) == 4 * 10
    again = generate(tmp_path / "again", classes=4, videos_per_class=40, frames=FRAMES, size=SIZE, seed=0)
    first = synth / "train/left-right+up-down/00011.mp4"
    assert (again / "train/left-right+up-down/00011.mp4").read_bytes() == first.read_bytes()
    assert read_frames(first, [0]).shape == (1, SIZE, SIZE, 3)


@pytest.mark.parametrize("pick", ["every frame", "first frame", "average over frames", "motion energy"])
def test_single_frames_and_order_free_statistics_are_at_chance(videos, pick):
    def features(split):
        frames, labels, _ = videos[split]
        if pick == "every frame":
            return frame_features(frames.reshape(-1, SIZE, SIZE, 3)), np.repeat(labels, FRAMES)
        if pick == "first frame":
            return frame_features(frames[:, 0]), labels
        if pick == "motion energy":  # the total motion of the whole video: the same for every class
            return np.array([motion(video) for video in frames]), labels
        return frame_features(frames.mean(1)), labels

    (train_x, train_y), (val_x, val_y) = features("train"), features("val")
    correct = (nearest_mean_accuracy(train_x, train_y, val_x, val_y) * len(val_y)
               + nearest_mean_accuracy(val_x, val_y, train_x, train_y) * len(train_y))  # both ways: 160 videos
    assert correct / (len(train_y) + len(val_y)) < 0.36  # chance is 0.25


def test_motion_order_recovers_the_class(videos):
    names = {(-1, -1): "left-right+up-down", (-1, 1): "left-right+down-up", (1, -1): "right-left+up-down",
             (1, 1): "right-left+down-up"}
    for split in ("train", "val"):
        frames, labels, classes = videos[split]
        predicted = []
        for video in frames:
            first, second = motion(video[: FRAMES // 2]), motion(video[FRAMES // 2:])
            assert all(a * b < 0 for a, b in zip(first, second))  # there and back
            predicted.append(classes.index(names[tuple(int(np.sign(d)) for d in first)]))
        assert (np.array(predicted) == labels).mean() > 0.9


def test_direction_task_is_recovered_from_total_motion(tmp_path):
    out = generate(tmp_path / "d", classes=4, videos_per_class=8, frames=FRAMES, size=SIZE, task="direction")
    samples, classes = find_samples(out, "train")
    assert classes == ["left+down", "left+up", "right+down", "right+up"]
    for path, label in samples:
        dx, dy = motion(read_frames(path, range(FRAMES)).astype(np.float32) / 255)
        assert classes[label] == ("right" if dx > 0 else "left") + "+" + ("down" if dy > 0 else "up")


def test_cli_synth_and_check_data(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "s"), "--classes", "2", "--videos-per-class", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["left-right", "right-left"] and report["train"] == 6 and report["val"] == 2
    assert main(["check-data", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checked": 8, "failed": []}
    (tmp_path / "s/train/left-right/broken.mp4").write_text("not a video")
    assert main(["check-data", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "broken.mp4: " in out and "8 of 9 videos decode, 1 bad" in out
    assert main(["synth", str(tmp_path / "x"), "--classes", "2", "--size", "7"]) == 2
