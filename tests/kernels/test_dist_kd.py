"""dist_loss against an independent float64 formula (the official DIST code, written out below) on the
fused Triton kernels (interpreted on CPU tensors here, compiled on a CUDA machine) and on the torch path,
plus property tests of the loss and argument checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kdforge.kernels.dist_kd import dist_loss

device = "cuda" if torch.cuda.is_available() else "cpu"

# Tolerances of the Triton path against float64 math on the same (cast) inputs: the loss is computed in
# fp32 in every case; gradients are stored in the input dtype, so they carry its rounding on top of fp32
# accumulation (fp16: 2^-11 relative; bf16: 2^-8 compiled, but the Triton interpreter truncates fp32 to
# bf16, up to 2^-7). atol is a fraction of the largest |gradient|. Measured worst cases: fp32 1.5e-6 of
# max |grad| (elementwise 7e-5 relative), fp16 3e-4 (5e-4), bf16 7e-3 (7.7e-3, interpreter truncation).
VALUE_RTOL = 2e-5
GRAD_TOL = {  # dtype: (rtol, atol as a fraction of max |grad|)
    torch.float32: (2e-4, 1e-5),
    torch.float16: (2e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 8e-3),
}


# --- independent float64 reference: the official DIST code with safe norms ---------------------------


def _norm64(x: torch.Tensor, dim: int) -> torch.Tensor:
    sq = (x * x).sum(dim)
    pos = sq > 0
    return torch.where(pos, torch.where(pos, sq, 1.0).sqrt(), 0.0)


def _pearson64(a: torch.Tensor, b: torch.Tensor, eps: float, dim: int) -> torch.Tensor:
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    den = _norm64(a, dim) * _norm64(b, dim) + eps
    pos = den > 0
    return torch.where(pos, (a * b).sum(dim) / torch.where(pos, den, 1.0), 0.0)


def _zscore64(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(1, keepdim=True)
    var = (centred * centred).sum(1, keepdim=True) / max(x.shape[1] - 1, 1)
    return centred / (torch.where(var > 0, torch.where(var > 0, var, 1.0).sqrt(), 0.0) + 1e-7)


def dist64(s, t, beta=1.0, gamma=1.0, T=1.0, standardize=False, eps=1e-8) -> torch.Tensor:
    """T^2 (beta (1 - mean_i pearson(rows)) + gamma (1 - mean_j pearson(columns))) of softmax(z / T)."""
    s, t = s.double(), t.double()
    if standardize:
        s, t = _zscore64(s), _zscore64(t)
    ys, yt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    inter = 1 - _pearson64(ys, yt, eps, 1).mean()
    intra = 1 - _pearson64(ys, yt, eps, 0).mean()
    return T * T * (beta * inter + gamma * intra)


def reference(s, t, grad_output=1.0, **kwargs):
    """float64 loss and float64-autograd gradients for both logits (from the possibly low-precision s, t)."""
    s64 = s.detach().cpu().double().requires_grad_()
    t64 = t.detach().cpu().double().requires_grad_()
    loss = dist64(s64, t64, **kwargs)
    (loss * grad_output).backward()
    return loss.item(), s64.grad, t64.grad


def _logits(b: int, c: int, seed: int, scale: float = 3.0, dtype=torch.float32):
    """Correlated student/teacher logits (a realistic, non-trivial Pearson correlation)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(b, c, generator=g) * scale
    s = 0.6 * t + 0.8 * scale * torch.randn(b, c, generator=g)
    return s.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)


def assert_grad_close(
    got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, per_row: bool = False
) -> None:
    """Close to the float64 gradient; atol scales with the largest |gradient| (of each row if per_row),
    with a floor of 1e-30 (saturated softmax rows have true gradients below fp32's range)."""
    rtol, atol = GRAD_TOL[dtype]
    assert got.dtype == dtype
    assert torch.isfinite(got).all()
    scale = want.abs().amax(1, keepdim=True) if per_row else want.abs().max()
    got = got.detach().cpu().double()
    assert ((got - want).abs() <= atol * scale + rtol * want.abs() + 1e-30).all(), (got - want).abs().max()


def run(s, t, backend="triton", grad_output=None, **kwargs):
    s, t = s.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
    loss = dist_loss(s, t, backend=backend, **kwargs)
    if grad_output is None:
        loss.backward()
    else:
        loss.backward(torch.tensor(grad_output, device=loss.device))
    return loss, s.grad, t.grad


