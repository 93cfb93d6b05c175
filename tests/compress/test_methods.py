"""The method contract for `ce` and `kd`: loss terms, frozen teacher, trainable parameters, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kdforge.compress.config import MethodConfig
from kdforge.compress.errors import UserError
from kdforge.compress.methods import build_method
from kdforge.compress.models import build


@pytest.fixture
def pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build("resnet8", 10), build("resnet14", 10)


def test_kd_terms_are_the_weighted_hinton_objective(pair) -> None:
    student, teacher = pair
    method = build_method(
        MethodConfig("kd", {"temperature": 2.0, "ce_weight": 0.3, "kd_weight": 0.7}), student, teacher
    )
    method.train()
    images, labels = torch.randn(6, 3, 16, 16), torch.randint(0, 10, (6,))
    logits, losses = method.forward_train(images, labels)
    with torch.no_grad():
        t = teacher(images)
    T = 2.0
    kl = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(t / T, 1), reduction="batchmean") * T * T
    assert set(losses) == {"ce", "kd"}
    torch.testing.assert_close(losses["ce"], 0.3 * F.cross_entropy(logits, labels))
    torch.testing.assert_close(losses["kd"], 0.7 * kl, rtol=1e-5, atol=1e-6)


def test_teacher_is_frozen_and_stays_in_eval_mode(pair) -> None:
    student, teacher = pair
    method = build_method(MethodConfig("kd"), student, teacher)
    method.train()
    assert student.training and not teacher.training
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable == {id(p) for p in student.parameters()}
    assert not any(p.requires_grad for p in teacher.parameters())
    running = [m.running_mean.clone() for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    _, losses = method.forward_train(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    sum(losses.values()).backward()
    after = [m.running_mean for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after)), "teacher BN statistics must not move"
    assert all(p.grad is None for p in teacher.parameters())


def test_forward_is_the_students_logits(pair) -> None:
    student, teacher = pair
    method = build_method(MethodConfig("kd"), student, teacher).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(method(x), student.eval()(x))


def test_ce_ignores_a_teacher_and_trains_only_its_network(pair) -> None:
    student, teacher = pair
    method = build_method(MethodConfig("ce"), student, teacher)
    assert method.teacher is None
    logits, losses = method.forward_train(torch.randn(3, 3, 16, 16), torch.tensor([0, 1, 2]))
    assert list(losses) == ["ce"] and logits.shape == (3, 10)


@pytest.mark.parametrize(
    ("config", "teacher", "message"),
    [
        (MethodConfig("kdd"), True, r"unknown method 'kdd'; did you mean 'kd'\?"),
        (
            MethodConfig("kd", {"temprature": 2}),
            True,
            r"unknown key 'method.options.temprature'; did you mean",
        ),
        (MethodConfig("kd", {"temperature": "hot"}), True, r"method.options.temperature: expected a number"),
        (MethodConfig("kd", {"temperature": 0}), True, r"temperature: must be > 0"),
        (MethodConfig("kd", {"kd_weight": -1}), True, r"kd_weight: must be >= 0"),
        (MethodConfig("kd"), False, r"needs a teacher"),
    ],
)
def test_bad_method_settings_are_user_errors(pair, config, teacher, message) -> None:
    student, t = pair
    with pytest.raises(UserError, match=message):
        build_method(config, student, t if teacher else None)
