"""The fused kernels under every AMP mode: fp16 logits with a GradScaler-sized grad_output, bf16, fp32, and
teacher gradients, against float64 math on the same (cast) inputs; autocast regions end to end; what the
forward saves for the backward.

The fp16 case is the one that broke when gradients were written in the input dtype during the forward
(before grad_output is known): a student close to its teacher has per-element gradients around 1e-6,
below fp16's normal range, so they were rounded to a few subnormal steps (or 0) and only then multiplied
by the loss scale. The kernels now compute them in the backward with grad_output folded in, in fp32.
"""

from __future__ import annotations

import pytest
import torch
from kdforge.kernels import dist_loss, dkd_loss, kd_loss

from tests.kernels.test_dist_kd import dist64
from tests.kernels.test_dkd import dkd_float64
from tests.kernels.test_kd_triton import kd_float64

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, C = 8, 5003  # > one 2048-wide chunk per row, an odd C: every row has an unaligned head and a tail
SCALE = 65536.0  # torch.amp.GradScaler's initial scale
TARGET = torch.tensor([0, 17, C - 1, 2500, 1, 4999, 4096, 2047])

LOSSES = {
    "kd": (
        lambda s, t, backend: kd_loss(s, t, 4.0, backend=backend),
        lambda s, t: kd_float64(s, t, 4.0, False),
    ),
    "dkd": (
        lambda s, t, backend: dkd_loss(s, t, TARGET.to(s.device), backend=backend),
        lambda s, t: dkd_float64(s, t, TARGET.to(s.device)),
    ),
    "dist": (
        lambda s, t, backend: dist_loss(s, t, temperature=4.0, backend=backend),
        lambda s, t: dist64(s, t, T=4.0),
    ),
}