# --- Triton kernels vs float64 --------------------------------------------------------------------------

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TRITON_CASES = [  # (B, C, T, standardize, dtype): a covering set of shapes, paths and dtypes
    (1, 1, 1.0, False, F32),
    (3, 1, 4.0, True, F32),
    (1, 10, 1.0, True, F32),
    (1, 1000, 4.0, False, F32),
    (3, 2, 4.0, False, F32),
    (64, 2, 1.0, False, F16),
    (64, 100, 4.0, True, F32),
    (257, 10, 4.0, False, F32),
    (3, 1000, 4.0, True, BF16),
    (64, 1000, 1.0, False, F16),
    (3, 5003, 1.0, True, F32),  # > 4096 classes: chunked online path
    (3, 5003, 4.0, False, BF16),
    (2, 40000, 4.0, True, F32),
    (2, 40000, 1.0, False, BF16),
]


def _case_id(case) -> str:
    b, c, T, standardize, dtype = case
    return f"B{b}-C{c}-T{T:g}-{'std' if standardize else 'raw'}-{str(dtype).removeprefix('torch.')}"


@pytest.mark.parametrize(
    ("b", "c", "T", "standardize", "dtype"), TRITON_CASES, ids=map(_case_id, TRITON_CASES)
)
def test_triton_matches_float64_formula(b, c, T, standardize, dtype) -> None:
    s, t = _logits(b, c, seed=b * 7919 + c, dtype=dtype)
    kwargs = {"beta": 1.0, "gamma": 2.0, "T": T, "standardize": standardize}
    want, want_s, want_t = reference(s, t, **kwargs)
    loss, grad_s, grad_t = run(s, t, beta=1.0, gamma=2.0, temperature=T, standardize=standardize)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(want, rel=VALUE_RTOL, abs=1e-6 * T * T)
    assert_grad_close(grad_s, want_s, dtype)
    assert_grad_close(grad_t, want_t, dtype)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("c", [12, 5003])
def test_triton_grad_output_scales_and_backward_can_repeat(c: int, standardize: bool) -> None:
    s, t = _logits(4, c, seed=c)
    _, want_s, want_t = reference(s, t, grad_output=-2.5, T=4.0, standardize=standardize)
    s_req, t_req = s.clone().requires_grad_(), t.clone().requires_grad_()
    loss = dist_loss(s_req, t_req, temperature=4.0, standardize=standardize, backend="triton")
    loss.backward(torch.tensor(-2.5, device=device), retain_graph=True)
    assert_grad_close(s_req.grad, want_s, F32)
    assert_grad_close(t_req.grad, want_t, F32)
    first = s_req.grad.clone()
    loss.backward(torch.tensor(-2.5, device=device))  # the saved buffers are intact: grads accumulate
    torch.testing.assert_close(s_req.grad, 2 * first)


@pytest.mark.parametrize("which", ["student", "teacher"])
def test_triton_only_the_tensor_that_requires_grad_gets_one(which: str) -> None:
    s, t = _logits(5, 30, seed=3)
    _, want_s, want_t = reference(s, t, T=2.0)
    s.requires_grad_(which == "student")
    t.requires_grad_(which == "teacher")
    dist_loss(s, t, temperature=2.0, backend="triton").backward()
    if which == "student":
        assert t.grad is None
        assert_grad_close(s.grad, want_s, F32)
    else:
        assert s.grad is None
        assert_grad_close(t.grad, want_t, F32)


@pytest.mark.parametrize("c", [9, 5003])
def test_triton_non_contiguous_inputs(c: int) -> None:
    s, t = _logits(6, c, seed=5)
    s_nc = torch.stack([s, s], dim=2).flatten(1)[:, ::2]  # column stride 2
    t_nc = t.t().contiguous().t()  # column-major
    assert not s_nc.is_contiguous() and not t_nc.is_contiguous()
    want, want_s, want_t = reference(s, t, T=4.0, standardize=True)
    loss, grad_s, grad_t = run(s_nc, t_nc, temperature=4.0, standardize=True)
    assert loss.item() == pytest.approx(want, rel=VALUE_RTOL)
    assert_grad_close(grad_s, want_s, F32)
    assert_grad_close(grad_t, want_t, F32)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("c", [16, 5003])
def test_triton_extreme_logits_and_equal_rows_stay_finite(c: int, standardize: bool) -> None:
    g = torch.Generator().manual_seed(c)
    s = (torch.randint(0, 2, (4, c), generator=g) * 2 - 1) * 1e4
    t = torch.randn(4, c, generator=g) * 1e4
    s[1] = 3.0  # a row of equal logits
    t[2] = -7.0
    s, t = s.to(device), t.to(device)
    want, want_s, want_t = reference(s, t, T=4.0, standardize=standardize)
    loss, grad_s, grad_t = run(s, t, temperature=4.0, standardize=standardize)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(want, rel=1e-4)
    assert_grad_close(grad_s, want_s, F32, per_row=True)  # the equal rows' gradients are ~1e8 larger
    assert_grad_close(grad_t, want_t, F32, per_row=True)


