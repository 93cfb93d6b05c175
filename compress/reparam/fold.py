"""Exact folding arithmetic: a conv followed by an eval-mode BatchNorm is one conv with a bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift per channel in eval mode (float64)."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - mean * scale


def fold_conv_bn(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias (float64) of conv(weight, bias) followed by `bn`."""
    scale, shift = bn_scale_shift(bn)
    folded = weight.double() * scale[:, None, None, None]
    base = bias.double() if bias is not None else torch.zeros_like(shift)
    return folded, base * scale + shift


def pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (out, in, kh, kw) kernel to size x size, centred."""
    kh, kw = kernel.shape[-2:]
    top, left = (size - kh) // 2, (size - kw) // 2
    return F.pad(kernel, (left, size - kw - left, top, size - kh - top))


def identity_kernel(channels: int, groups: int, size: int, device: torch.device) -> torch.Tensor:
    """The KxK kernel of x -> x for a grouped conv with `channels` in and out."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, size, size, dtype=torch.float64, device=device)
    centre = size // 2
    for channel in range(channels):
        kernel[channel, channel % per_group, centre, centre] = 1.0
    return kernel


def conv_with_bias(
    weight: torch.Tensor, bias: torch.Tensor, like: nn.Module, dtype: torch.dtype
) -> nn.Conv2d:
    """A plain nn.Conv2d with the geometry of `like` (a Conv2d or a MultiBranchConv: in_channels, stride,
    padding, dilation, groups) holding `weight` and `bias` (computed in float64, stored as `dtype`)."""
    out_channels, _, kh, kw = weight.shape
    conv = nn.Conv2d(
        like.in_channels,
        out_channels,
        (kh, kw),
        like.stride,
        like.padding,
        like.dilation,
        like.groups,
        bias=True,
    )
    with torch.no_grad():
        conv.weight.copy_(weight.to(dtype))
        conv.bias.copy_(bias.to(dtype))
    return conv.to(weight.device)
