"""Batches of clips: a DataLoader that drops failed samples, counts them, and seeds sampling per epoch."""

from __future__ import annotations

import logging
from typing import Iterator, NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from vivit.data.datasets import VideoDataset
from vivit.data.decode import DECODE_ERRORS
from vivit.errors import DataError, failure_reason

log = logging.getLogger("vivit.data")


class Batch(NamedTuple):
    """videos (B, C, T, H, W) or (B, V, C, T, H, W); `skipped` failed samples were dropped (B may be 0)."""

    videos: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    skipped: int


def collate(items: list[tuple[torch.Tensor, int, int] | None]) -> Batch:
    """Stack the samples that decoded; count the `None`s of those that failed."""
    good = [item for item in items if item is not None]
    skipped = len(items) - len(good)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped)
    videos, labels, indices = zip(*good)
    return Batch(torch.stack(videos), torch.tensor(labels), torch.tensor(indices), skipped)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers run in parallel already; intra-op threads would oversubscribe the cores


class VideoLoader:
    """Iterable of `Batch`; `set_epoch(e)` reseeds shuffling and augmentation; `skipped` counts the last pass.
    distributed=True shards with DistributedSampler (rank/world from torch.distributed)."""

    def __init__(self, dataset: VideoDataset, *, batch_size: int, shuffle: bool, num_workers: int = 0, seed: int = 0,
                 drop_last: bool = False, distributed: bool = False, pin_memory: bool | None = None):
        self.dataset, self.seed, self.epoch, self.skipped = dataset, seed, 0, 0
        dataset.seed = seed
        if distributed:
            self.sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        elif shuffle:
            self.generator = torch.Generator()
            self.sampler = RandomSampler(dataset, generator=self.generator)
        else:
            self.sampler = SequentialSampler(dataset)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers, collate_fn=collate,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory, drop_last=drop_last,
            worker_init_fn=_worker_init if num_workers else None, persistent_workers=False)  # workers see set_epoch
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        if isinstance(self.sampler, RandomSampler):  # the same order on every pass of one epoch
            self.generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        seen = skipped = 0
        for batch in self.loader:
            seen += len(batch.labels) + batch.skipped
            skipped += batch.skipped
            yield batch
        self.skipped = skipped
        if seen and skipped == seen:
            raise DataError(f"all {seen} videos failed to decode; first: {self._first_failure()}")
        if skipped:
            during = f" in epoch {self.epoch + 1}" if self.dataset.train else ""  # epochs are training's
            log.warning("skipped %d of %d videos%s (unreadable files)", skipped, seen, during)

    def _first_failure(self) -> str:
        index = next(iter(self.sampler))
        try:
            self.dataset.read(index)
        except DECODE_ERRORS as e:
            return f"{self.dataset.samples[index][0]}: {failure_reason(e)}"
        return f"{self.dataset.samples[index][0]}: decoded on retry"


make_loader = VideoLoader  # the documented entry point: make_loader(dataset, batch_size=..., shuffle=...)
