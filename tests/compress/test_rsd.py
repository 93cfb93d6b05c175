"""The `rsd` method: its loss terms against the paper's formula (float64 references), the gradient through
the un-detached teacher pass, the external-teacher mix, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kdforge.compress.config import MethodConfig
from kdforge.compress.errors import UserError
from kdforge.compress.methods import build_method
from kdforge.compress.models import build
from kdforge.compress.reparam import branch_dropping
from torch import nn


def kd64(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    return T * T * (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1).mean()


def _method(options: dict, teacher: nn.Module | None = None):
    torch.manual_seed(0)
    method = build_method(MethodConfig("rsd", options), build("resnet8", 10), teacher).double()
    method.train()
    for module in method.student.modules():  # fixed BN: the passes are deterministic functions
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return method


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64), torch.randint(
        0, 10, (6,), generator=g
    )


def test_student_pass_drops_branches_and_distills_from_the_undetached_teacher_pass() -> None:
    method = _method({"mix": False, "drop_rate": 0.5, "alpha": 0.7, "beta": 1.3})
    x, y = _batch()
    torch.manual_seed(5)
    logits, terms = method.forward_train(x, y)
    assert set(terms) == {"ce_student", "ce_teacher", "kl_student"}
    net = method.student
    torch.manual_seed(5)  # replay the same branch-dropping draws
    with branch_dropping(net, 0.5):
        student = net(x)
    teacher = net(x)
    torch.testing.assert_close(logits, student)
    assert not torch.allclose(student, teacher), "dropping changes the student pass"
    torch.testing.assert_close(terms["ce_student"], 0.7 * F.cross_entropy(student, y))
    torch.testing.assert_close(terms["ce_teacher"], 0.7 * F.cross_entropy(teacher, y))
    torch.testing.assert_close(terms["kl_student"], 1.3 * kd64(student, teacher, 3.0))
    params = [p for p in net.parameters() if p.requires_grad]
    got = torch.autograd.grad(terms["kl_student"], params, allow_unused=True)
    full = torch.autograd.grad(
        1.3 * kd64(student, teacher, 3.0), params, allow_unused=True, retain_graph=True
    )
    detached = torch.autograd.grad(1.3 * kd64(student, teacher.detach(), 3.0), params, allow_unused=True)
    same = lambda a, b: all(  # noqa: E731
        (u is None and v is None) or (u is not None and v is not None and torch.allclose(u, v))
        for u, v in zip(a, b)
    )
    assert same(got, full) and not same(got, detached), "the teacher pass is not detached"


def test_feature_mixture_terms_follow_the_paper() -> None:
    method = _method({"drop_rate": 0.0, "stages": ["layer2"]})
    x, y = _batch()
    torch.manual_seed(7)
    logits, terms = method.forward_train(x, y)
    torch.manual_seed(7)  # replay: stage index, lambda, permutation
    torch.randint(1, ())
    lam = torch.distributions.Beta(2.0, 2.0).sample().double()
    perm = torch.randperm(6)
    net = method.student
    plain = net(x)

    def mixed(module, args, out):
        return lam * out + (1 - lam) * out[perm]  # drop rate 0: the student features equal these

    handle = net.get_submodule("layer2").register_forward_hook(mixed)
    tt = net(x)
    handle.remove()
    mix_ce = lam * F.cross_entropy(tt, y) + (1 - lam) * F.cross_entropy(tt, y[perm])
    torch.testing.assert_close(logits, plain)
    torch.testing.assert_close(terms["mix_ce_tt"], mix_ce)
    torch.testing.assert_close(terms["mix_ce_ts"], mix_ce)
    torch.testing.assert_close(terms["kl_mix"], kd64(tt, tt, 3.0))
    torch.testing.assert_close(terms["ce_teacher"], F.cross_entropy(plain, y))


def test_external_teacher_weights_rsd_0_1_and_kd_0_9() -> None:
    torch.manual_seed(3)
    external = build("resnet14", 10).double()
    method = _method({"mix": False, "drop_rate": 0.0, "use_teacher": True}, external)
    x, y = _batch()
    _, terms = method.forward_train(x, y)
    with torch.no_grad():
        ext = external.eval()(x)
    own = method.student(x)
    torch.testing.assert_close(terms["ce_teacher"], 0.1 * F.cross_entropy(own, y))
    torch.testing.assert_close(terms["kd_external"], 0.9 * kd64(own, ext, 4.0))
    assert not any(p.requires_grad for p in external.parameters())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stages": ["layer7"]}, "no module 'layer7'"),
        ({"drop_rate": 1.0}, r"drop_rate: must be in \[0, 1\)"),
        ({"extra_branches": ["2x2"]}, "unknown extra branch"),
        ({"use_teacher": True}, "method 'rsd' needs a teacher"),
    ],
)
def test_bad_rsd_options_are_one_line_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_method(MethodConfig("rsd", options), build("resnet8", 10), None)
