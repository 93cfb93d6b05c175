"""Data sets for kdforge: digits (offline), CIFAR-10/100 and image folders, split and loaded reproducibly.

`build_data(cfg)` returns a `DataBundle`; `bundle.loader(split, seed=...)` gives loaders whose order and
augmentation are pure functions of (seed, epoch): call `loader.set_epoch(epoch)` before every epoch.
"""

from __future__ import annotations

from kdforge.compress.config import DataConfig
from kdforge.compress.data.augment import SeededAugment, TensorImages, Transformed
from kdforge.compress.data.bundle import DataBundle
from kdforge.compress.data.loaders import EpochLoader
from kdforge.compress.data.splits import stratified_split, train_val_split
from kdforge.compress.errors import UserError

__all__ = [
    "DataBundle",
    "EpochLoader",
    "SeededAugment",
    "TensorImages",
    "Transformed",
    "build_data",
    "stratified_split",
    "train_val_split",
]


def build_data(cfg: DataConfig) -> DataBundle:
    """Build the train/val/test splits named by `cfg` (nothing is ever downloaded)."""
    if cfg.name == "digits":
        from kdforge.compress.data import digits as source
    elif cfg.name in ("cifar10", "cifar100"):
        from kdforge.compress.data import cifar as source  # type: ignore[no-redef]
    elif cfg.name == "imagefolder":
        from kdforge.compress.data import imagefolder as source  # type: ignore[no-redef]
    else:
        raise UserError(
            f"data.name: unknown data set {cfg.name!r}; use digits, cifar10, cifar100, imagefolder"
        )
    return source.build(cfg)
