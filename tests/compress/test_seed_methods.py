"""The seed methods' loss terms against independent float64 formulas of the papers (value and gradient),
and which parameters each method trains (teacher head only under acclimation; SATE's intermediate
teacher, never the strong teacher)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kdforge.compress.config import MethodConfig
from kdforge.compress.errors import UserError
from kdforge.compress.methods import TEACHER_STRATEGIES, MethodContext, NetworkSpec, build_method
from kdforge.compress.methods.dist_kd_plus import feature_dist
from kdforge.compress.models import build
from kdforge.kernels import dkd_loss

B, C = 7, 10


def _logits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    student = (torch.randn(B, C, generator=g) * 3).requires_grad_()
    teacher = torch.randn(B, C, generator=g) * 4
    labels = torch.randint(0, C, (B,), generator=g)
    return student, teacher, labels


# ------------------------------------------------------------------------ float64 paper formulas
def z_score64(z: torch.Tensor) -> torch.Tensor:
    mean = z.mean(1, keepdim=True)
    std = ((z - mean) ** 2).sum(1, keepdim=True).div(z.shape[1] - 1).sqrt()
    return (z - mean) / (std + 1e-7)


def kl64(p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(p || q) given p and log q."""
    return (p * (p.log() - log_q)).sum(1).mean()


