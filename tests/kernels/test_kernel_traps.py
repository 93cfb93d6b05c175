"""Known traps of fused loss kernels, checked for every Triton loss: offsets past 2^31 elements, rows that
start off a 16-byte boundary on every walk, logits modified between forward and backward.

The other traps (both strides, grad_output != 1, saved buffers never written, fp32 math on half loads,
DKD's masked non-target softmax) are tested per loss in test_kd_triton.py, test_dkd.py and test_dist.py.
"""

from __future__ import annotations

import pytest
import torch
from kdforge.kernels import dist_loss, dkd_loss, kd_loss
from kdforge.kernels.dist_kd_triton import dist_loss_triton
from kdforge.kernels.dkd_triton import dkd_loss_triton
from kdforge.kernels.kd_triton import kd_loss_triton
from kdforge.kernels.triton_common import LaunchConfig, launch_config, vector_width

from tests.kernels.test_dist_kd import dist64
from tests.kernels.test_dkd import dkd_float64
from tests.kernels.test_kd_triton import kd_float64

OFFSET = 2**31  # a row starting past the int32 range: offsets must be computed in int64


def _far_apart_rows(rows: torch.Tensor) -> torch.Tensor:
    """A (2, C) view whose second row starts at element 2^31 of a lazily allocated buffer.

    torch.empty does not touch the 4 GiB it reserves, so only the pages of the two rows are used.
    """
    classes = rows.shape[1]
    storage = torch.empty(OFFSET + classes, dtype=rows.dtype, device=rows.device)
    storage[:classes], storage[OFFSET : OFFSET + classes] = rows[0], rows[1]
    return storage.as_strided((2, classes), (OFFSET, 1))


LOSSES = {
    "kd": lambda s, t, **kw: kd_loss(s, t, 4.0, **kw),
    "dkd": lambda s, t, **kw: dkd_loss(s, t, torch.tensor([3, 63], device=s.device), **kw),
    "dist": lambda s, t, **kw: dist_loss(s, t, temperature=4.0, **kw),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_rows_past_2_pow_31_elements(name: str) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(2, 64, generator=g).to(device, torch.float16)
    teacher = torch.randn(2, 64, generator=g).to(device, torch.float16)
    far = _far_apart_rows(rows).requires_grad_()
    near = rows.clone().requires_grad_()
    loss_far = LOSSES[name](far, teacher, backend="triton")
    loss_near = LOSSES[name](near, teacher, backend="triton")
    loss_far.backward()
    loss_near.backward()
    assert loss_far.item() == loss_near.item()
    assert torch.equal(far.grad, near.grad)


# The row walk: forced 16-wide chunks at small C, with 16-byte vectors (VEC 4 on fp32) and without, on rows
# that start off a 16-byte boundary (C = 37: rows at 0, 37, 74, ...), against float64 math.
WALKS = [LaunchConfig(16, 1, 1), LaunchConfig(16, 1, 4), None]
FUSED = {
    "kd": lambda s, t, std, config: kd_loss_triton(s, t, 2.0, std, config),
    "dkd": lambda s, t, std, config: dkd_loss_triton(s, t, TARGET5, 0.5, 2.0, 2.0, std, config),
    "dist": lambda s, t, std, config: dist_loss_triton(s, t, 1.0, 2.0, 2.0, std, 1e-8, config),
}
FORMULAS = {
    "kd": lambda s, t, std: kd_float64(s, t, 2.0, std),
    "dkd": lambda s, t, std: dkd_float64(s, t, TARGET5, 0.5, 2.0, 2.0, std),
    "dist": lambda s, t, std: dist64(s, t, 1.0, 2.0, 2.0, std),
}
TARGET5 = torch.tensor([0, 36, 3, 4, 18])


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("config", WALKS, ids=["chunks-scalar", "chunks-vec4", "table"])
@pytest.mark.parametrize("name", sorted(FUSED))
def test_every_row_walk_matches_float64(name: str, config: LaunchConfig | None, standardize: bool) -> None:
    g = torch.Generator().manual_seed(7)
    s, t = torch.randn(5, 37, generator=g) * 3, torch.randn(5, 37, generator=g) * 3
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s_k, t_k = s.to(device).clone().requires_grad_(), t.to(device).clone().requires_grad_()
    loss = FUSED[name](s_k, t_k, standardize, config)
    loss.backward(torch.tensor(-3.0, device=device))
    s_r, t_r = s.double().requires_grad_(), t.double().requires_grad_()
    want = FORMULAS[name](s_r, t_r, standardize)
    (want * -3.0).backward()
    assert loss.item() == pytest.approx(want.item(), rel=2e-5, abs=1e-6)
    for got, ref in ((s_k.grad, s_r.grad), (t_k.grad, t_r.grad)):
        assert ((got.cpu().double() - ref).norm() / ref.norm()).item() < 2e-5


def test_launch_table_uses_vectors_only_on_contiguous_matrices() -> None:
    bf16, fp32 = torch.zeros(4, 37, dtype=torch.bfloat16), torch.zeros(4, 37)
    assert vector_width(bf16, bf16) == 8 and vector_width(fp32, fp32) == 4 and vector_width(bf16, fp32) == 8
    assert vector_width(fp32[:, ::2], fp32[:, ::2]) == 1 and vector_width(fp32.t(), fp32.t()) == 1
    assert vector_width(torch.zeros(4, 40)[:, :37], fp32) == 1  # row stride 40 != C
    assert launch_config(37, fp32, fp32) == LaunchConfig(64, 1, 4)
    assert launch_config(32000, bf16, bf16) == LaunchConfig(2048, 8, 8)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_logits_changed_in_place_after_the_forward_are_refused_at_backward(name: str) -> None:
    """The backward re-reads the saved logits: autograd's version counter refuses a modified one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    s = torch.randn(2, 64, device=device, requires_grad=True)
    t = torch.randn(2, 64, device=device)
    loss = LOSSES[name](s * 1.0, t, backend="triton")
    t.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
