"""Expansion into multi-branch blocks: which convs expand, the report, and per-sample branch dropping."""

from __future__ import annotations

import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.compress.reparam import MultiBranchConv, branch_dropping, expand, multi_branch_blocks
from torch import nn


def test_expand_returns_a_copy_with_every_kxk_conv_bn_expanded() -> None:
    plain = build("resnet8", 10)
    multi = expand(plain)
    assert not any(isinstance(m, MultiBranchConv) for m in plain.modules()), "the input is untouched"
    kxk = [n for n, m in plain.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert sorted(multi.rep_report.expanded) == sorted(kxk)
    block = multi.get_submodule("conv1")
    assert list(block.branches) == ["kxk0", "kxk1", "kxk2", "kx1", "1xk"]
    assert isinstance(multi.get_submodule("bn1"), nn.Identity)
    assert type(multi) is type(plain) and multi(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_convs_that_cannot_expand_are_left_alone_and_reported() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),  # no BN after it
        nn.Conv2d(4, 4, (3, 1), padding=(1, 0), bias=False),
        nn.BatchNorm2d(4),  # not square
    )
    multi = expand(model)
    assert multi.rep_report.expanded == ["0"]
    assert multi.rep_report.skipped == {
        "2": "not followed by a BatchNorm2d",
        "4": "kernel 3x1: only square KxK with K >= 3 expand",
    }
    assert "left alone: 2" in multi.rep_report.summary()


def test_a_model_with_nothing_to_expand_says_so() -> None:
    with pytest.raises(UserError, match="no KxK conv \\(K >= 3\\) followed by BatchNorm2d to expand"):
        expand(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)))
    with pytest.raises(UserError, match="unknown extra branch"):
        expand(build("resnet8", 10), extra=("3x3x3",))


def test_branch_dropping_is_per_sample_rescaled_and_keeps_one() -> None:
    torch.manual_seed(0)
    block = expand(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)))[0]
    block.eval()  # fixed BN, so each branch is a fixed linear map
    x = torch.randn(4096, 2, 5, 5)
    outputs = torch.stack([b(x) for b in block.branches.values()], 1)  # (B, 5, C, H, W)
    block.train()
    for bn in block.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.eval()
    with branch_dropping(block, 0.9):
        dropped = block(x)
    assert block.drop_rate == 0.0, "restored on exit"
    # solve per sample for the branch weights: every sample's weights are (n / kept) on kept branches
    flat = outputs.flatten(2)
    weights = torch.linalg.lstsq(flat.transpose(1, 2), dropped.flatten(1).unsqueeze(-1)).solution.squeeze(-1)
    kept = weights.round(decimals=3) > 0
    assert kept.any(1).all(), "at least one branch survives for every sample"
    n = 5
    torch.testing.assert_close(
        weights[kept], (n / kept.sum(1, keepdim=True).expand_as(kept))[kept].float(), rtol=1e-3, atol=1e-3
    )
    assert 0.05 < (~kept).float().mean() < 0.95 and kept.sum(1).float().std() > 0, "drops differ by sample"
    with branch_dropping(block, 0.9):
        block.eval()
        torch.testing.assert_close(block(x), outputs.sum(1)), "no dropping in eval mode"


def test_branch_dropping_touches_only_the_given_model() -> None:
    one, two = expand(build("resnet8", 10)), expand(build("resnet8", 10))
    with branch_dropping(one, 0.2):
        assert all(b.drop_rate == 0.2 for b in multi_branch_blocks(one))
        assert all(b.drop_rate == 0.0 for b in multi_branch_blocks(two))
    with pytest.raises(UserError, match="drop rate must be in"), branch_dropping(one, 1.0):
        pass
