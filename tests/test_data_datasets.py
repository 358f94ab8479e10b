import logging

import pytest
import torch
from data_videos import bad_files, good_video

from vivit.data import AugmentConfig, build_dataset, make_loader, read_frames, read_labels, write_labels
from vivit.errors import DataError

CLASSES = ["cat", "dog", "eel"]
CLIP = dict(num_frames=4, frame_stride=2, image_size=16, augment=AugmentConfig(short_side=18))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """`root/{train,val}/<class>/*.mp4`, 2 videos per class and split, 24 frames of 32x48."""
    root = tmp_path_factory.mktemp("folders")
    for split in ("train", "val"):
        for name in CLASSES:
            for i in range(2):
                good_video(root / split / name / f"{i}.mp4")
    return root


def test_folder_per_class_with_splits(root):
    ds = build_dataset(root, split="train", train=True, **CLIP)
    assert ds.classes == CLASSES and len(ds) == 6 and sorted({label for _, label in ds.samples}) == [0, 1, 2]
    clip, label, index = ds[3]
    assert clip.shape == (3, 4, 16, 16) and label == ds.samples[3][1] and index == 3
    with pytest.raises(DataError, match="split"):
        build_dataset(root, train=True, **CLIP)


def test_multi_view_test_returns_clips_times_crops(root):
    ds = build_dataset(root, split="val", train=False, num_clips=4, num_crops=3, **CLIP)
    views, _, _ = ds[0]
    assert views.shape == (12, 3, 4, 16, 16)
    one = build_dataset(root, split="val", train=False, **CLIP)[0][0]
    assert one.shape == (1, 3, 4, 16, 16)
    assert not torch.equal(views[0], views[2])  # left and right crops differ


def test_list_file_csv_and_path_list(root):
    listing = root / "val.txt"
    listing.write_text("val/dog/0.mp4 dog\nval/cat/1.mp4 cat\n")
    ds = build_dataset(listing, train=False, **CLIP)
    assert ds.classes == ["cat", "dog"] and [label for _, label in ds.samples] == [1, 0]
    listing.write_text("val/dog/0.mp4 1\n")
    assert build_dataset(listing, train=False, classes=CLASSES, **CLIP).samples[0][1] == 1
    csv = root / "kinetics.csv"
    (root / "k" / "dog").mkdir(parents=True)
    (root / "k" / "dog" / "abc_000004_000014.mp4").write_bytes((root / "val/dog/0.mp4").read_bytes())
    csv.write_text("label,youtube_id,time_start,time_end,split\ndog,abc,4,14,k\neel,xyz,0,10,other\n")
    ds = build_dataset(csv, split="k", train=False, **CLIP)
    assert ds.classes == ["dog", "eel"] and ds.samples[0][0].name == "abc_000004_000014.mp4" and ds[0] is not None
    ds = build_dataset([root / "val/eel/0.mp4"], train=False, **CLIP)
    assert ds.samples[0][1] == -1 and ds[0][1] == -1


def test_forced_classes_labels_file_and_errors(root, tmp_path):
    write_labels(tmp_path / "labels.txt", list(reversed(CLASSES)))
    forced = read_labels(tmp_path / "labels.txt")
    ds = build_dataset(root, split="val", train=False, classes=forced, **CLIP)
    assert ds.classes == ["eel", "dog", "cat"] and ds.samples[0][1] == 2
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_dataset(tmp_path / "nowhere", train=True, **CLIP)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no videos"):
        build_dataset(tmp_path / "empty", train=True, **CLIP)


def batches(loader):
    return [(b.videos.clone(), b.indices.tolist()) for b in loader]


def test_loader_is_reproducible_per_epoch_and_independent_of_workers(root):
    ds = build_dataset(root, split="train", train=True, **CLIP)
    loader = make_loader(ds, batch_size=4, shuffle=True, seed=7)
    first = batches(loader)
    assert len(loader) == 2 and first[0][0].shape == (4, 3, 4, 16, 16)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, batches(loader)))
    loader.set_epoch(1)
    assert [i for _, idx in first for i in idx] != [i for _, idx in batches(loader) for i in idx] or \
        not torch.equal(first[0][0], batches(loader)[0][0])
    loader.set_epoch(0)
    workers = make_loader(ds, batch_size=4, shuffle=True, seed=7, num_workers=2)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, batches(workers)))