def kd64(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    return T * T * kl64(F.softmax(t / T, 1), F.log_softmax(s / T, 1))


def pearson_rows64(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist64(s: torch.Tensor, t: torch.Tensor, beta: float, gamma: float, T: float) -> torch.Tensor:
    ys, yt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    inter = 1 - pearson_rows64(ys, yt).mean()
    intra = 1 - pearson_rows64(ys.T, yt.T).mean()
    return T * T * (beta * inter + gamma * intra)


def dkd64(s, t, y, alpha, beta, T) -> torch.Tensor:
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)
    mask = F.one_hot(y, s.shape[1]).bool()
    bs = torch.stack([ps[mask], 1 - ps[mask]], 1)
    bt = torch.stack([pt[mask], 1 - pt[mask]], 1)
    tckd = kl64(bt, bs.log())
    qs = F.softmax((s / T).masked_fill(mask, -torch.inf), 1)
    qt = F.softmax((t / T).masked_fill(mask, -torch.inf), 1)
    keep = ~mask
    nckd = (qt[keep] * (qt[keep].log() - qs[keep].log())).view(s.shape[0], -1).sum(1).mean()
    return T * T * (alpha * tckd + beta * nckd)


def _check(term: torch.Tensor, student: torch.Tensor, reference: torch.Tensor, leaf: torch.Tensor) -> None:
    """Value and gradient of float32 `term` (w.r.t. `student`) vs the float64 `reference` (w.r.t. `leaf`)."""
    torch.testing.assert_close(term.double(), reference, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(term, student)
    (grad64,) = torch.autograd.grad(reference, leaf, retain_graph=True)
    torch.testing.assert_close(grad.double(), grad64, rtol=1e-4, atol=1e-6)


def _method(name: str, options: dict | None = None, **kw):
    torch.manual_seed(0)
    student, teacher = build("resnet8", C), build("resnet14", C)
    context = MethodContext(C, NetworkSpec("resnet8"), NetworkSpec("resnet14"))
    return build_method(MethodConfig(name, options or {}), student, teacher, context, **kw)


# ------------------------------------------------------------------------------------- the losses
@pytest.mark.parametrize("standardize", [False, True])
def test_dist_is_ce_plus_weighted_pearson_relations(standardize: bool) -> None:
    method = _method("dist", {"beta": 0.7, "gamma": 1.3, "temperature": 3.0, "standardize": standardize})
    s, t, y = _logits()
    terms = method.logit_terms(s, t, y)
    leaf = s.detach().double().requires_grad_()
    s64, t64 = (z_score64(leaf), z_score64(t.double())) if standardize else (leaf, t.double())
    _check(terms["dist"], s, 2.0 * dist64(s64, t64, 0.7, 1.3, 3.0), leaf)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(s, y))


@pytest.mark.parametrize("standardize", [False, True])
def test_dkd_terms_and_linear_warmup(standardize: bool) -> None:
    method = _method("dkd", {"ramp_epochs": 4, "standardize": standardize})
    s, t, y = _logits(1)
    leaf = s.detach().double().requires_grad_()
    s64, t64 = (z_score64(leaf), z_score64(t.double())) if standardize else (leaf, t.double())
    full = dkd64(s64, t64, y, 1.0, 8.0, 4.0)
    method.on_epoch_start(0, 10)
    _check(method.logit_terms(s, t, y)["dkd"], s, 0.25 * full, leaf)
    method.on_epoch_start(3, 10)
    _check(method.logit_terms(s, t, y)["dkd"], s, full, leaf)
    method.on_epoch_start(9, 10)
    torch.testing.assert_close(
        method.logit_terms(s, t, y)["dkd"].double(), full.detach(), rtol=1e-5, atol=1e-6
    )


def test_kd_with_logit_standardization_uses_the_base_temperature() -> None:
    method = _method("kd", {"standardize": True, "temperature": 2.0, "ce_weight": 1.0, "kd_weight": 9.0})
    s, t, y = _logits(2)
    leaf = s.detach().double().requires_grad_()
    _check(
        method.logit_terms(s, t, y)["kd"], s, 9.0 * kd64(z_score64(leaf), z_score64(t.double()), 2.0), leaf
    )


def test_generous_teacher_is_nckd_at_k_times_each_samples_std() -> None:
    method = _method("generous", {"k": 1.5, "nckd_weight": 2.0}, registry=TEACHER_STRATEGIES)
    s, t, y = _logits(3)
    leaf = s.detach().double().requires_grad_()
    # the paper's form: temperature = k * std(z) per sample, no z-scoring; only NCKD (alpha = 0)
    std = lambda z: z.std(1, keepdim=True)  # noqa: E731
    k = 1.5
    ref = 2.0 * dkd64(leaf / std(leaf), t.double() / std(t.double()), y, 0.0, 1.0, k)  # includes k^2
    _check(method.logit_terms(s, t, y)["nckd"], s, ref, leaf)


def _feature_reference(fs: torch.Tensor, ft: torch.Tensor, T: float) -> torch.Tensor:
    """Per-position channel softmax rows and per-channel spatial softmax rows, each 1 - mean pearson."""
    n, c, h, w = ft.shape
    chan_s = F.softmax(fs.permute(0, 2, 3, 1).reshape(-1, c) / T, 1)
    chan_t = F.softmax(ft.permute(0, 2, 3, 1).reshape(-1, c) / T, 1)
    spat_s = F.softmax(fs.reshape(n * c, h * w) / T, 1)
    spat_t = F.softmax(ft.reshape(n * c, h * w) / T, 1)
    channel = 1 - pearson_rows64(chan_s, chan_t).mean()
    spatial = 1 - pearson_rows64(spat_s, spat_t).mean()
    return T * T * (0.5 * channel + 2.0 * spatial)


def test_feature_dist_is_the_channel_and_spatial_relations() -> None:
    g = torch.Generator().manual_seed(4)
    fs = torch.randn(3, 5, 4, 4, generator=g).requires_grad_()
    ft = torch.randn(3, 5, 4, 4, generator=g)
    leaf = fs.detach().double().requires_grad_()
    _check(feature_dist(fs, ft, 2.0, 0.5, 2.0), fs, _feature_reference(leaf, ft.double(), 2.0), leaf)


def test_feature_dist_compares_different_strides_at_the_coarser_grid() -> None:
    fs, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)
    pooled = F.adaptive_avg_pool2d(fs, 4)
    torch.testing.assert_close(feature_dist(fs, ft, 1.0, 1.0, 1.0), feature_dist(pooled, ft, 1.0, 1.0, 1.0))


def _torchdistill_reference(fs: torch.Tensor, ft: torch.Tensor, channel_w: float, spatial_w: float):
    """torchdistill's DISTPlusLoss feature terms (raw maps), each read as 1 - mean correlation."""
    cs, ct = fs - fs.mean(1, keepdim=True), ft - ft.mean(1, keepdim=True)  # centred over channels
    r = (cs * ct).sum(1) / (((cs**2).sum(1) * (ct**2).sum(1)).sqrt() + 1e-8)  # (N, H, W)
    agg_s, agg_t = fs.sum(1).flatten(1), ft.sum(1).flatten(1)  # (N, H*W): channel-summed maps
    spatial = 1 - pearson_rows64(agg_s.T, agg_t.T).mean()  # each position across the batch
    return channel_w * (1 - r.mean()) + spatial_w * spatial


