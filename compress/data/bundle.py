"""`DataBundle`: the three splits of a data set plus what models and loaders need to know about them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from kdforge.compress.config import DataConfig
from kdforge.compress.data.augment import TensorImages
from kdforge.compress.data.loaders import EpochLoader
from torch.utils.data import Dataset

Split = Literal["train", "val", "test"]


@dataclass
class DataBundle:
    """train (augmented if asked, normalised), val and test (not augmented), with class names and stats.

    `val is test` when val_fraction == 0 (validation on the test set, the KD papers' protocol).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_shape: tuple[int, int, int]
    batch_size: int = 64
    eval_batch_size: int = 256
    workers: int = 0

    @property
    def val_is_test(self) -> bool:
        """True when validation runs on the test split (val_fraction == 0)."""
        return self.val is self.test

    def loader(
        self,
        split: Split,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> EpochLoader:
        """A loader for `split`: shuffled with `batch_size` for train, in order with `eval_batch_size` else.

        Call `set_epoch(e)` on it before each epoch; order and augmentation are pure functions of (seed, e).
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        train = split == "train"
        return EpochLoader(
            getattr(self, split),
            batch_size=self.batch_size if train else self.eval_batch_size,
            seed=seed,
            shuffle=train,
            rank=rank,
            world_size=world_size,
            workers=self.workers,
            pin_memory=torch.device(device).type == "cuda",
        )


def tensor_bundle(
    cfg: DataConfig,
    pool: tuple[torch.Tensor, torch.Tensor],
    train_pos: np.ndarray,
    val_pos: np.ndarray | None,
    test: tuple[torch.Tensor, torch.Tensor],
    test_pos: np.ndarray,
    *,
    classes: list[str],
    mean: Sequence[float],
    std: Sequence[float],
    pad: int,
    flip: bool,
) -> DataBundle:
    """A bundle of `TensorImages` splits: train/val drawn from `pool` (images, labels), test from `test`.

    Positions index into the respective source and are kept as each split's `indices`.
    """
    mean3 = (float(mean[0]), float(mean[1]), float(mean[2]))
    std3 = (float(std[0]), float(std[1]), float(std[2]))

    def split(source: tuple[torch.Tensor, torch.Tensor], pos: np.ndarray, augment: bool) -> TensorImages:
        idx = torch.from_numpy(pos)
        return TensorImages(
            source[0][idx],
            source[1][idx],
            mean3,
            std3,
            pad=pad if augment else 0,
            flip=flip and augment,
            indices=pos,
        )

    test_set = split(test, test_pos, False)
    return DataBundle(
        train=split(pool, train_pos, cfg.augment),
        val=test_set if val_pos is None else split(pool, val_pos, False),
        test=test_set,
        num_classes=len(classes),
        classes=list(classes),
        mean=mean3,
        std=std3,
        input_shape=(3, int(pool[0].shape[2]), int(pool[0].shape[3])),
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        workers=cfg.workers,
    )
