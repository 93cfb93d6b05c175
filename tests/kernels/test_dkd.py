"""dkd_loss (Triton kernel and torch path) against an independent float64 implementation of the paper.

Without a GPU the Triton tests run the kernel in the interpreter (tests/conftest.py sets TRITON_INTERPRET=1);
with one they run compiled on CUDA, and the `gpu` tests add a full-size shape.
"""

from __future__ import annotations

import math

import kdforge.kernels.dkd_triton as dkd_triton
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from kdforge.kernels.dkd import dkd_loss
from kdforge.kernels.triton_common import LaunchConfig

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: compiled Triton kernels"
)

# Inputs are cast to the dtype first and the reference is computed from the cast values, so only the
# kernel's fp32 accumulation and the rounding of the stored gradients remain. The loss is fp32 math for
# every dtype; gradients are stored in the input dtype (fp16: 11-bit, bf16: 8-bit significand).
# (loss rel, loss abs, grad rel, grad abs as a fraction of the largest reference gradient)
TOLERANCES = {
    torch.float32: (2e-5, 1e-5, 1e-4, 1e-5),
    torch.float16: (2e-5, 1e-5, 2e-3, 1e-3),
    torch.bfloat16: (2e-5, 1e-5, 1.6e-2, 8e-3),
}


def dkd_float64(
    s: torch.Tensor,
    t: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> torch.Tensor:
    """The paper's DKD in float64, written from the definitions (differentiable with autograd).

    b = [p_gt, sum_{j != gt} p_j] (the sum taken in log space), p_hat = softmax over the C - 1 other classes
    (picked out by boolean indexing), TCKD = KL(b_t || b_s), NCKD = KL(p_hat_t || p_hat_s).
    """
    s, t, T = s.double(), t.double(), temperature
    B, C = s.shape
    if C == 1:
        return (s.sum() + t.sum()) * 0.0
    if standardize:
        s = (s - s.mean(1, keepdim=True)) / (s.std(1, keepdim=True) + 1e-7)
        t = (t - t.mean(1, keepdim=True)) / (t.std(1, keepdim=True) + 1e-7)
    rows, target = torch.arange(B, device=s.device), target.long()
    others = torch.ones(B, C, dtype=torch.bool, device=s.device)
    others[rows, target] = False

    def parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = torch.log_softmax(x / T, dim=1)
        log_p_others = log_p[others].view(B, C - 1)
        log_b = torch.stack([log_p[rows, target], torch.logsumexp(log_p_others, 1)], 1)
        return log_b, torch.log_softmax((x / T)[others].view(B, C - 1), dim=1)

    log_b_s, log_hat_s = parts(s)
    log_b_t, log_hat_t = parts(t)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(1)
    nckd = (log_hat_t.exp() * (log_hat_t - log_hat_s)).sum(1)
    return T * T * (alpha * tckd + beta * nckd).mean()


def make_case(
    b: int, c: int, seed: int, dtype: torch.dtype = torch.float32, scale: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(b, c, generator=g) * scale).to(dtype)
    t = (torch.randn(b, c, generator=g) * scale).to(dtype)
    target = torch.randint(0, c, (b,), generator=g)
    return s.to(DEVICE), t.to(DEVICE), target.to(DEVICE)


def reference_with_grads(
    s: torch.Tensor, t: torch.Tensor, target: torch.Tensor, **kwargs
) -> tuple[float, torch.Tensor, torch.Tensor]:
    s64 = s.detach().double().requires_grad_()
    t64 = t.detach().double().requires_grad_()
    loss = dkd_float64(s64, t64, target, **kwargs)
    loss.backward()
    return loss.item(), s64.grad, t64.grad


def run_with_grads(
    s: torch.Tensor, t: torch.Tensor, target: torch.Tensor, backend: str = "triton", **kwargs
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = s.detach().requires_grad_()  # detach keeps the strides of non-contiguous views
    t = t.detach().requires_grad_()
    loss = dkd_loss(s, t, target, backend=backend, **kwargs)
    loss.backward()
    return loss, s.grad, t.grad


def natural_grad_scale(
    s: torch.Tensor,
    t: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> float:
    """The size of the terms a gradient entry is summed from: (alpha + beta) T / B for dL/dz, over the
    row's std with standardization, whose backward cancels them (for C == 2 the exact gradient is ~0)."""
    scale = (alpha + beta) * temperature / s.shape[0]
    if standardize and s.shape[1] > 1:
        stds = torch.cat([s.double().std(1), t.double().std(1)])
        scale /= stds.clamp_min(1e-6).min().item()
    return scale


def assert_grad_close(
    got: torch.Tensor, want: torch.Tensor, rel: float, abs_frac: float, floor: float = 0.0
) -> None:
    """Within rel of the reference, or abs_frac of its largest entry (or of `floor`, if larger)."""
    atol = abs_frac * max(want.abs().max().item(), floor, 1e-30)
    torch.testing.assert_close(got.double(), want.to(got.device), rtol=rel, atol=atol)


def check_against_reference(s, t, target, dtype=torch.float32, backend="triton", **kwargs) -> None:
    loss_rel, loss_abs, grad_rel, grad_abs = TOLERANCES[dtype]
    want, want_gs, want_gt = reference_with_grads(s, t, target, **kwargs)
    loss, gs, gt = run_with_grads(s, t, target, backend=backend, **kwargs)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(want, rel=loss_rel, abs=loss_abs)
    assert gs.dtype == dtype and gt.dtype == dtype
    floor = natural_grad_scale(s, t, **kwargs)
    assert_grad_close(gs, want_gs, grad_rel, grad_abs, floor)
    assert_grad_close(gt, want_gt, grad_rel, grad_abs, floor)


# (B, C, T, standardize): every B and C at least once, both temperatures and standardize settings on
# each tile layout; 5003 and 40000 run the chunked online-softmax path (C > 4096).
SHAPES = [
    (1, 1, 4.0, False),
    (3, 1, 1.0, True),
    (1, 2, 1.0, False),
    (64, 2, 4.0, True),
    (3, 10, 4.0, False),
    (64, 10, 1.0, True),
    (257, 100, 4.0, False),
    (257, 100, 1.0, True),
    (3, 1000, 1.0, False),
    (64, 1000, 4.0, True),
    (1, 5003, 1.0, True),
    (3, 5003, 4.0, False),
    (2, 40000, 4.0, False),
    (2, 40000, 1.0, True),
]


@pytest.mark.parametrize(("b", "c", "T", "standardize"), SHAPES)
def test_triton_matches_float64_reference(b: int, c: int, T: float, standardize: bool) -> None:
    s, t, target = make_case(b, c, seed=b * 7919 + c)
    check_against_reference(s, t, target, temperature=T, standardize=standardize, alpha=1.0, beta=8.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("b", "c", "standardize"), [(64, 100, False), (3, 5003, True)])
def test_triton_low_precision_inputs(dtype: torch.dtype, b: int, c: int, standardize: bool) -> None:
    s, t, target = make_case(b, c, seed=c, dtype=dtype)
    check_against_reference(s, t, target, dtype, temperature=4.0, standardize=standardize)


@pytest.mark.parametrize(
    "config",
    [None, LaunchConfig(16, 1, 1), LaunchConfig(16, 1, 4)],
    ids=["single-tile", "chunked-16", "chunked-16-vec4"],
)
@pytest.mark.parametrize("c", [1, 2, 17, 100])
def test_triton_target_at_first_and_last_class(config: LaunchConfig | None, c: int) -> None:
    """Every walk (the chunked one forced at small C with 16-wide chunks, so the target can sit alone
    in the last partial chunk or in a row's unaligned head or tail) with the target at class 0 and at
    class C - 1, other weights too."""
    s, t, _ = make_case(4, c, seed=c)
    target = torch.tensor([0, c - 1, 0, c - 1], device=DEVICE)
    for standardize in (False, True):
        kwargs = {"alpha": 0.5, "beta": 2.0, "temperature": 2.0, "standardize": standardize}
        want, want_gs, want_gt = reference_with_grads(s, t, target, **kwargs)
        s_k, t_k = s.clone().requires_grad_(), t.clone().requires_grad_()
        loss = dkd_triton.dkd_loss_triton(s_k, t_k, target, 0.5, 2.0, 2.0, standardize, config)
        loss.backward()
        assert loss.item() == pytest.approx(want, rel=2e-5, abs=1e-5)
        floor = natural_grad_scale(s, t, **kwargs)
        assert_grad_close(s_k.grad, want_gs, 1e-4, 1e-5, floor)
        assert_grad_close(t_k.grad, want_gt, 1e-4, 1e-5, floor)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_triton_integer_target_dtypes(dtype: torch.dtype) -> None:
    s, t, target = make_case(4, 200, seed=21)
    want = dkd_loss(s, t, target, backend="triton")  # int64
    assert dkd_loss(s, t, target.to(dtype), backend="triton").item() == want.item()


@pytest.mark.parametrize("c", [50, 5003])
def test_triton_non_contiguous_inputs(c: int) -> None:
    s, t, target = make_case(5, c, seed=3)
    s_nc, t_nc = s.t().contiguous().t(), t.t().contiguous().t()  # transposed layouts: stride (1, B)
    target_nc = torch.stack([target, target], 1)[:, 1]
    assert not s_nc.is_contiguous() and not t_nc.is_contiguous() and not target_nc.is_contiguous()
    check_against_reference(s_nc, t_nc, target_nc, standardize=True)
    assert dkd_loss(s_nc, t_nc, target_nc, backend="triton").item() == pytest.approx(
        dkd_loss(s, t, target, backend="triton").item(), rel=1e-6
    )


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("c", [2, 30, 5003])
def test_extreme_and_constant_rows_stay_finite(c: int, T: float, standardize: bool) -> None:
    """Logits of +-1e4 (p_gt rounds to exactly 0 or 1) and all-equal rows: finite values and gradients."""
    g = torch.Generator().manual_seed(c)
    sign = lambda: torch.randint(0, 2, (4, c), generator=g).float() * 2 - 1  # noqa: E731
    s, t = sign() * 1e4, sign() * 1e4
    s[2], t[3] = 7.0, -3.0  # a row of equal values in each
    s, t = s.to(DEVICE), t.to(DEVICE)
    target = torch.tensor([0, c - 1, 1, c // 2], device=DEVICE)
    got = run_with_grads(s, t, target, temperature=T, standardize=standardize)
    for tensor in got:
        assert torch.isfinite(tensor).all()
    torch_path = run_with_grads(s, t, target, backend="torch", temperature=T, standardize=standardize)
    for tensor in torch_path:
        assert torch.isfinite(tensor).all()
    want = dkd_float64(s, t, target, temperature=T, standardize=standardize).item()
    assert got[0].item() == pytest.approx(want, rel=1e-5, abs=1e-3)
    assert torch_path[0].item() == pytest.approx(want, rel=1e-5, abs=1e-3)
    if not standardize:  # the float64 formula's torch.std has no gradient at a constant row
        _, want_gs, want_gt = reference_with_grads(s, t, target, temperature=T)
        for tensor, want_grad in ((got[1], want_gs), (got[2], want_gt), (torch_path[1], want_gs)):
            assert_grad_close(tensor, want_grad, 1e-4, 1e-5)


def test_grad_output_other_than_one_scales_gradients() -> None:
    s, t, target = make_case(8, 30, seed=5)
    _, want_gs, want_gt = reference_with_grads(s, t, target)
    s, t = s.clone().requires_grad_(), t.clone().requires_grad_()
    (dkd_loss(s, t, target, backend="triton") * 3.5).backward()
    assert_grad_close(s.grad, 3.5 * want_gs, 1e-4, 1e-5)
    assert_grad_close(t.grad, 3.5 * want_gt, 1e-4, 1e-5)
    s.grad = t.grad = None
    loss = dkd_loss(s, t, target, backend="triton")
    loss.backward(torch.tensor(-2.0, device=DEVICE), retain_graph=True)
    loss.backward(
        torch.tensor(0.5, device=DEVICE)
    )  # a second backward: the saved gradients were not modified in place
    assert_grad_close(s.grad, -1.5 * want_gs, 1e-4, 1e-5)


def test_no_gradient_buffers_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward allocates no (B, C) buffer; the backward allocates only the gradients asked for."""
    calls = []
    original = dkd_triton._backward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((out[0] is not None, out[1] is not None))
        return out

    monkeypatch.setattr(dkd_triton, "_backward", spy)
    s, t, target = make_case(6, 40, seed=9)
    want = dkd_float64(s, t, target)
    s_req = s.clone().requires_grad_()
    with torch.no_grad():
        assert dkd_loss(s_req, t, target, backend="triton").item() == pytest.approx(want.item(), rel=2e-5)
    assert dkd_loss(s, t, target, backend="triton").item() == pytest.approx(want.item(), rel=2e-5)
    assert calls == []
    loss = dkd_loss(s_req, t, target, backend="triton")  # student only: no teacher buffer
    loss.backward()
    assert calls == [(True, False)]


@pytest.mark.parametrize(
    ("b", "c", "T", "standardize"), [(1, 1, 4.0, True), (3, 2, 1.0, False), (8, 50, 4.0, True)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_path_matches_float64_reference(b: int, c: int, T: float, standardize: bool, dtype) -> None:
    s, t, target = make_case(b, c, seed=c + 1, dtype=dtype)
    want, want_gs, want_gt = reference_with_grads(s, t, target, temperature=T, standardize=standardize)
    loss, gs, gt = run_with_grads(s, t, target, backend="torch", temperature=T, standardize=standardize)
    tight = dtype == torch.float64
    assert loss.dtype == (torch.float64 if tight else torch.float32) and loss.dim() == 0
    assert loss.item() == pytest.approx(want, rel=1e-10 if tight else 2e-5, abs=1e-12 if tight else 1e-5)
    assert_grad_close(gs, want_gs, 1e-8 if tight else 1e-4, 1e-10 if tight else 1e-5)
    assert_grad_close(gt, want_gt, 1e-8 if tight else 1e-4, 1e-10 if tight else 1e-5)


def logit_pairs(max_classes: int = 12):
    """(student, teacher, target) with B in [1, 4], C in [1, max_classes] and finite logits in [-50, 50]."""

    @st.composite
    def build(draw):
        b = draw(st.integers(1, 4))
        c = draw(st.integers(1, max_classes))
        values = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
        s = torch.tensor(draw(st.lists(values, min_size=b * c, max_size=b * c)), dtype=torch.float64)
        t = torch.tensor(draw(st.lists(values, min_size=b * c, max_size=b * c)), dtype=torch.float64)
        target = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)))
        return s.view(b, c), t.view(b, c), target

    return build()


@settings(max_examples=30, deadline=None)
@given(case=logit_pairs(), T=st.sampled_from([1.0, 4.0]), standardize=st.booleans())
def test_property_identical_logits_give_zero(case, T: float, standardize: bool) -> None:
    s, _, target = case
    s = s.float()
    loss = dkd_loss(s, s.clone(), target, temperature=T, standardize=standardize, backend="torch")
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


@settings(max_examples=30, deadline=None)
@given(case=logit_pairs(), T=st.sampled_from([0.5, 1.0, 4.0]), standardize=st.booleans())
def test_property_non_negative(case, T: float, standardize: bool) -> None:
    s, t, target = case  # float64 logits: the bound is not lost to fp32 rounding of large lse terms
    assert dkd_loss(s, t, target, temperature=T, standardize=standardize, backend="torch").item() >= -1e-6


@settings(max_examples=30, deadline=None)
@given(case=logit_pairs(), T=st.sampled_from([0.5, 4.0]), standardize=st.booleans())
def test_property_finite_value_and_gradients(case, T: float, standardize: bool) -> None:
    s, t, target = (x.float() if x.is_floating_point() else x for x in case)
    s.requires_grad_()
    t.requires_grad_()
    loss = dkd_loss(s, t, target, temperature=T, standardize=standardize, backend="torch")
    loss.backward()
    assert math.isfinite(loss.item())
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (torch.tensor([0, 3]), "outside"),
        (torch.tensor([-1, 0]), "outside"),
        (torch.tensor([0, 1, 2]), "shape"),
        (torch.tensor([[0], [1]]), "shape"),
        (torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_bad_target_raises_value_error(target: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), target)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"temperature": -1.0}, "temperature"), ({"backend": "nope"}, "backend")]
)
def test_bad_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), **kwargs)


@pytest.mark.parametrize("name", ["alpha", "beta"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "must be a finite number, got nan"),
        (math.inf, "must be a finite number, got inf"),
        (-math.inf, "must be a finite number, got -inf"),
        (-0.5, "must be >= 0, got -0.5"),
        (True, "must be a finite number, got True"),
        ("1", "must be a finite number, got '1'"),
    ],
)
def test_bad_weights_raise_value_error(name: str, value: object, message: str) -> None:
    """Like DIST's beta/gamma: a NaN weight would otherwise make every loss and gradient NaN."""
    with pytest.raises(ValueError, match=f"^{name} {message}$"):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), **{name: value})


def test_zero_weights_are_allowed() -> None:
    """alpha = 0 is the Generous Teacher's NCKD-only loss; both zero give a zero loss."""
    s, t, target = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert dkd_loss(s, t, target, 0.0, 0.0, backend="torch").item() == 0.0
    assert dkd_loss(s, t, target, 0, 2, backend="torch").item() > 0


def test_bad_logits_raise_value_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("standardize", [False, True])
def test_gpu_compiled_kernel_full_size_bf16(standardize: bool) -> None:
    """The compiled kernel at a training-size shape (chunked path: 32000 > 4096 classes) in bf16."""
    s, t, target = make_case(4096, 32000, seed=1, dtype=torch.bfloat16)
    check_against_reference(s, t, target, torch.bfloat16, standardize=standardize)


@pytest.mark.gpu
@needs_gpu
def test_gpu_compiled_kernel_very_wide_rows() -> None:
    """262,144 classes: far wider than any block, streamed in chunks."""
    s, t, target = make_case(8, 262_144, seed=2)
    check_against_reference(s, t, target, standardize=True, temperature=2.0)
