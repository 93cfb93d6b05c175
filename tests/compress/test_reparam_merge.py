"""Merging multi-branch blocks and folding BN is exact: randomised BN statistics and affine parameters,
every conv geometry the issue lists, whole models; the merged network has the plain architecture."""

from __future__ import annotations

import pytest
import torch
from kdforge.compress.models import build
from kdforge.compress.reparam import MultiBranchConv, expand, reparameterize
from kdforge.compress.reparam.graph import conv_bn_pairs
from torch import nn

from tests.export.conftest import randomise_batchnorm

TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(n, tuple(m.weight.shape)) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 2, "depthwise"])
@pytest.mark.parametrize("extra", [(), ("1x1", "identity", "avg")])
def test_block_merges_exactly(k: int, stride: int, groups, extra: tuple[str, ...]) -> None:
    channels = 8
    g = channels if groups == "depthwise" else groups
    torch.manual_seed(k * 10 + stride)
    plain = ConvBN(channels, channels, k, stride, g)
    multi = randomise_batchnorm(expand(plain, extra=extra), seed=k + stride + g).eval()
    block = multi.conv
    assert isinstance(block, MultiBranchConv)
    expected = {"kxk0", "kxk1", "kxk2", "kx1", "1xk", *extra} - ({"identity"} if stride != 1 else set())
    assert set(block.branches) == expected
    with torch.no_grad():  # random weights in every branch, not just the copy of the original conv
        for branch in block.branches.values():
            for p in branch.parameters():
                if p.dim() == 4:
                    p.normal_(0, 0.3)
    merged = reparameterize(multi)
    x = torch.randn(3, channels, 13, 13)
    torch.testing.assert_close(merged(x), multi(x), **TOLERANCE)
    assert not any(isinstance(m, (MultiBranchConv, nn.BatchNorm2d)) for m in merged.modules())
    assert merged.conv.weight.shape == plain.conv.weight.shape and merged.conv.bias is not None


@pytest.mark.parametrize("name", ["resnet20", "resnet8x4", "wrn_16_2", "mobilenetv2", "tv:resnet18"])
def test_whole_models_merge_to_the_plain_architecture(name: str) -> None:
    torch.manual_seed(0)
    plain = build(name, 10)
    multi = randomise_batchnorm(expand(plain, extra=("1x1", "avg")), seed=1).eval()
    merged = reparameterize(multi)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), multi(x), **TOLERANCE)
    folded_plain = reparameterize(plain.eval())
    assert _params(merged) == _params(folded_plain)
    assert _conv_shapes(merged) == _conv_shapes(folded_plain)
    assert not any(isinstance(m, MultiBranchConv) for m in merged.modules())
    # every BN a conv feeds is folded; what stays is a pre-activation WRN's BNs of a residual sum
    fed = {bn for _, bn in conv_bn_pairs(plain)[0]}
    unfed = {path for path, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)} - fed
    assert {path for path, m in merged.named_modules() if isinstance(m, nn.BatchNorm2d)} == unfed
    assert bool(unfed) == name.startswith("wrn_")


def test_folding_a_plain_model_keeps_its_function() -> None:
    model = randomise_batchnorm(build("resnet8", 10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reparameterize(model)(x), model(x), **TOLERANCE)


def test_merging_a_training_mode_model_merges_its_eval_form_and_says_so() -> None:
    multi = randomise_batchnorm(expand(build("resnet8", 10)))
    assert multi.training
    with pytest.warns(UserWarning, match="training mode; merging its eval form"):
        merged = reparameterize(multi)
    assert multi.training, "the input model is left as it was"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), multi.eval()(x), **TOLERANCE)


def test_dilated_conv_merges_and_reports_the_branch_it_cannot_have() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(4))
    multi = randomise_batchnorm(expand(model, extra=("1x1", "identity", "avg"))).eval()
    assert "avg" not in multi[0].branches and multi.rep_report.skipped == {
        "0 (branches)": "avg: needs dilation 1"
    }
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(reparameterize(multi)(x), multi(x), **TOLERANCE)


@pytest.mark.parametrize("name", ["tv:mobilenet_v3_small", "tv:vgg11_bn"])
def test_torchvision_mobilenet_and_vgg_merge_exactly(name: str) -> None:
    multi = randomise_batchnorm(expand(build(name, 10))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reparameterize(multi)(x), multi(x), **TOLERANCE)
