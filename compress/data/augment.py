"""Deterministic augmentation: every random draw is a pure function of (seed, epoch, sample index).

Seeds come from a counter-based hash (splitmix64), so an augmented sample does not depend on the
worker count, the batch it lands in or the global torch RNG (which the trainer owns for dropout etc.).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN  # uint64 array arithmetic wraps modulo 2**64 (no overflow warnings for arrays)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _chain(*parts: int) -> np.ndarray:
    h = np.zeros(1, dtype=np.uint64)
    for part in parts:
        h = _splitmix(h ^ np.array([part % (1 << 64)], dtype=np.uint64))
    return h


def sample_hashes(seed: int, epoch: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """64-bit hashes (uint64 array), one per index, each a pure function of (seed, epoch, index)."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    return _splitmix(_chain(seed, epoch) ^ idx)


def derive_seed(seed: int, epoch: int) -> int:
    """A non-negative 63-bit seed for per-epoch generators (e.g. the DataLoader's), from (seed, epoch)."""
    return int(_splitmix(_chain(seed, epoch) ^ np.uint64(0xD1B54A32D192ED03))[0] >> np.uint64(1))


def _positions(indices: Sequence[int] | np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    idx = torch.where(idx < 0, idx + n, idx)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"index out of range for a data set of {n} samples")
    return idx


class EpochSeeded:
    """Mixin: a `seed` and an `epoch` that select the augmentation; the loader copies and sets both."""

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of `epoch` (called by the train loader's set_epoch)."""
        self.epoch = int(epoch)

    def reseeded(self, seed: int) -> Any:
        """A shallow copy (shared storage) with its own seed and epoch 0, for one loader."""
        other = copy.copy(self)
        other.seed, other.epoch = int(seed), 0
        return other


class SeededAugment(EpochSeeded, Dataset):
    """Applies a random torch/torchvision `transform` to base[i], the CPU RNG seeded from (seed, epoch, i).

    The global CPU RNG state is saved and restored around each call (CUDA generators are never touched).
    """

    def __init__(self, base: Dataset, transform: Callable[[Any], Any], *, seed: int = 0) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, int(seed), 0

    @property
    def indices(self) -> Sequence[int]:
        """Positions of the samples in the source data set."""
        return getattr(self.base, "indices", range(len(self)))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        pos = int(_positions([i], len(self))[0])
        x, y = self.base[pos]
        seed = int(sample_hashes(self.seed, self.epoch, [pos])[0] >> np.uint64(1))
        with torch.random.fork_rng(devices=[]):
            # default_generator only: torch.manual_seed would also reseed (and so disturb) every CUDA RNG.
            torch.default_generator.manual_seed(seed)
            return self.transform(x), y


class Transformed(Dataset):
    """Applies a deterministic `transform` (resize, normalise) to base[i]; for evaluation splits."""

    def __init__(self, base: Dataset, transform: Callable[[Any], Any]) -> None:
        self.base, self.transform = base, transform

    @property
    def indices(self) -> Sequence[int]:
        """Positions of the samples in the source data set."""
        return getattr(self.base, "indices", range(len(self)))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        x, y = self.base[i]
        return self.transform(x), y


def shift_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Batched RandomCrop(size, padding=pad, fill=0) then optional horizontal flip, one draw per image.

    x: (B, C, H, W); dy, dx: (B,) crop offsets in [0, 2*pad] of the zero-padded image; flip: (B,) bool.
    """
    b, c, h, w = x.shape
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]
    return torch.gather(torch.gather(x, 2, rows), 3, cols.view(b, 1, 1, w).expand(b, c, h, w))


class TensorImages(EpochSeeded, Dataset):
    """In-memory images, normalised on the fly, with optional seeded shift (pad) / flip augmentation.

    images: (N, C, H, W) uint8 (0..255) or float (0..1). Batches are augmented vectorised through
    `__getitems__`; sample i is a pure function of (seed, epoch, i) exactly like `SeededAugment`.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        pad: int = 0,
        flip: bool = False,
        indices: Sequence[int] | np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, C, H, W) with one label each, got {tuple(images.shape)}")
        self.images, self.labels = images, torch.as_tensor(labels, dtype=torch.long)
        scale = 1 / 255 if images.dtype == torch.uint8 else 1.0
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self._mul = scale / std_t  # x_norm = raw * scale / std - mean / std
        self._add = -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t
        self.pad, self.flip = int(pad), bool(flip)
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.seed, self.epoch = int(seed), 0

    @property
    def augmented(self) -> bool:
        """Whether samples are randomly shifted / flipped."""
        return self.pad > 0 or self.flip

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked (images, labels) of `indices`: augmented (if enabled) and normalised float32."""
        idx = _positions(indices, len(self))
        x = self.images[idx]
        if self.augmented:
            h = sample_hashes(self.seed, self.epoch, idx.numpy())
            span = np.uint64(2 * self.pad + 1)
            dy = torch.from_numpy(((h & np.uint64(0xFFFF)) % span).astype(np.int64))
            dx = torch.from_numpy((((h >> np.uint64(16)) & np.uint64(0xFFFF)) % span).astype(np.int64))
            fl = torch.from_numpy(((h >> np.uint64(32)) & np.uint64(1)).astype(bool)) & self.flip
            x = shift_flip(x, dy, dx, fl, self.pad)
        return x.float() * self._mul + self._add, self.labels[idx]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        x, y = self.batch(indices)
        return list(zip(x.unbind(0), y.tolist()))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([i])[0]
