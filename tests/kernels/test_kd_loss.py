"""kd_loss against independent float64 math (NumPy) and the analytic gradients of the KD objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kdforge.kernels import kd_loss


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=1, keepdims=True)) / (x.std(axis=1, ddof=1, keepdims=True) + 1e-7)


def kd_numpy(s: np.ndarray, t: np.ndarray, T: float, standardize: bool = False) -> float:
    """The paper's formula in float64: T^2 * mean_i sum_c p_t log(p_t / p_s)."""
    if standardize:
        s, t = _zscore(s), _zscore(t)
    ps, pt = _softmax(s / T), _softmax(t / T)
    return float((pt * (np.log(pt) - np.log(ps))).sum(axis=1).mean() * T * T)


def _logits(b: int, c: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, generator=g) * scale, torch.randn(b, c, generator=g) * scale


@pytest.mark.parametrize(
    ("b", "c", "T"), [(1, 2, 1.0), (8, 10, 4.0), (64, 100, 4.0), (3, 1000, 2.0), (5, 7, 0.5)]
)
@pytest.mark.parametrize("standardize", [False, True])
def test_value_matches_float64_formula(b: int, c: int, T: float, standardize: bool) -> None:
    s, t = _logits(b, c, seed=b * 1000 + c)
    got = kd_loss(s, t, T, standardize=standardize)
    want = kd_numpy(s.double().numpy(), t.double().numpy(), T, standardize)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_matches_torch_kl_div_batchmean() -> None:
    s, t = _logits(16, 50, seed=3)
    T = 4.0
    other = (
        torch.nn.functional.kl_div(
            torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1), reduction="batchmean", log_target=True
        )
        * T
        * T
    )
    assert kd_loss(s, t, T).item() == pytest.approx(other.item(), rel=1e-5)


def test_zero_when_student_equals_teacher_and_positive_otherwise() -> None:
    s, t = _logits(4, 10, seed=5)
    assert kd_loss(s, s.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, t, 4.0).item() > 0


def test_gradients_match_analytic_form_in_float64() -> None:
    """d/ds = T (p_s - p_t) / B;  d/dt = T p_t (log p_t - log p_s - KL_row) / B."""
    T, (s, t) = 3.0, _logits(6, 9, seed=11)
    s, t = s.double().requires_grad_(), t.double().requires_grad_()
    kd_loss(s, t, T).backward()
    ps, pt = torch.softmax(s.detach() / T, 1), torch.softmax(t.detach() / T, 1)
    log_ratio = pt.log() - ps.log()
    kl_row = (pt * log_ratio).sum(1, keepdim=True)
    B = s.shape[0]
    torch.testing.assert_close(s.grad, T * (ps - pt) / B, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(t.grad, T * pt * (log_ratio - kl_row) / B, rtol=1e-10, atol=1e-12)


def test_gradcheck_with_standardization() -> None:
    s, t = _logits(3, 6, seed=13, scale=1.0)
    s, t = s.double().requires_grad_(), t.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kd_loss(a, b, 2.0, standardize=True), (s, t))


def test_standardization_is_invariant_to_shift_and_positive_scale() -> None:
    s, t = _logits(8, 20, seed=17)
    base = kd_loss(s, t, 2.0, standardize=True)
    moved = kd_loss(5.0 * s - 3.0, 0.2 * t + 7.0, 2.0, standardize=True)
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)
    assert kd_loss(5.0 * s, t, 2.0).item() != pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_accumulate_in_float32_and_return_grads_in_input_dtype(dtype: torch.dtype) -> None:
    s, t = _logits(8, 100, seed=19)
    s_half, t_half = s.to(dtype).requires_grad_(), t.to(dtype)
    loss = kd_loss(s_half, t_half, 4.0)
    loss.backward()
    want = kd_numpy(s_half.detach().double().numpy(), t_half.double().numpy(), 4.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert s_half.grad.dtype == dtype


def test_non_contiguous_inputs() -> None:
    s, t = _logits(10, 8, seed=23)
    s_nc, t_nc = s.t().contiguous().t(), t[:, ::1].t().contiguous().t()
    assert not s_nc.is_contiguous()
    assert kd_loss(s_nc, t_nc, 4.0).item() == pytest.approx(kd_loss(s, t, 4.0).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("student", "teacher", "kwargs", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), {}, "differ in shape"),
        (torch.zeros(6), torch.zeros(6), {}, "2-D"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), {}, "floating"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"temperature": 0.0}, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"backend": "cuda-magic"}, "backend"),
    ],
)
def test_bad_arguments_raise_one_clear_value_error(student, teacher, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        kd_loss(student, teacher, **kwargs)
