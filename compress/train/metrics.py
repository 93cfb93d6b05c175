"""Top-k accuracy, evaluation over a loader (reduced across ranks), and the per-run JSONL log."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.train.distributed import DistContext, all_reduce_sum


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have their label among the top-k logits, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(labels.unsqueeze(1))
    return [int(hits[:, : min(k, logits.shape[1])].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    loader: Any,
    device: torch.device,
    context: DistContext | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1/top-5 (%) and mean CE over every sample the loader yields, summed over ranks."""
    correct1 = correct5 = 0
    loss_sum = 0.0
    count = 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = forward(images)
        logits = logits.float()
        c1, c5 = topk_correct(logits, labels)
        correct1, correct5 = correct1 + c1, correct5 + c5
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        count += labels.numel()
    if context is not None:
        correct1, correct5, loss_sum, count = all_reduce_sum(
            [correct1, correct5, loss_sum, count], context, device
        )
    count = max(count, 1)
    return {
        "top1": 100.0 * correct1 / count,
        "top5": 100.0 * correct5 / count,
        "loss": loss_sum / count,
        "count": int(count),
    }


class MetricsLog:
    """Appends one JSON object per line (flushed each time); mirrors scalars to TensorBoard if installed."""

    def __init__(self, path: Path, tensorboard: bool = True, keep_through_epoch: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if keep_through_epoch is not None and path.is_file():
            self._truncate(keep_through_epoch)
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._writer = None
        if tensorboard:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(path.parent / "tensorboard"))

    def _truncate(self, last_epoch: int) -> None:
        """Keep only records up to `last_epoch` (a resumed run repeats what came after its checkpoint)."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            if isinstance(record, dict) and int(record.get("epoch", 0)) <= last_epoch:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        """Log one record; numbers also go to TensorBoard under their key, indexed by `epoch`."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._handle.write(json.dumps(clean, sort_keys=True) + "\n")
        self._handle.flush()
        if self._writer is not None and "epoch" in record:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "epoch":
                    self._writer.add_scalar(key, value, record["epoch"])

    def close(self) -> None:
        self._handle.close()
        if self._writer is not None:
            self._writer.close()
