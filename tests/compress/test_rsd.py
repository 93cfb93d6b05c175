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


# ------------------------------------------------------------------ branch dropping: the two rescales
def _masks(n: int) -> torch.Tensor:
    """Every keep mask of n branches, (2^n, n) float64 0/1."""
    bits = torch.arange(2**n).unsqueeze(1).bitwise_and(2 ** torch.arange(n)).ne(0)
    return bits.double()


def _weights64(mask: torch.Tensor, rescale: str, p: float) -> torch.Tensor:
    """The float64 reference: ours n / kept on kept branches; DropPath 1 / (1 - p) on kept branches."""
    n = mask.shape[1]
    if rescale == "kept":
        kept = mask.sum(1, keepdim=True)
        return torch.where(kept > 0, mask * n / kept.clamp(min=1), torch.zeros_like(mask))
    return mask / (1 - p)


def _probability(mask: torch.Tensor, p: float) -> torch.Tensor:
    return ((1 - p) ** mask.sum(1)) * (p ** (mask.shape[1] - mask.sum(1)))


@pytest.mark.parametrize("n", [2, 5])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_both_rescales_keep_each_branchs_expected_weight_at_one(n: int, p: float) -> None:
    from kdforge.compress.reparam.blocks import branch_weights

    masks = _masks(n)
    prob = _probability(masks, p)
    some = masks.sum(1) > 0
    for rescale in ("kept", "keep_prob"):
        torch.testing.assert_close(
            branch_weights(masks[some], rescale, p), _weights64(masks[some], rescale, p)
        )
    # ours: an all-dropped sample keeps one branch picked uniformly, weight n: adds p^n * (1/n) * n
    expected_kept = (prob[some, None] * _weights64(masks[some], "kept", p)).sum(0) + p**n
    torch.testing.assert_close(expected_kept, torch.ones(n, dtype=torch.float64))
    # DropPath: every mask counts, the all-dropped one with zero weights
    expected_drop_path = (prob[:, None] * branch_weights(masks, "keep_prob", p)).sum(0)
    torch.testing.assert_close(expected_drop_path, torch.ones(n, dtype=torch.float64))
    # why one option and not two: the mixed rules are biased (ours without keep-one, DropPath with it)
    no_keep_one = (prob[some, None] * _weights64(masks[some], "kept", p)).sum(0)
    torch.testing.assert_close(no_keep_one, torch.full((n,), 1 - p**n, dtype=torch.float64))
    keep_one_drop_path = expected_drop_path + p**n / (1 - p)
    assert (keep_one_drop_path > 1).all()


@pytest.mark.parametrize("rescale", ["kept", "keep_prob"])
def test_keep_masks_follow_their_rule(rescale: str) -> None:
    from kdforge.compress.reparam.blocks import draw_keep_mask

    torch.manual_seed(0)
    n, p, batch = 5, 0.5, 200_000
    keep = draw_keep_mask(batch, n, p, rescale, torch.device("cpu"))
    none = (~keep.any(1)).double().mean().item()
    if rescale == "kept":
        assert none == 0.0, "ours keeps one branch for every sample"
    else:
        assert abs(none - p**n) < 5 * (p**n * (1 - p**n) / batch) ** 0.5, (
            "DropPath lets all drop, p^n of samples"
        )
        assert abs(keep.double().mean().item() - (1 - p)) < 0.005, "each branch kept with probability 1 - p"


def _block() -> nn.Module:
    from kdforge.compress.reparam import expand

    torch.manual_seed(0)
    block = expand(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)))[0].double()
    block.train()
    for module in block.modules():  # fixed BN: every branch is a fixed affine map
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.eval()
    return block


@pytest.mark.parametrize("rescale", ["kept", "keep_prob"])
def test_block_forward_is_the_weighted_branch_sum(rescale: str) -> None:
    from kdforge.compress.reparam.blocks import draw_keep_mask

    block, p = _block(), 0.7
    x = torch.randn(64, 2, 5, 5, dtype=torch.float64)
    outputs = torch.stack([branch(x) for branch in block.branches.values()], 1)  # (B, n, C, H, W)
    torch.manual_seed(3)
    with branch_dropping(block, p, rescale):
        got = block(x)
    torch.manual_seed(3)  # replay the draws
    keep = draw_keep_mask(64, outputs.shape[1], p, rescale, x.device)
    weights = _weights64(keep.double(), rescale, p)
    torch.testing.assert_close(got, (weights[:, :, None, None, None] * outputs).sum(1))
    zero = (got.flatten(1) == 0).all(1)
    assert zero.any() if rescale == "keep_prob" else not zero.any(), "only DropPath zeroes a whole sample"
    assert block.drop_rescale == "kept" and block.drop_rate == 0.0, "restored on exit"