def test_feature_dist_torchdistill_reading_is_raw_channel_and_batch_spatial_correlation() -> None:
    g = torch.Generator().manual_seed(5)
    fs = torch.randn(4, 6, 3, 5, generator=g).requires_grad_()
    ft = torch.randn(4, 6, 3, 5, generator=g) * 3 + 1
    leaf = fs.detach().double().requires_grad_()
    got = feature_dist(fs, ft, 1.0, 0.7, 1.6, reading="torchdistill")
    _check(got, fs, _torchdistill_reference(leaf, ft.double(), 0.7, 1.6), leaf)
    # raw features: no softmax, so a positive scale of either map changes nothing (ours is not scale-free)
    scaled = feature_dist(fs * 5, ft * 0.2, 1.0, 0.7, 1.6, reading="torchdistill")
    torch.testing.assert_close(scaled, got, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(feature_dist(fs * 5, ft, 1.0, 0.7, 1.6), feature_dist(fs, ft, 1.0, 0.7, 1.6))
    # the spatial relation runs across the batch: a lone sample has none, unlike ours
    torch.testing.assert_close(
        feature_dist(fs[:1], ft[:1], 1.0, 0.0, 1.0, reading="torchdistill"), torch.tensor(0.0)
    )


def test_dist_plus_feature_reading_option_reaches_the_feature_term() -> None:
    method = _method("dist_plus", {"feature_reading": "torchdistill", "acclimation": False})
    method.train()
    images, labels = torch.randn(6, 3, 16, 16), torch.randint(0, C, (6,))
    _, terms = method.forward_train(images, labels)
    from kdforge.compress.models.features import extract_features

    with torch.no_grad():  # train-mode student BN: the same batch gives the same features
        ft = extract_features(method.teacher, images, ["layer3"])[1]["layer3"]
        fs = method.connectors[0](extract_features(method.student, images, ["layer3"])[1]["layer3"])
    reference = _torchdistill_reference(fs.double(), ft.double(), 1.0, 1.0)
    torch.testing.assert_close(terms["feature_dist"].double(), reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="feature_temperature: torchdistill's feature reading uses raw"):
        _method("dist_plus", {"feature_reading": "torchdistill", "feature_temperature": 2.0})
    with pytest.raises(UserError, match="feature_reading: 'paper' is not one of"):
        _method("dist_plus", {"feature_reading": "paper"})


# ---------------------------------------------------------------------- what trains, what does not
def _grads_after_backward(method, images: torch.Tensor, labels: torch.Tensor) -> dict[str, dict[str, bool]]:
    method.train()
    _, terms = method.forward_train(images, labels)
    sum(terms.values()).backward()
    return {
        name: {k: p.grad is not None and bool(p.grad.abs().sum() > 0) for k, p in child.named_parameters()}
        for name, child in method.named_children()
    }


def test_acclimation_trains_only_the_teachers_head_at_its_own_lr() -> None:
    method = _method("dist_plus", {"acclimation": True, "acclimation_lr_scale": 0.1})
    teacher = method.teacher
    bn = [m.running_mean.clone() for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    images, labels = torch.randn(6, 3, 16, 16), torch.randint(0, C, (6,))
    grads = _grads_after_backward(method, images, labels)
    assert not teacher.training, "the teacher's body keeps eval-mode BN"
    assert {k for k, v in grads["teacher"].items() if v} == {"fc.weight", "fc.bias"}
    assert all(grads["student"].values())
    assert all(grads["connectors"].values()), "the 1x1 connector (16 -> 64 channels) trains with the student"
    after = [m.running_mean for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(bn, after, strict=True))
    groups = method.param_groups()
    assert groups[1]["lr_scale"] == 0.1 and {id(p) for p in groups[1]["params"]} == {
        id(teacher.fc.weight),
        id(teacher.fc.bias),
    }


def test_acclimation_loss_is_ce_plus_dist_toward_the_detached_student() -> None:
    method = _method(
        "dist_plus", {"acclimation": True, "acclimation_weight": 0.5, "acclimation_ce_weight": 2.0}
    )
    method.train()
    images, labels = torch.randn(6, 3, 16, 16), torch.randint(0, C, (6,))
    logits, terms = method.forward_train(images, labels)
    with torch.no_grad():
        teacher_logits = method.teacher(images)
    s64, t64 = logits.detach().double(), teacher_logits.double()
    torch.testing.assert_close(
        terms["teacher_ce"].double(), 2.0 * F.cross_entropy(t64, labels), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        terms["teacher_acclimation"].double(), 0.5 * dist64(t64, s64, 1.0, 1.0, 4.0), rtol=1e-5, atol=1e-6
    )
    student_grads = torch.autograd.grad(terms["teacher_acclimation"], list(method.teacher.fc.parameters()))
    assert all(g.abs().sum() > 0 for g in student_grads)


def test_without_acclimation_the_teacher_is_frozen() -> None:
    method = _method("dist_plus", {"acclimation": False})
    grads = _grads_after_backward(method, torch.randn(4, 3, 16, 16), torch.randint(0, C, (4,)))
    assert not any(p.requires_grad for p in method.teacher.parameters())
    assert "teacher_ce" not in method.forward_train(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))[1]
    assert not any(grads["teacher"].values()) and len(method.param_groups()) == 1


@pytest.mark.parametrize("student_loss", ["kd", "dist", "dkd"])
def test_sate_trains_student_and_intermediate_never_the_strong_teacher(student_loss: str) -> None:
    method = _method("sate", {"student_loss": student_loss, "intermediate_arch": "resnet8"})
    grads = _grads_after_backward(method, torch.randn(6, 3, 16, 16), torch.randint(0, C, (6,)))
    assert not any(grads["teacher"].values()) and not any(
        p.requires_grad for p in method.teacher.parameters()
    )
    assert all(grads["student"].values()) and all(grads["intermediate"].values())


def test_sate_terms_follow_our_reading() -> None:
    method = _method("sate", {"student_loss": "kd", "intermediate_arch": "resnet8", "aware_weight": 0.5})
    method.train()
    torch.manual_seed(1)
    images, labels = torch.randn(6, 3, 16, 16), torch.randint(0, C, (6,))
    state = torch.random.get_rng_state()
    logits, terms = method.forward_train(images, labels)
    # replay the forward passes to read each network's logits (train mode; BN uses batch statistics)
    torch.random.set_rng_state(state)
    with torch.no_grad():
        strong = method.teacher(images).double()
        middle = method.intermediate(images).double()
    s = logits.detach().double()
    torch.testing.assert_close(
        terms["intermediate_kd"].double(), kd64(middle, strong, 4.0), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        terms["intermediate_aware"].double(), 0.5 * kd64(middle, s, 4.0), rtol=1e-5, atol=1e-6
    )
    # float32 KL of two close distributions cancels: relative error ~1e-5 at O(1) logits
    torch.testing.assert_close(terms["student_kd"].double(), 0.9 * kd64(s, middle, 4.0), rtol=1e-4, atol=1e-6)
    # the student's gradient comes only from the student's terms (the intermediate is detached for it)
    student_params = list(method.student.parameters())
    only = torch.autograd.grad(terms["student_kd"] + terms["student_ce"], student_params, retain_graph=True)
    everything = torch.autograd.grad(sum(terms.values()), student_params)
    for a, b in zip(only, everything, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("sate_warmup", "dkd_warmup", "epoch", "expected"),
    [
        (20, 20, 0, 1 / 20),  # the default pairing: one ramp, 1/20 of full at epoch 1 (not 1/400)
        (20, 20, 9, 10 / 20),
        (20, 20, 19, 1.0),
        (4, 20, 0, 1 / 20),  # the longer of the two ramps, alone
        (4, 20, 5, 6 / 20),
        (20, 4, 5, 6 / 20),
        (0, 20, 0, 1 / 20),
        (20, 0, 0, 1 / 20),
        (0, 0, 0, 1.0),
    ],
)
def test_sate_with_dkd_ramps_the_student_terms_once(
    sate_warmup: int, dkd_warmup: int, epoch: int, expected: float
) -> None:
    method = _method(
        "sate",
        {
            "student_loss": "dkd",
            "student_loss_options": {"ramp_epochs": dkd_warmup},
            "student_warmup_epochs": sate_warmup,
            "intermediate_arch": "resnet8",
        },
    )
    method.on_epoch_start(epoch, 240)
    assert method._student_loss[0].ramp * method.ramp == pytest.approx(expected, rel=1e-12, abs=0)
    method.train()
    images, labels = torch.randn(6, 3, 16, 16), torch.randint(0, C, (6,))
    logits, terms = method.forward_train(images, labels)
    with torch.no_grad():  # train-mode BN: the replay gives the guide the student saw
        middle = method.intermediate(images)
    full = dkd_loss(logits.detach(), middle, labels, 1.0, 8.0, 4.0)  # the term at full weight
    torch.testing.assert_close(terms["student_dkd"], expected * full, rtol=1e-6, atol=0)
    torch.testing.assert_close(terms["student_ce"], F.cross_entropy(logits, labels)), "CE never ramps"


@pytest.mark.parametrize("student_loss", ["kd", "dist"])
def test_sate_ramps_losses_without_a_schedule_of_their_own(student_loss: str) -> None:
    method = _method("sate", {"student_loss": student_loss, "intermediate_arch": "resnet8"})
    method.on_epoch_start(0, 240)
    assert method.ramp == 1 / 20
    method.on_epoch_start(19, 240)
    assert method.ramp == 1.0


def test_sate_ema_is_a_moving_average_and_guides_the_student() -> None:
    method = _method("sate", {"intermediate_arch": "resnet8", "ema": True, "ema_decay": 0.75})
    before = [p.detach().clone() for p in method.ema_teacher.parameters()]
    with torch.no_grad():
        for p in method.intermediate.parameters():
            p.add_(1.0)
    method.after_step()
    for old, new, ema in zip(
        before, method.intermediate.parameters(), method.ema_teacher.parameters(), strict=True
    ):
        torch.testing.assert_close(ema, 0.75 * old + 0.25 * new)
    method.train()
    assert not method.ema_teacher.training and method.intermediate.training
    assert set(method.companions()) == {"intermediate_teacher", "intermediate_teacher_ema"}


def test_sate_can_start_from_the_teacher() -> None:
    method = _method("sate", {"init_from_teacher": True})
    for a, b in zip(
        method.intermediate.state_dict().values(), method.teacher.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="init_from_teacher"):
        _method("sate", {"init_from_teacher": True, "intermediate_arch": "resnet8"})


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("dist_plus", {"student_stages": ["layer9"]}, r"no module 'layer9' in CifarResNet"),
        ("dist_plus", {"student_stages": ["layer2", "layer3"]}, r"2 student_stages but 1 teacher_stages"),
        (
            "dist_plus",
            {"student_stages": ["fc"], "teacher_stages": ["fc"]},
            r"not an \(N, C, H, W\) feature map",
        ),
        ("sate", {"student_loss": "crd"}, r"method.options.student_loss: 'crd' is not one of"),
        (
            "sate",
            {"student_loss_options": {"tau": 2}},
            r"unknown key 'method.options.student_loss_options.tau'",
        ),
        ("sate", {"ema_decay": 1.5}, r"ema_decay: must be in \[0, 1\)"),
        ("dkd", {"warmup_epochs": -1}, r"warmup_epochs: must be >= 0"),
        ("generous", {}, r"'generous' trains a teacher: use `kdforge teacher`"),
    ],
)
def test_bad_method_options_are_one_line_user_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        _method(name, options)


@pytest.mark.parametrize(
    ("name", "options", "frozen", "eval_only", "resumed"),
    [
        ("kd", {}, ["teacher"], [], set()),
        ("dist_plus", {"acclimation": False}, ["teacher"], [], {"head"}),  # a child of its own too
        ("dist_plus", {}, [], ["teacher"], {"teacher", "head"}),  # connectors: Identity, no state
        (
            "sate",
            {"intermediate_arch": "resnet8", "ema": True},
            ["teacher"],
            ["ema_teacher"],
            {"intermediate", "ema_teacher"},
        ),
    ],
)
def test_frozen_networks_stay_out_of_the_resume_state(name, options, frozen, eval_only, resumed) -> None:
    """`freeze_network` networks are never saved for resume; `keep_in_eval` ones are, and stay in eval."""
    from kdforge.compress.train.trainer import resume_state

    method = _method(name, options).train()
    assert method.frozen == tuple(getattr(method, n) for n in frozen)
    assert method.eval_only == tuple(getattr(method, n) for n in eval_only)
    assert not any(m.training for m in (*method.frozen, *method.eval_only)) and method.student.training
    assert {key.split(".", 1)[0] for key in resume_state(method)} == resumed
