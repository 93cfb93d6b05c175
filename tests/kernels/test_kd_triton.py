"""The fused Triton KD kernel (interpreter on CPU, compiled on CUDA) against an independent float64 formula.

The reference here is written from the paper's formula in float64 torch, not taken from kernels/; inputs
are first cast to the tested dtype so only the kernel's accumulation and output rounding remain.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kdforge.kernels import kd_loss

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (loss relative tolerance, gradient tolerance relative to the largest reference gradient)
TOLERANCE = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-5, 2e-3), torch.bfloat16: (2e-5, 1.6e-2)}


def kd_float64(s: torch.Tensor, t: torch.Tensor, T: float, standardize: bool) -> torch.Tensor:
    """T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T)), z-scoring rows first when asked."""

    def zscore(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)
        var = centred.pow(2).sum(1, keepdim=True) / max(x.shape[1] - 1, 1)
        std = torch.where(var > 0, torch.where(var > 0, var, 1.0).sqrt(), 0.0)
        return centred / (std + 1e-7)

    if standardize:
        s, t = zscore(s), zscore(t)
    log_ps, log_pt = torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(1).mean() * T * T


def _check(s: torch.Tensor, t: torch.Tensor, T: float, standardize: bool, grad_scale: float = 1.0) -> None:
    """Value and both gradients of the kernel against the float64 formula on the same (cast) inputs."""
    dtype = s.dtype
    s_k, t_k = s.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    loss = kd_loss(s_k, t_k, T, standardize=standardize, backend="triton")
    (loss * grad_scale).backward()
    s_r, t_r = s.detach().double().requires_grad_(), t.detach().double().requires_grad_()
    ref = kd_float64(s_r, t_r, T, standardize)
    (ref * grad_scale).backward()
    rel, grad_tol = TOLERANCE[dtype]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(ref.item(), rel=rel, abs=1e-5)
    for got, want in ((s_k.grad, s_r.grad), (t_k.grad, t_r.grad)):
        assert got.dtype == dtype and got.shape == want.shape
        assert torch.isfinite(got).all()
        scale = want.abs().max().item() + 1e-12
        err = (got.double() - want).abs().max().item()
        assert err <= grad_tol * scale + 1e-6, f"max grad error {err:.3g} vs scale {scale:.3g}"


def _logits(b: int, c: int, seed: int, dtype: torch.dtype = torch.float32, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(b, c, generator=g) * scale).to(DEVICE, dtype)
    t = (torch.randn(b, c, generator=g) * scale).to(DEVICE, dtype)
    return s, t


# A covering set of the grid: B in {1, 3, 64, 257}, C in {1, 2, 10, 100, 1000, 5003}, T in {1, 4},
# standardize on/off; the interpreter's cost grows with rows x chunks, so large B pairs with small C.
CASES = [
    (1, 1, 4.0, False),
    (1, 1, 1.0, True),
    (3, 2, 1.0, False),
    (3, 2, 4.0, True),
    (64, 10, 4.0, False),
    (64, 10, 1.0, True),
    (257, 100, 4.0, True),
    (257, 10, 1.0, False),
    (3, 1000, 1.0, True),
    (64, 100, 1.0, False),
    (3, 5003, 4.0, False),
    (1, 5003, 1.0, True),
    (2, 40000, 4.0, True),
    (1, 40000, 1.0, False),
]


@pytest.mark.parametrize(("b", "c", "T", "standardize"), CASES)
def test_float32_matches_float64_formula(b: int, c: int, T: float, standardize: bool) -> None:
    s, t = _logits(b, c, seed=b * 7919 + c)
    _check(s, t, T, standardize)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("b", "c", "standardize"), [(3, 1000, False), (2, 5003, True), (64, 10, True)])
def test_half_precision_inputs(dtype: torch.dtype, b: int, c: int, standardize: bool) -> None:
    s, t = _logits(b, c, seed=c, dtype=dtype)
    _check(s, t, 4.0, standardize)


@pytest.mark.parametrize("c", [50, 9000])
def test_non_contiguous_inputs_use_their_strides(c: int) -> None:
    base_s, base_t = _logits(c, 4, seed=3)
    s, t = base_s.t(), base_t.t()[:, :]  # (4, c) views with stride_c != 1
    assert not s.is_contiguous()
    _check(s, t, 4.0, False)
    wide_s, wide_t = _logits(4, 2 * c, seed=5)
    _check(wide_s[:, ::2], wide_t[:, 1::2], 2.0, True)


@pytest.mark.parametrize("c", [7, 6000])
def test_extreme_and_constant_rows_stay_finite(c: int) -> None:
    s, t = _logits(4, c, seed=11)
    s[0], t[0] = 1e4, -1e4  # constant rows
    s[1, 0], t[1, -1] = 1e4, 1e4  # one huge logit
    s[2, :], t[2, :] = -1e4, 0.0
    s[3, ::2] = -1e4
    for standardize in (False, True):
        for T in (1.0, 4.0):
            _check(s, t, T, standardize)


def test_grad_output_is_honoured() -> None:
    s, t = _logits(8, 300, seed=13)
    _check(s, t, 4.0, True, grad_scale=-3.5)


def test_saved_buffers_are_never_modified_so_backward_can_repeat() -> None:
    s, t = _logits(5, 5003, seed=17)
    s.requires_grad_()
    loss = kd_loss(s, t, 4.0, backend="triton")
    first = torch.autograd.grad(loss * 2.0, s, retain_graph=True)[0]
    second = torch.autograd.grad(loss * 2.0, s)[0]
    assert torch.equal(first, second)


def test_no_gradient_work_without_grad_and_teacher_grad_only_when_asked() -> None:
    s, t = _logits(6, 123, seed=19)
    with torch.no_grad():
        value = kd_loss(s, t, 4.0, backend="triton")
    assert value.item() == pytest.approx(kd_float64(s.double(), t.double(), 4.0, False).item(), rel=2e-5)
    s.requires_grad_()
    kd_loss(s, t, 4.0, backend="triton").backward()
    assert s.grad is not None and t.grad is None


def test_auto_backend_on_cpu_is_the_torch_reference() -> None:
    s, t = _logits(4, 10, seed=23)
    torch_value = kd_loss(s.cpu(), t.cpu(), 4.0, backend="torch")
    assert kd_loss(s.cpu(), t.cpu(), 4.0).item() == torch_value.item()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled Triton kernels")
@pytest.mark.parametrize(("b", "c", "dtype"), [(4096, 32000, torch.bfloat16), (64, 262144, torch.float32)])
def test_compiled_kernel_at_large_shapes(b: int, c: int, dtype: torch.dtype) -> None:
    s, t = _logits(b, c, seed=29, dtype=dtype)
    _check(s, t, 4.0, False)


# ----------------------------------------------------------------------------- properties (torch path)
finite_logits = st.integers(1, 6).flatmap(
    lambda b: st.integers(1, 12).flatmap(
        lambda c: st.lists(st.floats(-30, 30, allow_nan=False), min_size=2 * b * c, max_size=2 * b * c).map(
            lambda v: torch.tensor(v, dtype=torch.float64).reshape(2, b, c)
        )
    )
)


@settings(max_examples=40, deadline=None)
@given(finite_logits, st.sampled_from([1.0, 4.0]), st.booleans())
def test_property_kd_of_identical_logits_is_zero(pair: torch.Tensor, T: float, standardize: bool) -> None:
    s = pair[0]
    assert abs(kd_loss(s, s.clone(), T, standardize=standardize, backend="torch").item()) < 1e-9


@settings(max_examples=40, deadline=None)
@given(finite_logits, st.sampled_from([1.0, 4.0]), st.booleans())
def test_property_kd_is_non_negative_and_its_gradients_sum_to_zero(
    pair: torch.Tensor, T: float, standardize: bool
) -> None:
    s, t = pair[0].clone().requires_grad_(), pair[1].clone().requires_grad_()
    loss = kd_loss(s, t, T, standardize=standardize, backend="torch")
    assert loss.item() >= -1e-12
    loss.backward()
    assert s.grad.sum(1).abs().max().item() < 1e-9
    assert t.grad.sum(1).abs().max().item() < 1e-9