@pytest.mark.parametrize("rescale", ["kept", "keep_prob"])
def test_block_output_keeps_the_full_blocks_expected_value(rescale: str) -> None:
    block, p, draws = _block(), 0.5, 40_000
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64).expand(draws, -1, -1, -1)  # one sample, many draws
    with torch.no_grad():
        full = sum(branch(x[:1]) for branch in block.branches.values())
        torch.manual_seed(1)
        with branch_dropping(block, p, rescale):
            dropped = block(x)
    mean, sem = dropped.mean(0, keepdim=True), dropped.std(0, keepdim=True) / draws**0.5
    assert ((mean - full).abs() <= 5 * sem + 1e-12).all()


def test_rsd_passes_drop_rescale_to_the_blocks() -> None:
    method = _method({"mix": False, "drop_rate": 0.6, "drop_rescale": "keep_prob"})
    x, y = _batch()
    torch.manual_seed(4)
    logits, _ = method.forward_train(x, y)
    torch.manual_seed(4)
    with branch_dropping(method.student, 0.6, "keep_prob"):
        torch.testing.assert_close(logits, method.student(x))
    torch.manual_seed(4)
    with branch_dropping(method.student, 0.6, "kept"):
        assert not torch.allclose(logits, method.student(x))


# --------------------------------------------------------------------- mixing after the stem
def _seed_drawing(index: int, of: int) -> int:
    """A seed whose first torch.randint(of, ()) is `index` (the mixing point forward_train draws first)."""
    for seed in range(1000):
        torch.manual_seed(seed)
        if int(torch.randint(of, ())) == index:
            return seed
    raise AssertionError("no seed found")


def test_mix_after_stem_mixes_the_stems_output_as_the_official_resnets() -> None:
    method = _method({"drop_rate": 0.0, "mix_after_stem": True})
    assert method.points == [
        ("layer1", "input"),
        ("layer1", "output"),
        ("layer2", "output"),
        ("layer3", "output"),
    ], "the stem first, then the stages (the official ResNets' indices 0..3)"
    seed = _seed_drawing(0, of=4)
    x, y = _batch()
    torch.manual_seed(seed)
    _, terms = method.forward_train(x, y)
    torch.manual_seed(seed)  # replay: mixing point (the stem), lambda, permutation
    torch.randint(4, ())
    lam = torch.distributions.Beta(2.0, 2.0).sample().double()
    perm = torch.randperm(6)
    net = method.student
    stem = F.relu(net.bn1(net.conv1(x)))  # conv1 is a multi-branch block, bn1 an Identity now

    def mixed(module, args):
        torch.testing.assert_close(args[0], stem)
        return (lam * args[0] + (1 - lam) * args[0][perm],)

    handle = net.get_submodule("layer1").register_forward_pre_hook(mixed)
    tt = net(x)
    handle.remove()
    mix_ce = lam * F.cross_entropy(tt, y) + (1 - lam) * F.cross_entropy(tt, y[perm])
    torch.testing.assert_close(terms["mix_ce_tt"], mix_ce)
    torch.testing.assert_close(terms["mix_ce_ts"], mix_ce)  # drop rate 0: the student's stem is the same
    torch.testing.assert_close(terms["ce_teacher"], F.cross_entropy(net(x), y))


def test_mix_after_stem_refuses_a_first_stage_that_takes_the_images() -> None:
    with pytest.raises(UserError, match="mix_after_stem: the input of 'block0' is not a stem"):
        build_method(MethodConfig("rsd", {"mix_after_stem": True}), build("vgg8", 10), None)
    with pytest.raises(UserError, match=r"drop_rescale: 'half' is not one of"):
        build_method(MethodConfig("rsd", {"drop_rescale": "half"}), build("resnet8", 10), None)
