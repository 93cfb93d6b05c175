"""`expected_grad`: KD and DKD told their grad_output in advance write the gradients of one-chunk rows in
the forward (3 N*e moved instead of 5) and the backward only checks grad_output on the device.

What must hold, against float64 math on the same (cast) inputs: the gradients are the same whether the
told value is right or wrong (a wrong one, a GradScaler's scale say, makes the backward rewrite them from
the logits), under fp16 with a GradScaler-sized grad_output too; a right one leaves the backward writing
nothing (shown with a sentinel planted in the forward's buffers); rows of more than one chunk ignore it.
"""

from __future__ import annotations

import pytest
import torch
from kdforge.kernels import dkd_loss, kd_loss
from kdforge.kernels.dkd_triton import dkd_loss_triton
from kdforge.kernels.kd_triton import kd_loss_triton
from kdforge.kernels.triton_common import LaunchConfig

from tests.kernels.test_dkd import dkd_float64
from tests.kernels.test_kd_triton import kd_float64

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
B, C = 16, 2047  # one 2048-wide chunk per row, odd C: unaligned heads and tails
SCALE = 65536.0  # torch.amp.GradScaler's initial scale
TARGET = torch.arange(B) * 127 % C


def _target(logits: torch.Tensor) -> torch.Tensor:
    return TARGET.to(logits.device) % logits.shape[1]


def _fused(name: str, s: torch.Tensor, t: torch.Tensor, expected: float | None, config=None) -> torch.Tensor:
    if name == "kd":
        return kd_loss_triton(s, t, 4.0, False, config, expected_grad=expected)
    return dkd_loss_triton(s, t, _target(s), 1.0, 8.0, 4.0, False, config, expected_grad=expected)


def _float64(name: str, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return kd_float64(s, t, 4.0, False) if name == "kd" else dkd_float64(s, t, _target(s))


def _close_pair(
    dtype: torch.dtype, classes: int = C, noise: float = 0.003
) -> tuple[torch.Tensor, torch.Tensor]:
    """A student within `noise` of its teacher: per-element gradients far below fp16's normal range."""
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(B, classes, generator=g) * 3
    student = teacher + noise * torch.randn(B, classes, generator=g)
    return student.to(DEVICE, dtype), teacher.to(DEVICE, dtype)


def _reference(name: str, s: torch.Tensor, t: torch.Tensor, grad_output: float):
    s_r, t_r = s.detach().cpu().double().requires_grad_(), t.detach().cpu().double().requires_grad_()
    (_float64(name, s_r, t_r) * grad_output).backward()
    return s_r.grad, t_r.grad


def _normwise(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.detach().cpu().double() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("name", ["kd", "dkd"])
@pytest.mark.parametrize(
    ("dtype", "grad_output", "told", "tolerance"),
    [
        (torch.float16, SCALE, SCALE, 1e-2),  # told the scale: written in the forward, already scaled
        (torch.float16, SCALE, 1.0, 1e-2),  # told 1, got the scale: rewritten from the logits
        (torch.bfloat16, 0.9, 0.9, 1e-2),
        (torch.float32, 0.9, 2.0, 1e-3),  # fp32 rounding of p_s - p_t for a student this close
    ],
)
def test_gradients_match_float64_whether_the_told_grad_output_is_right_or_not(
    name: str, dtype: torch.dtype, grad_output: float, told: float, tolerance: float
) -> None:
    s, t = _close_pair(dtype)
    s, t = s.requires_grad_(), t.requires_grad_()  # teacher gradients too
    loss = _fused(name, s, t, told)
    assert loss.grad_fn.early is not None  # one-chunk rows: the forward wrote them
    loss.backward(torch.tensor(grad_output, device=DEVICE))
    want_s, want_t = _reference(name, s, t, grad_output)
    if dtype == torch.float16:  # the case is meaningful: unscaled, these gradients are lost in fp16
        unscaled = want_s / SCALE
        assert _normwise(unscaled.half(), unscaled) > 1e-2
    assert s.grad.dtype == t.grad.dtype == dtype
    assert _normwise(s.grad, want_s) <= tolerance
    assert _normwise(t.grad, want_t) <= tolerance


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_a_right_told_grad_output_leaves_the_backward_nothing_to_write(name: str) -> None:
    """The forward's buffers hold the gradients before any backward; with grad_output as told the backward
    keeps them (a planted sentinel survives); with another grad_output it rewrites every element."""
    s, t = _close_pair(torch.float32, classes=100, noise=0.5)
    s = s.requires_grad_()
    want_s, _ = _reference(name, s, t, 0.75)
    loss = _fused(name, s, t, 0.75)
    (written_s, written_t), _told = loss.grad_fn.early
    assert written_t is None  # the teacher does not require grad: no buffer for it
    assert _normwise(written_s, want_s) <= 1e-5  # already there after the forward
    written_s.fill_(7.0)
    loss.backward(torch.tensor(0.75, device=DEVICE))
    assert torch.equal(s.grad, torch.full_like(s, 7.0))  # untouched: the backward wrote nothing

    s.grad = None
    loss = _fused(name, s, t, 0.75)
    loss.grad_fn.early[0][0].fill_(7.0)
    loss.backward(torch.tensor(-3.0, device=DEVICE))  # not as told: rewritten from the logits
    assert _normwise(s.grad, want_s * (-3.0 / 0.75)) <= 1e-5


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_rows_of_several_chunks_ignore_the_told_grad_output(name: str) -> None:
    s, t = _close_pair(torch.float32, classes=100, noise=0.5)
    s = s.requires_grad_()
    loss = _fused(name, s, t, 0.75, LaunchConfig(block=32, num_warps=1, vec=4))  # 4 chunks per row
    assert loss.grad_fn.early is None  # nothing written in the forward: the second walk would not be cached
    loss.backward(torch.tensor(0.75, device=DEVICE))
    assert _normwise(s.grad, _reference(name, s, t, 0.75)[0]) <= 1e-5


def test_no_buffer_is_written_without_autograd() -> None:
    s, t = _close_pair(torch.float32, classes=100)
    with torch.no_grad():
        loss = _fused("kd", s.requires_grad_(), t, 1.0)
    assert loss.grad_fn is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "1"])
