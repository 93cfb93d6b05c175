"""DIST under DDP: the intra-class term over the global batch (all-gather with gradient), checked on two
gloo processes against the single-process loss on the whole batch (value and gradient)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kdforge.compress.methods.dist_kd import DISTOptions, dist_relation_loss

ROWS = (5, 3)  # unequal shards: the gather pads and trims


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(sum(ROWS), 6, generator=g) * 3, torch.randn(sum(ROWS), 6, generator=g) * 3


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        student, teacher = _batch()
        start = sum(ROWS[:rank])
        mine = student[start : start + ROWS[rank]].clone().requires_grad_()
        loss = dist_relation_loss(mine, teacher[start : start + ROWS[rank]], DISTOptions())
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": mine.grad}, Path(out) / f"rank{rank}.pt")
        dist.barrier()  # neither rank tears gloo down while the other's backward collective is in flight
    finally:
        dist.destroy_process_group()


def test_dist_intra_term_uses_the_global_batch_under_ddp(tmp_path: Path) -> None:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_worker, args=(init, str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    student, teacher = _batch()
    whole = student.clone().double().requires_grad_()
    expected = dist_relation_loss(whole, teacher.double(), DISTOptions())
    expected.backward()
    for rank in ranks:  # every rank computes the loss of the whole batch
        torch.testing.assert_close(rank["loss"].double(), expected.detach(), rtol=1e-5, atol=1e-6)
    # each rank holds world_size x the gradient of its rows; DDP's averaging divides by world_size
    gathered = torch.cat([rank["grad"] for rank in ranks]).double() / 2
    torch.testing.assert_close(gathered, whole.grad, rtol=1e-4, atol=1e-6)
    per_shard = dist_relation_loss(student[: ROWS[0]], teacher[: ROWS[0]], DISTOptions())
    assert abs(float(per_shard) - float(expected.detach())) > 1e-3, "the test must tell global from per-shard"
