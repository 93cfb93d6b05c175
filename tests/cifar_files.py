"""Small CIFAR-10/100 folders in the real on-disk pickle format, written by tests (nothing downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _dump(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def fake_cifar10(root: Path, per_batch: int = 20, n_test: int = 20) -> dict[str, np.ndarray]:
    """CIFAR-10 in its official pickle layout under `root` (random pixels, balanced labels); the arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written: dict[str, np.ndarray] = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.permutation(np.arange(n) % 10)]
        _dump(folder / name, {"batch_label": name, "labels": labels, "data": data, "filenames": [""] * n})
        written[name + "_data"], written[name + "_labels"] = data, np.array(labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    return written


def fake_cifar100(root: Path, per_class: int = 4, n_test: int = 100) -> np.ndarray:
    """CIFAR-100 in its official pickle layout under `root` (random pixels); the test labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    test_labels = np.arange(n_test) % 100
    for name, labels in (("train", np.repeat(np.arange(100), per_class)), ("test", test_labels)):
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        entry = {
            "filenames": [""] * len(labels),
            "batch_label": name,
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": data,
        }
        _dump(folder / name, entry)
    meta = {"fine_label_names": [f"class{i:03d}" for i in range(100)], "coarse_label_names": [""] * 20}
    _dump(folder / "meta", meta)
    return test_labels
