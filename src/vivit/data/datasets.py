"""`VideoDataset`: decode a clip (or the test views) of one video and transform it; broken files are skipped."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vivit.data.sampling import clip_span, eval_clips, eval_uniform, random_clip, random_uniform
from vivit.data.decode import DECODE_ERRORS, VideoInfo, read_clip_yuv
from vivit.data.sources import Samples, Splits, find_samples
from vivit.data.transforms import AugmentConfig, eval_transform, train_transform
from vivit.errors import ConfigError, DataError, failure_reason

log = logging.getLogger("vivit.data")

SAMPLINGS = ("clip", "uniform")


class VideoDataset(Dataset):
    """Items are `(clip, label, index)`: train clip (C, T, S, S); eval views (V, C, T, S, S), V = clips x crops;
    a multi-head dataset's label is a tuple, one class index per split.

    Training randomness comes from (seed, epoch, index) only, so it does not depend on workers or order.
    """

    def __init__(self, samples: Samples, classes: list[str], *, train: bool, num_frames: int,
                 frame_stride: int, image_size: int, num_clips: int = 1, num_crops: int = 1,
                 augment: AugmentConfig | None = None, sampling: str = "clip", seed: int = 0,
                 decode_threads: bool = False, warn_skipped: bool = True):
        if sampling not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if num_crops not in (1, 3) or num_clips < 1:
            raise ConfigError(f"num_clips must be >= 1 and num_crops 1 or 3, got {num_clips} and {num_crops}")
        clip_span(num_frames, frame_stride)  # validates both
        if image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {image_size}")
        self.samples, self.classes = samples, classes
        self.train, self.num_frames, self.frame_stride, self.image_size = train, num_frames, frame_stride, image_size
        self.num_clips, self.num_crops, self.sampling = num_clips, num_crops, sampling
        self.augment = augment or AugmentConfig()
        self.seed, self.epoch, self.decode_threads = seed, 0, decode_threads
        self.warn_skipped = warn_skipped  # False where the caller lists the failed files itself

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self, info: VideoInfo, rng: np.random.Generator) -> list[np.ndarray]:
        n = info.frames
        if self.train:
            if self.sampling == "uniform":
                return [random_uniform(n, self.num_frames, rng)]
            return [random_clip(n, self.num_frames, self.frame_stride, rng)]
        if self.sampling == "uniform":
            return eval_uniform(n, self.num_frames, self.num_clips)
        return eval_clips(n, self.num_frames, self.frame_stride, self.num_clips)

    def decode_size(self) -> int:
        """Short side frames are decoded at when the source is at least twice as large: the largest the transform
        can use (the resize target, times the largest scale-jitter zoom in training), so memory follows the
        output size; smaller sources keep their native size and the transform's exact crop geometry."""
        short_side = self.augment.resize_to(self.image_size)
        return math.ceil(short_side * max(1.0, self.augment.scale_jitter[1])) if self.train else short_side

    def read(self, index: int) -> tuple[torch.Tensor, int | tuple[int, ...], int]:
        """Decode and transform one sample; raises on a broken file (`__getitem__` skips it instead)."""
        path, label = self.samples[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        short_side = self.augment.resize_to(self.image_size)
        frames, _ = read_clip_yuv(path, lambda info: np.concatenate(self._indices(info, rng)),
                                  size=self.decode_size(), upscale=False, threads=self.decode_threads,
                                  min_shrink=2.0)
        if self.train:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            return train_transform(frames, self.image_size, self.augment, generator, short_side), label, index
        views = torch.empty(self.num_clips * self.num_crops, 3, self.num_frames, self.image_size, self.image_size)
        for k in range(self.num_clips):  # filled clip by clip: never the views twice in memory
            clip = replace(frames, data=frames.data[k * self.num_frames:(k + 1) * self.num_frames])
            views[k * self.num_crops:(k + 1) * self.num_crops] = eval_transform(
                clip, self.image_size, self.num_crops, self.augment.normalization, short_side)
        return views, label, index

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int | tuple[int, ...], int] | None:
        try:
            return self.read(index)
        except DECODE_ERRORS as e:
            if self.warn_skipped:
                log.warning("skipping %s: %s", self.samples[index][0], failure_reason(e))
            return None


def build_dataset(source: str | Path | Sequence[str | Path], *, split: str | None = None, train: bool,
                  num_frames: int, frame_stride: int, image_size: int, num_clips: int = 1, num_crops: int = 1,
                  augment: AugmentConfig | None = None, classes: list[str] | None = None,
                  sampling: str = "clip", seed: int = 0, decode_threads: bool = False,
                  splits: Splits | None = None) -> VideoDataset:
    """A dataset from a class-per-folder root, a list file, a Kinetics CSV or a list of paths (label -1);
    `splits` (a multi-head model's `config.splits`) reads one label per split (see `vivit.data.sources`).

    decode_threads=True lets PyAV decode with threads: worth it with num_workers=0 (prediction), not with workers.
    """
    samples, names = find_samples(source, split, classes, splits)
    if not samples:
        where = source if not isinstance(source, (list, tuple)) else "the given path list"
        raise DataError(f"no videos found in {where}" + (f" (split {split!r})" if split else ""))
    return VideoDataset(samples, names, train=train, num_frames=num_frames, frame_stride=frame_stride,
                        image_size=image_size, num_clips=num_clips, num_crops=num_crops, augment=augment,
                        sampling=sampling, seed=seed, decode_threads=decode_threads)