def test_expected_grad_must_be_a_finite_number(bad) -> None:
    s, t = _close_pair(torch.float32, classes=10)
    with pytest.raises(ValueError, match="expected_grad"):
        kd_loss(s, t, expected_grad=bad)
    with pytest.raises(ValueError, match="expected_grad"):
        dkd_loss(s, t, _target(s), expected_grad=bad)


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled kernels at training size"
)
@pytest.mark.parametrize("told", [SCALE, 1.0], ids=["told-the-scale", "told-1"])
@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_gpu_told_grad_output_at_training_size(name: str, told: float) -> None:
    """B=1024, C=1000 (one chunk), fp16 student close to its teacher, grad_output 65536, compiled: the
    same normwise error bound against float64 whether the forward's gradient is kept or rewritten."""
    g = torch.Generator(device="cuda").manual_seed(5)
    teacher = torch.randn(1024, 1000, device="cuda", generator=g) * 3
    student = (teacher + 0.01 * torch.randn(1024, 1000, device="cuda", generator=g)).half()
    s, t = student.requires_grad_(), teacher.half().requires_grad_()
    target = torch.randint(0, 1000, (1024,), device="cuda", generator=g)
    if name == "kd":
        loss = kd_loss(s, t, 4.0, backend="triton", expected_grad=told)
    else:
        loss = dkd_loss(s, t, target, backend="triton", expected_grad=told)
    loss.backward(torch.tensor(SCALE, device="cuda"))
    s_r, t_r = s.detach().cpu().double().requires_grad_(), t.detach().cpu().double().requires_grad_()
    reference = kd_float64(s_r, t_r, 4.0, False) if name == "kd" else dkd_float64(s_r, t_r, target.cpu())
    (reference * SCALE).backward()
    assert _normwise(s.grad, s_r.grad) <= 1e-2
    assert _normwise(t.grad, t_r.grad) <= 1e-2
