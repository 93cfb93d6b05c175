"""DDP plumbing: process-group set-up from torchrun's environment, reductions, buffer sync."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str, timeout_s: float = 300.0) -> DistContext:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


PEER_FAILURE_MARKERS = (
    "connection reset",
    "connection closed",
    "broken pipe",
    "timed out",
    "timeout",
    "nccl",
)


def peer_failure(error: BaseException, context: DistContext) -> str | None:
    """One line when `error` means another process of this distributed run died or stopped answering;
    None for anything else (or outside a distributed run)."""
    if not context.enabled:
        return None
    text = str(error)
    lowered = text.lower()
    if not isinstance(error, dist.DistError) and not any(m in lowered for m in PEER_FAILURE_MARKERS):
        return None
    cause = next((m for m in PEER_FAILURE_MARKERS if m in lowered), type(error).__name__)
    return (
        f"rank {context.rank}: lost another process of the {context.world_size}-process run ({cause}); "
        "relaunch the same command with --resume (the last checkpoint is kept)"
    )


def shutdown(context: DistContext) -> None:
    """Leave the process group if this process joined one."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], context: DistContext, device: torch.device) -> list[float]:
    """Sum a few scalars over ranks (identity in a single process)."""
    if not context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def sync_buffers(module: nn.Module, context: DistContext) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank, so checkpoints and eval agree."""
    if not context.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(context: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if context.enabled:
        dist.barrier()


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (rank order), keeping the gradient to this rank's rows.

    Identity outside a process group. Ranks may hold different row counts (padded, gathered, trimmed).
    The backward sums each rank's gradient into its own rows, so with DDP's gradient averaging a loss
    computed identically on every rank from the gathered rows trains like that loss on one big batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    world = dist.get_world_size()
    counts = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([tensor.shape[0]], device=tensor.device))
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    if tensor.requires_grad:
        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])
