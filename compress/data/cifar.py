"""CIFAR-10 / CIFAR-100 from the official python pickles (as torchvision lays them out), held in memory.

Test is the official test set; val is a stratified hold-out of the official train set (or the test
set when val_fraction == 0, the KD papers' protocol). Augmentation: RandomCrop(32, padding=4) + flip.
The files are read in torchvision's on-disk format and layout (file names taken from
torchvision.datasets.CIFAR10/CIFAR100) without its md5 check; their structure is checked instead.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from kdforge.compress.config import DataConfig
from kdforge.compress.data.bundle import DataBundle, tensor_bundle
from kdforge.compress.data.splits import train_val_split
from kdforge.compress.errors import UserError

log = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _layout(name: str) -> Any:
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]


def _title(name: str) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[name]


def _fix(name: str) -> str:
    return f"re-extract {_layout(name).filename} (from {URL}) there"


def find_folder(name: str, root: str | Path | None) -> Path:
    """The extracted folder (`cifar-10-batches-py` / `cifar-100-python`) under `root`, or `root` itself."""
    base = _layout(name).base_folder
    if root is None:
        raise UserError(f"data.root: {_title(name)} needs the directory that holds {base!r} (data.root=PATH)")
    root = Path(root).expanduser()
    for folder in (root / base, root):
        if folder.name == base and folder.is_dir():
            return folder
    raise UserError(
        f"{_title(name)} not found under {root}: put the extracted {base!r} folder there (from {URL})"
    )


def _unpickle(path: Path, name: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            f"{_title(name)} under {path.parent} is incomplete: {path.name!r} is missing; {_fix(name)}"
        )
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")  # the files were written by Python 2
    except Exception as exc:
        raise UserError(f"{path} is not a CIFAR python pickle ({type(exc).__name__}); {_fix(name)}") from None
    if not isinstance(entry, dict):
        raise UserError(f"{path} is not a CIFAR python pickle (not a dict); {_fix(name)}")
    return entry


def read_split(name: str, folder: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(uint8 images (N, 3, 32, 32), int64 labels, class names) of the official train or test split."""
    layout = _layout(name)
    meta = _unpickle(folder / layout.meta["filename"], name)
    classes = [str(c) for c in meta.get(layout.meta["key"], [])]
    if not classes:
        raise UserError(f"{folder / layout.meta['filename']} lacks {layout.meta['key']!r}; {_fix(name)}")
    chunks, targets = [], []
    for filename, _md5 in layout.train_list if train else layout.test_list:
        entry = _unpickle(folder / filename, name)
        data = np.asarray(entry.get("data", ()), dtype=np.uint8)
        labels = entry.get("labels", entry.get("fine_labels"))
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels is None or len(labels) != len(data):
            raise UserError(f"{folder / filename} is not in the CIFAR python format; {_fix(name)}")
        chunks.append(data)
        targets.extend(int(t) for t in labels)
    images = torch.from_numpy(np.concatenate(chunks).reshape(-1, 3, 32, 32))  # rows are planar RGB = CHW
    labels_t = torch.tensor(targets, dtype=torch.long)
    if len(labels_t) and (int(labels_t.min()) < 0 or int(labels_t.max()) >= len(classes)):
        raise UserError(f"{folder} holds labels outside 0..{len(classes) - 1}; {_fix(name)}")
    return images, labels_t, classes


def build(cfg: DataConfig) -> DataBundle:
    """CIFAR-10 or CIFAR-100 (cfg.name) as 32x32 in-memory splits with the standard paper augmentation."""
    if cfg.image_size != 32:
        log.warning("data.image_size=%d is ignored for %s: CIFAR is always 32x32", cfg.image_size, cfg.name)
    folder = find_folder(cfg.name, cfg.root)
    train_images, train_labels, classes = read_split(cfg.name, folder, train=True)
    test_images, test_labels, _ = read_split(cfg.name, folder, train=False)
    train, val = train_val_split(
        train_labels.numpy(),
        val_fraction=cfg.val_fraction,
        train_fraction=cfg.train_fraction,
        seed=cfg.split_seed,
    )
    mean, std = STATS[cfg.name]
    return tensor_bundle(
        cfg,
        (train_images, train_labels),
        train,
        val,
        (test_images, test_labels),
        np.arange(len(test_labels), dtype=np.int64),
        classes=classes,
        mean=mean,
        std=std,
        pad=4,
        flip=True,
    )