def test_distributed_sampler_shards_the_dataset(root, monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a: 2)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, r=rank: r)
        ds = build_dataset(root, split="val", train=False, **CLIP)
        seen.append([i for b in make_loader(ds, batch_size=2, shuffle=True, distributed=True) for i in b.indices])
    assert len(seen[0]) == len(seen[1]) == 3 and sorted(map(int, seen[0] + seen[1])) == list(range(6))


def test_bad_files_are_skipped_warned_and_counted(root, tmp_path, caplog):
    bad = bad_files(tmp_path / "bad", root / "val/cat/0.mp4")
    listing = tmp_path / "mixed.txt"
    lines = [f"{root / 'val/cat/0.mp4'} cat", f"{root / 'val/dog/0.mp4'} dog"]
    listing.write_text("\n".join(lines + [f"{path} cat" for path in bad.values()]))
    ds = build_dataset(listing, train=True, **CLIP)
    with caplog.at_level(logging.WARNING, logger="vivit.data"):
        result = list(make_loader(ds, batch_size=7, shuffle=False))
    assert len(result) == 1 and result[0].skipped == 5 and result[0].videos.shape[0] == 2
    skips = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert len(skips) == 5 and all(any(str(p) in line for line in skips) for p in bad.values())
    assert all("\n" not in line and line.split(": ", 1)[1] for line in skips)
    workers = make_loader(ds, batch_size=3, shuffle=True, num_workers=2)  # counts come back from worker processes
    assert sum(b.skipped for b in workers) == 5 == workers.skipped
    assert sorted(i for b in workers for i in b.indices.tolist()) == [0, 1]


def test_a_dataset_where_every_file_fails_stops_with_a_clear_error(root, tmp_path):
    bad = bad_files(tmp_path / "bad", root / "val/cat/0.mp4")
    ds = build_dataset(list(bad.values()), train=False, **CLIP)
    loader = make_loader(ds, batch_size=2, shuffle=False)
    with pytest.raises(DataError, match="all 5 videos failed to decode; first: .*zero.mp4: "):
        for batch in loader:
            assert batch.videos.shape[0] == 0


@pytest.mark.parametrize("sampling", ["clip", "uniform"])
def test_every_codec_goes_through_the_pipeline(tmp_path, sampling):
    """4:2:0 streams are read as YUV planes; others (FFV1 RGB, odd sizes) are converted by swscale first."""
    files = [good_video(tmp_path / "a.mp4"), good_video(tmp_path / "b.webm", codec="libvpx-vp9"),
             good_video(tmp_path / "c.avi", codec="mjpeg"), good_video(tmp_path / "d.mkv", codec="ffv1"),
             good_video(tmp_path / "e.mkv", size=(33, 47), codec="ffv1")]
    for train in (True, False):
        ds = build_dataset(files, train=train, num_clips=2, sampling=sampling, **CLIP)
        shapes = {tuple(ds[i][0].shape) for i in range(len(files))}
        assert shapes == {(3, 4, 16, 16)} if train else shapes == {(2, 3, 4, 16, 16)}
    for path in files:  # colours survive the YUV route: view means match the RGB decode of the whole video
        view = build_dataset([path], train=False, num_frames=24, frame_stride=1, image_size=32,
                             augment=AugmentConfig(short_side=32))[0][0]
        frames = read_frames(path, range(24))
        rgb = torch.from_numpy(frames).float().div(255).mul(2).sub(1)
        top, left = (rgb.shape[1] - 32) // 2, (rgb.shape[2] - 32) // 2
        expected = rgb[:, top:top + 32, left:left + 32].mean((0, 1, 2))
        assert torch.allclose(view.mean((0, 2, 3, 4)), expected, atol=0.03), path.name
