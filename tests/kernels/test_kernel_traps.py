"""Known traps of fused loss kernels, checked for every Triton loss: offsets past 2^31 elements.

The other traps (both strides, grad_output != 1, saved buffers never written, fp32 math on half loads,
DKD's masked non-target softmax) are tested per loss in test_kd_triton.py, test_dkd.py and test_dist.py.
"""

from __future__ import annotations

import pytest
import torch
from kdforge.kernels import dist_loss, dkd_loss, kd_loss

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