@pytest.mark.parametrize("eps", [0.0, 1e-8])
@pytest.mark.parametrize("standardize", [False, True])
def test_triton_degenerate_shapes_and_constant_logits_stay_finite(standardize: bool, eps: float) -> None:
    """B = 1 (one-entry columns), C = 1, and all-equal logits: 0/(0 + eps) correlations, never NaN."""
    one_row = _logits(1, 5, seed=1)
    one_class = _logits(3, 1, seed=2)
    constant = (torch.zeros(3, 7, device=device), torch.full((3, 7), 2.0, device=device))
    for s, t in (one_row, one_class, constant):
        loss, grad_s, grad_t = run(s, t, temperature=2.0, standardize=standardize, eps=eps)
        assert math.isfinite(loss.item())
        assert torch.isfinite(grad_s).all() and torch.isfinite(grad_t).all()
        if s is not constant[0] or eps > 0:  # eps = 0 on constant rows is 0/0, resolved as 0 here
            want, want_s, want_t = reference(s, t, T=2.0, standardize=standardize, eps=eps)
            assert loss.item() == pytest.approx(want, rel=VALUE_RTOL)
            assert_grad_close(grad_s, want_s, F32)
            assert_grad_close(grad_t, want_t, F32)
    # no correlation anywhere: the loss is T^2 (beta + gamma), and no gradient reaches constant logits
    assert loss.item() == pytest.approx(2 * 2.0**2)
    assert not grad_s.any() and not grad_t.any()


def test_triton_value_under_no_grad() -> None:
    s, t = _logits(8, 50, seed=9)
    s.requires_grad_()
    with torch.no_grad():
        loss = dist_loss(s, t, temperature=4.0, backend="triton")
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(reference(s, t, T=4.0)[0], rel=VALUE_RTOL)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_eps_changes_the_loss_at_large_c_and_defaults_to_1e_8(backend: str) -> None:
    """Centred columns across a small batch have norms ~1/C: eps = 1e-8 dominates the intra term."""
    s, t = _logits(4, 40000, seed=11, scale=1.0)
    default = dist_loss(s, t, temperature=4.0, backend=backend).item()
    with_eps = dist_loss(s, t, temperature=4.0, eps=1e-8, backend=backend).item()
    exact = dist_loss(s, t, temperature=4.0, eps=0.0, backend=backend).item()
    assert default == with_eps
    assert abs(exact - with_eps) > 1e-2 * abs(exact)
    assert exact == pytest.approx(dist64(s.cpu(), t.cpu(), T=4.0, eps=0.0).item(), rel=1e-4)
    assert with_eps == pytest.approx(dist64(s.cpu(), t.cpu(), T=4.0, eps=1e-8).item(), rel=1e-4)


# --- torch path -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "T", "standardize"), [(1, 7, 1.0, False), (5, 1, 4.0, True), (8, 10, 4.0, True)]
)
def test_torch_path_matches_float64_formula(b: int, c: int, T: float, standardize: bool) -> None:
    s, t = _logits(b, c, seed=13 + b)
    want, want_s, want_t = reference(s, t, beta=2.0, gamma=0.5, T=T, standardize=standardize)
    kwargs = {"beta": 2.0, "gamma": 0.5, "temperature": T, "standardize": standardize}
    loss, grad_s, grad_t = run(s, t, backend="torch", **kwargs)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert_grad_close(grad_s, want_s, F32)
    assert_grad_close(grad_t, want_t, F32)
    s64, t64 = s.double().requires_grad_(), t.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: dist_loss(a, b, backend="torch", **kwargs), (s64, t64))


def _logit_arrays(max_b=5, max_c=6, low=-10.0, high=10.0, min_size=1):
    """float64 (B, C) logits uniform in [low, high) (float64: the properties are exact math, and float32
    rounding of near-constant softmax rows is comparable to eps)."""
    sizes = (st.integers(min_size, max_b), st.integers(min_size, max_c), st.integers(0, 2**31 - 1))
    return st.tuples(*sizes).map(
        lambda bcs: (
            torch.rand(bcs[0], bcs[1], generator=torch.Generator().manual_seed(bcs[2]), dtype=torch.float64)
            * (high - low)
            + low
        )
    )


@settings(max_examples=30, deadline=None)
@given(
    x=_logit_arrays(),
    shift=st.floats(-30, 30),
    which=st.sampled_from(["student", "teacher"]),
    T=st.sampled_from([1.0, 4.0]),
    standardize=st.booleans(),
)
def test_property_invariant_to_a_constant_added_to_a_row(x, shift, which, T, standardize) -> None:
    s, t = x, x.flip(1) * 0.5 + 1.0
    base = dist_loss(s, t, temperature=T, standardize=standardize, backend="torch").item()
    shifts = shift * torch.linspace(-1, 1, s.shape[0], dtype=torch.float64)[:, None]
    moved = (s + shifts, t) if which == "student" else (s, t + shifts)
    got = dist_loss(*moved, temperature=T, standardize=standardize, backend="torch").item()
    assert got == pytest.approx(base, rel=1e-6, abs=1e-9 * T * T)


