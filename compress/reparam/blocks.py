"""The multi-branch block RSD trains in place of a KxK conv + BN (structural reparameterization).

Every branch is linear up to its BN, so in eval mode the block's sum is one KxK conv with a bias
(`reparameterize` in `merge.py` computes it). Branches (names are the keys of `MultiBranchConv.branches`):
  kxk0, kxk1, kxk2  KxK conv + BN (the public RSD code's three), kx1 / 1xk  Kx1 and 1xK conv + BN,
  1x1               1x1 conv + BN (optional), identity  BN alone (optional; stride 1, in == out),
  avg               1x1 conv -> KxK average pool -> BN (optional; Diverse-Branch-Block style).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

DEFAULT_BRANCHES = ("kxk0", "kxk1", "kxk2", "kx1", "1xk")
OPTIONAL_BRANCHES = ("1x1", "identity", "avg")


def _bn(channels: int, like: nn.BatchNorm2d) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=like.eps, momentum=like.momentum)


DropRescale = Literal["kept", "keep_prob"]


def branch_weights(keep: torch.Tensor, rescale: str, rate: float) -> torch.Tensor:
    """Per-sample branch weights (B, n) from a keep mask (B, n) of booleans.

    'kept' (ours): kept branches weigh n / kept, so each sample's weights sum to n, as in the full block
    (the mask must keep at least one branch per sample). 'keep_prob' (the official RSD code's DropPath):
    kept branches weigh 1 / (1 - rate) each, whatever the others did; a sample that dropped every branch
    gets all zeros. Both keep the expected weight of every branch at 1 under their own mask distribution.
    """
    mask = keep if keep.is_floating_point() else keep.to(torch.get_default_dtype())  # 0/1 per branch
    if rescale == "kept":
        return mask * (keep.shape[1] / mask.sum(1, keepdim=True))
    if rescale == "keep_prob":
        return mask / (1.0 - rate)
    raise ValueError(f"unknown drop rescale {rescale!r}; choose 'kept' or 'keep_prob'")


def draw_keep_mask(batch: int, n: int, rate: float, rescale: str, device: torch.device) -> torch.Tensor:
    """Each sample keeps each branch with probability 1 - rate; under 'kept', a sample that dropped
    them all keeps one branch picked uniformly (the official DropPath, 'keep_prob', lets them all go)."""
    keep = torch.rand(batch, n, device=device) >= rate
    if rescale == "kept":
        none = ~keep.any(1)
        if none.any():
            pick = torch.randint(0, n, (int(none.sum()),), device=device)
            keep[none.nonzero(as_tuple=True)[0], pick] = True
    return keep


class MultiBranchConv(nn.Module):
    """Sum of parallel branches with the geometry of one KxK conv (+ its BN); per-sample branch dropping.

    `drop_rate` (0 = off) and `drop_rescale` are set for a student pass by
    `kdforge.compress.reparam.branch_dropping`; dropping only acts in training mode. Each sample drops
    each branch with that probability. `drop_rescale: kept` (default) keeps at least one branch and
    rescales the survivors by (branches / kept); `keep_prob` is the official RSD code's DropPath: each
    survivor is rescaled by 1 / (1 - rate) and all branches of a sample may drop. Either way the expected
    sum is unchanged (`branch_weights`).
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, branches: tuple[str, ...]) -> None:
        super().__init__()
        k = conv.kernel_size[0]
        self.in_channels, self.out_channels, self.kernel = conv.in_channels, conv.out_channels, k
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.drop_rate = 0.0
        self.drop_rescale: DropRescale = "kept"
        made: dict[str, nn.Module] = {}
        for name in branches:
            made[name] = self._branch(name, conv, bn)
        self.branches = nn.ModuleDict(made)
        with torch.no_grad():  # the first KxK branch starts as the original conv + BN
            first = self.branches["kxk0"]
            first[0].weight.copy_(conv.weight)
            first[1].load_state_dict(bn.state_dict())

    def _branch(self, name: str, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
        cin, cout, k, g = conv.in_channels, conv.out_channels, self.kernel, conv.groups
        (dh, dw), (ph, pw), stride = conv.dilation, conv.padding, conv.stride

        def conv_bn(
            kernel: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]
        ) -> nn.Module:
            layer = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, g, bias=False)
            return nn.Sequential(layer, _bn(cout, bn))

        if name.startswith("kxk"):
            return conv_bn((k, k), (ph, pw), (dh, dw))
        if name == "kx1":
            return conv_bn((k, 1), (ph, 0), (dh, 1))
        if name == "1xk":
            return conv_bn((1, k), (0, pw), (1, dw))
        if name == "1x1":
            return conv_bn((1, 1), (0, 0), (1, 1))
        if name == "identity":
            return _bn(cout, bn)
        if name == "avg":
            squeeze = nn.Conv2d(cin, cout, 1, 1, 0, 1, g, bias=False)
            pool = nn.AvgPool2d(k, stride, (ph, pw), count_include_pad=True)
            return nn.Sequential(squeeze, pool, _bn(cout, bn))
        raise ValueError(f"unknown branch {name!r}")

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel}, stride={self.stride}, "
            f"groups={self.groups}, branches={list(self.branches)}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches.values()]
        if not (self.training and self.drop_rate > 0):
            return torch.stack(outputs).sum(0)
        keep = draw_keep_mask(x.shape[0], len(outputs), self.drop_rate, self.drop_rescale, x.device)
        weights = branch_weights(keep.to(outputs[0].dtype), self.drop_rescale, self.drop_rate)
        stacked = torch.stack(outputs, 1)  # (B, n, C, H, W)
        return (stacked * weights[:, :, None, None, None]).sum(1)
