"""DataLoaders whose order and augmentation are pure functions of (seed, epoch), in one or many processes."""

from __future__ import annotations

import os

import torch
from kdforge.compress.data.augment import EpochSeeded, derive_seed
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


class ShardSampler(Sampler[int]):
    """In-order indices rank, rank + world_size, ... without padding: every sample on exactly one rank,
    so evaluation summed over ranks counts each sample once (DistributedSampler would repeat some)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.rank, self.world_size = size, rank, world_size

    def __iter__(self):
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Evaluation order does not depend on the epoch."""


class SkippingSampler(Sampler[int]):
    """Another sampler's indices, less the first `skip` of them: resuming mid-epoch replays the epoch's
    order (a pure function of (seed, epoch)) from the first batch not yet trained on, without loading or
    augmenting the ones before it (augmentation is a pure function of (seed, epoch, sample))."""

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner, self.skip = inner, 0

    def __iter__(self):
        for position, index in enumerate(self.inner):
            if position >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(len(self.inner) - self.skip, 0)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)  # type: ignore[attr-defined]

    @property
    def epoch(self) -> int:
        return int(getattr(self.inner, "epoch", 0))


class EpochLoader(DataLoader):
    """A DataLoader with `set_epoch` (call it before every epoch). Training shuffles with a
    DistributedSampler (order a pure function of (seed, epoch), ranks padded to equal length);
    evaluation walks an unpadded `ShardSampler`, so each sample is seen exactly once over all ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if isinstance(dataset, EpochSeeded):
            dataset = dataset.reseeded(seed)  # this loader's own copy: other loaders keep their seed
        sampler: Sampler[int]
        if shuffle:
            sampler = DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
            )
        else:
            sampler = ShardSampler(len(dataset), rank, world_size)  # type: ignore[arg-type]
        sampler = SkippingSampler(sampler)
        generator = torch.Generator()
        generator.manual_seed(derive_seed(seed, 0))
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=usable_workers(workers),
            pin_memory=pin_memory,
            drop_last=False,
            generator=generator,
            persistent_workers=False,
        )
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select `epoch`: sampler order, worker seeds and augmentation draws all follow (seed, epoch).
        `start_batch` > 0 resumes the epoch there (the earlier batches are not produced)."""
        self.epoch = int(epoch)
        self.sampler.skip = int(start_batch) * int(self.batch_size)  # type: ignore[attr-defined]
        self.sampler.set_epoch(self.epoch)  # type: ignore[attr-defined]
        self.generator.manual_seed(derive_seed(self.seed, self.epoch))  # type: ignore[union-attr]
        if isinstance(self.dataset, EpochSeeded):
            self.dataset.set_epoch(self.epoch)


def usable_workers(asked: int) -> int:
    """`asked` loader processes, at most one per CPU this process may run on: more only contend (a
    paper recipe's 4 workers on a 2-core machine), and the batches do not depend on the count."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(int(asked), cpus)