def _close_pair(dtype: torch.dtype, seed: int = 0, noise: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """A student whose logits are within `noise` of its teacher's (late in distillation)."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(B, C, generator=g) * 3
    student = teacher + noise * torch.randn(B, C, generator=g)
    return student.to(DEVICE, dtype), teacher.to(DEVICE, dtype)


def _normwise(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.to(got.device)
    return ((got.double() - want).norm() / want.norm()).item()


def _grads(name: str, s: torch.Tensor, t: torch.Tensor, grad_output: float):
    """Kernel gradients (both logits) and float64 reference gradients of grad_output * loss."""
    fused, formula = LOSSES[name]
    s_k, t_k = s.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    loss = fused(s_k, t_k, "triton")
    loss.backward(torch.tensor(grad_output, device=loss.device))
    s_r, t_r = s.detach().cpu().double().requires_grad_(), t.detach().cpu().double().requires_grad_()
    (formula(s_r, t_r) * grad_output).backward()
    return s_k.grad, t_k.grad, s_r.grad, t_r.grad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_fp16_with_a_loss_scale_keeps_small_gradients(name: str) -> None:
    s, t = _close_pair(torch.float16, noise=0.003)
    got_s, got_t, want_s, want_t = _grads(name, s, t, SCALE)
    assert got_s.dtype == got_t.dtype == torch.float16
    assert torch.isfinite(got_s).all() and torch.isfinite(got_t).all()
    if name != "dist":  # DIST's gradients at this B are within fp16's normal range; KD's and DKD's are not:
        unscaled = want_s / SCALE  # stored in fp16 before scaling, they would lose > 1% of their norm
        assert _normwise(unscaled.half(), unscaled) > 1e-2
    assert _normwise(got_s, want_s) <= 1e-2
    assert _normwise(got_t, want_t) <= 1e-2


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_fp16_with_a_loss_scale_keeps_small_gradients_in_one_chunk_rows(name: str) -> None:
    """Rows of one 2048-wide chunk (C = 2047: unaligned heads and tails) take the same single backward
    walk with grad_output folded in: the fp16 case above where storing before the scale loses > 1%."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 2047, generator=g) * 3
    student = teacher + 0.003 * torch.randn(16, 2047, generator=g)
    s = student.to(DEVICE, torch.float16).requires_grad_()
    t = teacher.to(DEVICE, torch.float16).requires_grad_()
    target = (torch.arange(16) * 127 % 2047).to(DEVICE)
    if name == "kd":
        loss, formula = kd_loss(s, t, 4.0, backend="triton"), lambda a, b: kd_float64(a, b, 4.0, False)
    else:
        loss, formula = dkd_loss(s, t, target, backend="triton"), lambda a, b: dkd_float64(a, b, target.cpu())
    loss.backward(torch.tensor(SCALE, device=DEVICE))
    s_r, t_r = s.detach().cpu().double().requires_grad_(), t.detach().cpu().double().requires_grad_()
    (formula(s_r, t_r) * SCALE).backward()
    unscaled = s_r.grad / SCALE
    assert _normwise(unscaled.half(), unscaled) > 1e-2
    assert s.grad.dtype == t.grad.dtype == torch.float16
    assert _normwise(s.grad, s_r.grad) <= 1e-2
    assert _normwise(t.grad, t_r.grad) <= 1e-2


@pytest.mark.parametrize(
    ("dtype", "grad_output", "tolerance"),
    [(torch.bfloat16, 1.0, 1e-2), (torch.bfloat16, SCALE, 1e-2), (torch.float32, 1.0, 1e-3)],
    ids=["bf16", "bf16-scaled", "fp32"],
)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_and_fp32_with_teacher_gradients(
    name: str, dtype: torch.dtype, grad_output: float, tolerance: float
) -> None:
    s, t = _close_pair(dtype, seed=1)
    got_s, got_t, want_s, want_t = _grads(name, s, t, grad_output)
    assert got_s.dtype == got_t.dtype == dtype
    assert _normwise(got_s, want_s) <= tolerance
    assert _normwise(got_t, want_t) <= tolerance


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_inside_an_autocast_region_gradients_match_the_torch_path(name: str, amp_dtype: torch.dtype) -> None:
    """Logits of an autocast matmul (half precision), then the loss: weight gradients as the torch path's."""
    g = torch.Generator().manual_seed(2)
    features = torch.randn(B, 64, generator=g).to(DEVICE)
    weight = (torch.randn(C, 64, generator=g) * 0.2).to(DEVICE)
    teacher = (torch.randn(B, C, generator=g) * 3).to(DEVICE)
    fused, _ = LOSSES[name]
    grads = {}
    for backend in ("triton", "torch"):
        w = weight.clone().requires_grad_()
        with torch.autocast(torch.device(DEVICE).type, dtype=amp_dtype):
            logits = features @ w.t()
            assert logits.dtype == amp_dtype
            loss = fused(logits, teacher.to(amp_dtype), backend)
        (loss * SCALE).backward()
        grads[backend] = w.grad
    assert _normwise(grads["triton"], grads["torch"].double()) <= 1e-2


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_forward_saves_the_inputs_and_per_row_or_column_statistics_only(name: str) -> None:
    """No (B, C) buffer beyond the logits themselves is kept between forward and backward."""
    s, t = _close_pair(torch.float32, seed=3)
    s.requires_grad_()
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = LOSSES[name][0](s, t, "triton")
    extra = [x for x in saved if x.data_ptr() not in (s.data_ptr(), t.data_ptr()) and x.numel() > 1]
    assert all(x.numel() <= 32 * (B + C) for x in extra), [tuple(x.shape) for x in extra]
    loss.backward()
    assert s.grad is not None and s.grad.shape == (B, C)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled kernels at training size"
)
@pytest.mark.parametrize(("b", "c"), [(1024, 1000), (4096, 32000)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gpu_fp16_loss_scale_at_training_sizes(name: str, b: int, c: int) -> None:
    """The review's case (B=1024, C=1000, fp16 student close to its teacher, grad_output 65536) and a
    training-size one, compiled: normwise error <= 1e-2 against float64 on the same fp16 inputs."""
    g = torch.Generator(device="cuda").manual_seed(5)
    teacher = torch.randn(b, c, device="cuda", generator=g) * 3
    student = (teacher + 0.01 * torch.randn(b, c, device="cuda", generator=g)).half()
    teacher = teacher.half()
    target = torch.randint(0, c, (b,), device="cuda", generator=g)
    fused = {
        "kd": lambda s, t: kd_loss(s, t, 4.0, backend="triton"),
        "dkd": lambda s, t: dkd_loss(s, t, target, backend="triton"),
        "dist": lambda s, t: dist_loss(s, t, temperature=4.0, backend="triton"),
    }[name]
    formula = {
        "kd": lambda s, t: kd_float64(s, t, 4.0, False),
        "dkd": lambda s, t: dkd_float64(s, t, target),
        "dist": lambda s, t: dist64(s, t, T=4.0),
    }[name]
    s_k, t_k = student.clone().requires_grad_(), teacher.clone().requires_grad_()
    fused(s_k, t_k).backward(torch.tensor(SCALE, device="cuda"))
    s_r, t_r = student.double().requires_grad_(), teacher.double().requires_grad_()
    (formula(s_r, t_r) * SCALE).backward()
    assert _normwise(s_k.grad, s_r.grad) <= 1e-2
    assert _normwise(t_k.grad, t_r.grad) <= 1e-2
