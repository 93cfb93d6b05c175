"""Any `root/train/<class>/*` and `root/val/<class>/*` image tree (torchvision ImageFolder), as RGB.

Test is root/val; val is a stratified hold-out of root/train (or root/val when val_fraction == 0).
ImageNet normalisation; train: RandomResizedCrop(scale 0.35..1) + flip, eval: resize 1.14x + centre crop.

Links: class folders, folders inside them and image files may be symbolic links, also to places outside
data.root (a tree of links into a shared data set is the usual way to make a subset), but every real
folder is entered once and every real file counted once per split, so a link to a folder above it
(a loop) neither repeats images nor hangs. Images decode within the bounds of `images.open_rgb`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from kdforge.compress.config import DataConfig
from kdforge.compress.data.augment import SeededAugment, Transformed
from kdforge.compress.data.bundle import DataBundle
from kdforge.compress.data.images import load_rgb
from kdforge.compress.data.splits import train_val_split
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.text import printable
from torch.utils.data import Subset
from torchvision.datasets import DatasetFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _identity(path: str, kind: Callable[[int], bool] = stat.S_ISDIR) -> tuple[int, int] | None:
    """(device, inode) of what `path` points to (links followed) when it is of `kind`, else None."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if kind(info.st_mode) else None


def scan(directory: str, class_to_idx: dict[str, int], extensions: tuple[str, ...]) -> list[tuple[str, int]]:
    """(path, class index) of every image file under directory/<class>/, in torchvision's order, but each
    real folder entered once (class folders only as themselves) and each real file listed once, both
    known by (device, inode): one stat per entry, so a million-file tree scans as fast as before."""
    tops = {name: os.path.join(directory, name) for name in sorted(class_to_idx)}
    entered = {_identity(top) for top in tops.values()}
    listed: set[tuple[int, int]] = set()
    samples: list[tuple[str, int]] = []
    empty = []
    for name, top in tops.items():
        folders = []
        for root, dirnames, filenames in os.walk(top, followlinks=True):
            folders.append((root, filenames))
            fresh = []
            for child in sorted(dirnames):
                real = _identity(os.path.join(root, child))
                if real is not None and real not in entered:  # else a loop, another class or a second path
                    entered.add(real)
                    fresh.append(child)
            dirnames[:] = fresh
        count = len(samples)
        for root, filenames in sorted(folders):
            for filename in sorted(filenames):
                if not filename.lower().endswith(extensions):
                    continue
                path = os.path.join(root, filename)
                real = _identity(path, stat.S_ISREG)
                if real is not None and real not in listed:
                    listed.add(real)
                    samples.append((path, class_to_idx[name]))
        if len(samples) == count:
            empty.append(name)
    if empty:
        raise FileNotFoundError(f"Found no valid file for the classes {printable(', '.join(empty[:5]))}")
    return samples


class Folder(DatasetFolder):
    """torchvision's DatasetFolder listing files with `scan` (link-safe) and decoding with `load_rgb`."""

    def __init__(self, root: str) -> None:
        super().__init__(root, load_rgb, IMG_EXTENSIONS)

    @staticmethod
    def make_dataset(
        directory: Any, class_to_idx: dict[str, int], extensions: Any = None, *args: Any, **kw: Any
    ) -> list[tuple[str, int]]:
        return scan(str(directory), class_to_idx, tuple(extensions or IMG_EXTENSIONS))


def _folder(directory: Path) -> Any:
    try:
        return Folder(str(directory))
    except FileNotFoundError as exc:
        reason = first_line(exc) if str(exc).strip() else "no images"
        raise UserError(f"imagefolder: {directory}: {reason}; put images in {directory}/<class>/") from None


def _names(names: set[str]) -> str:
    shown = [printable(name, 60) for name in sorted(names)[:5]]
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