@settings(max_examples=30, deadline=None)
@given(x=_logit_arrays(max_b=6, max_c=6, low=-5.0, high=5.0, min_size=2), T=st.sampled_from([1.0, 4.0]))
def test_property_identical_logits_give_zero(x, T) -> None:
    """pearson(a, a) = ||a_c||^2 / (||a_c||^2 + eps): 0 loss up to eps / (smallest centred norm)^2."""
    y = torch.softmax(x / T, 1)
    norms = torch.cat([_norm64(y - y.mean(1, keepdim=True), 1), _norm64(y - y.mean(0, keepdim=True), 0)])
    assume(norms.min().item() > 1e-2)
    loss = dist_loss(x, x.clone(), temperature=T, backend="torch").item()
    assert 0.0 <= loss <= 2 * T * T * 1e-8 / norms.min().item() ** 2 + 1e-12


@settings(max_examples=30, deadline=None)
@given(
    x=_logit_arrays(max_b=6, max_c=8, low=-50.0, high=50.0),
    T=st.floats(0.25, 8.0),
    standardize=st.booleans(),
    eps=st.sampled_from([0.0, 1e-8]),
)
def test_property_finite_for_finite_logits(x, T, standardize, eps) -> None:
    s = x.float().requires_grad_()
    t = (x.flip(0) * 0.3).float().requires_grad_()
    loss = dist_loss(s, t, temperature=T, standardize=standardize, eps=eps, backend="torch")
    loss.backward()
    assert math.isfinite(loss.item())
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()


# --- arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("student", "teacher", "kwargs", "message"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), {}, "differ in shape"),
        (torch.zeros(6), torch.zeros(6), {}, "2-D"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), {}, "floating"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"temperature": 0.0}, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"temperature": float("inf")}, "temperature"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"eps": -1e-8}, "eps"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"eps": float("nan")}, "eps"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"beta": float("inf")}, "beta"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"gamma": float("nan")}, "gamma"),
        (torch.zeros(2, 3), torch.zeros(2, 3), {"backend": "cuda-magic"}, "backend"),
    ],
)
def test_bad_arguments_raise_one_clear_value_error(student, teacher, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        dist_loss(student, teacher, **kwargs)


# --- compiled kernels at a realistic size ---------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled Triton kernels")
@pytest.mark.parametrize(("dtype", "standardize"), [(torch.bfloat16, False), (torch.float32, True)])
def test_gpu_large_shape_matches_reference(dtype: torch.dtype, standardize: bool) -> None:
    from kdforge.kernels.dist_kd_reference import dist_loss_reference

    s, t = _logits(1024, 32000, seed=17, dtype=dtype)
    loss, grad_s, grad_t = run(s, t, temperature=4.0, standardize=standardize)
    s_ref, t_ref = s.clone().requires_grad_(), t.clone().requires_grad_()
    want = dist_loss_reference(s_ref, t_ref, 1.0, 1.0, 4.0, standardize, 1e-8)
    want.backward()
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    for got, ref in ((grad_s, s_ref.grad), (grad_t, t_ref.grad)):
        rtol, atol = GRAD_TOL[dtype]
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), ref.float(), rtol=rtol, atol=atol * ref.abs().max().item())


def test_each_temperature_default_is_declared_once_in_kernels_defaults() -> None:
    import inspect

    from kdforge.compress.method_options import DISTOptions, DKDOptions, KDOptions
    from kdforge.kernels import DIST_TEMPERATURE, DKD_TEMPERATURE, KD_TEMPERATURE, dkd_loss, kd_loss

    for loss, options, default in (
        (dist_loss, DISTOptions, DIST_TEMPERATURE),
        (kd_loss, KDOptions, KD_TEMPERATURE),
        (dkd_loss, DKDOptions, DKD_TEMPERATURE),
    ):
        assert inspect.signature(loss).parameters["temperature"].default == default == 4.0
        assert options().temperature == default
    for path in ("compress/method_options.py", "kernels/kd.py", "kernels/dkd.py", "kernels/dist_kd.py"):
        source = (Path(__file__).resolve().parents[2] / path).read_text()
        assert "temperature: float = 4" not in source and "temperature: PositiveFloat = 4" not in source, path
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    assert dist_loss(s, t, backend="torch") == dist_loss(s, t, temperature=4.0, backend="torch")
