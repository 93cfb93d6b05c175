"""Any `root/train/<class>/*` and `root/val/<class>/*` image tree (torchvision ImageFolder), as RGB.

Test is root/val; val is a stratified hold-out of root/train (or root/val when val_fraction == 0).
ImageNet normalisation; train: RandomResizedCrop(scale 0.35..1) + flip, eval: resize 1.14x + centre crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from kdforge.compress.config import DataConfig
from kdforge.compress.data.augment import SeededAugment, Transformed
from kdforge.compress.data.bundle import DataBundle
from kdforge.compress.data.splits import train_val_split
from kdforge.compress.errors import UserError
from torch.utils.data import Subset

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _folder(directory: Path) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(directory))  # its default loader converts every image to RGB
    except FileNotFoundError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "no images"
        raise UserError(f"imagefolder: {directory}: {reason}; put images in {directory}/<class>/") from None


def _names(names: set[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(shown) + (f" and {len(names) - 5} more" if len(names) > 5 else "") if names else "none"


def build(cfg: DataConfig) -> DataBundle:
    """Train / val / test splits of an image-folder tree, resized to cfg.image_size."""
    from torchvision import transforms as T

    if cfg.root is None:
        raise UserError("data.root: imagefolder needs a directory holding train/<class>/ and val/<class>/")
    root = Path(cfg.root).expanduser()
    train_dir, test_dir = root / "train", root / "val"
    for directory in (train_dir, test_dir):
        if not directory.is_dir():
            raise UserError(
                f"imagefolder: {directory} not found; data.root must hold train/<class>/ and val/<class>/"
            )
    pool, test_base = _folder(train_dir), _folder(test_dir)
    if pool.classes != test_base.classes:
        only_train = set(pool.classes) - set(test_base.classes)
        only_val = set(test_base.classes) - set(pool.classes)
        raise UserError(
            f"imagefolder: class folders differ between {train_dir} and {test_dir} (only in train: "
            f"{_names(only_train)}; only in val: {_names(only_val)}); give both the same class folders"
        )
    size = cfg.image_size
    normalise = [T.ToTensor(), T.Normalize(MEAN, STD)]
    eval_tf = T.Compose([T.Resize(int(size * 1.14)), T.CenterCrop(size), *normalise])
    train_pos, val_pos = train_val_split(
        np.asarray(pool.targets),
        val_fraction=cfg.val_fraction,
        train_fraction=cfg.train_fraction,
        seed=cfg.split_seed,
    )
    train_subset = Subset(pool, train_pos.tolist())
    if cfg.augment:
        crop = T.RandomResizedCrop(size, scale=(0.35, 1.0))
        train_tf = T.Compose([crop, T.RandomHorizontalFlip(), *normalise])
        train = SeededAugment(train_subset, train_tf)
    else:
        train = Transformed(train_subset, eval_tf)
    test = Transformed(Subset(test_base, list(range(len(test_base)))), eval_tf)
    return DataBundle(
        train=train,
        val=test if val_pos is None else Transformed(Subset(pool, val_pos.tolist()), eval_tf),
        test=test,
        num_classes=len(pool.classes),
        classes=list(pool.classes),
        mean=MEAN,
        std=STD,
        input_shape=(3, size, size),
        batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size,
        workers=cfg.workers,
    )
