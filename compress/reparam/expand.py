"""`expand(model)`: a copy of a CNN with every KxK conv (K >= 3) + BN turned into a multi-branch block."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

from kdforge.compress.errors import UserError
from kdforge.compress.reparam.blocks import DEFAULT_BRANCHES, OPTIONAL_BRANCHES, MultiBranchConv
from kdforge.compress.reparam.graph import conv_bn_pairs, set_submodule
from torch import nn


@dataclass
class ExpansionReport:
    """What `expand` did: the expanded conv paths and, for every conv left alone, why."""

    expanded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    note: str | None = None

    def summary(self) -> str:
        lines = [f"expanded {len(self.expanded)} conv(s) into multi-branch blocks"]
        lines += [f"  left alone: {path} ({why})" for path, why in self.skipped.items()]
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _why_not(conv: nn.Conv2d) -> str | None:
    """Why a conv cannot become a multi-branch block (None: it can)."""
    kh, kw = conv.kernel_size
    if kh != kw or kh < 3:
        return f"kernel {kh}x{kw}: only square KxK with K >= 3 expand"
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return "padding mode other than explicit zero padding"
    return None


def _branches_for(conv: nn.Conv2d, extra: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The branches this conv's geometry supports, and notes on requested ones it cannot have."""
    k = conv.kernel_size[0]
    same = all(p == d * (k - 1) // 2 for p, d in zip(conv.padding, conv.dilation, strict=True)) and k % 2
    names, notes = ["kxk0", "kxk1", "kxk2"], []
    for name in ("kx1", "1xk", *extra):
        if name in ("kx1", "1xk", "1x1", "avg") and not same:
            notes.append(f"{name}: needs odd K and 'same' padding")
        elif name == "identity" and (conv.stride != (1, 1) or conv.in_channels != conv.out_channels):
            notes.append("identity: needs stride 1 and in == out channels")
        elif name == "avg" and conv.dilation != (1, 1):
            notes.append("avg: needs dilation 1")
        else:
            names.append(name)
    return names, notes


def expand(
    model: nn.Module, *, extra: tuple[str, ...] | list[str] = (), branches: tuple[str, ...] | None = None
) -> nn.Module:
    """A copy of `model` with every KxK conv + BN replaced by a `MultiBranchConv` (the BN becomes Identity).

    Default branches are the public RSD code's (three KxK, Kx1, 1xK); `extra` adds any of '1x1',
    'identity', 'avg' where the conv's geometry allows. The copy keeps the model's class and forward;
    `copy.rep_report` (an ExpansionReport) lists what was expanded and what was left alone, and why.
    """
    unknown = sorted(set(extra) - set(OPTIONAL_BRANCHES))
    if unknown:
        raise UserError(f"unknown extra branch(es) {unknown}; choose from {list(OPTIONAL_BRANCHES)}")
    if branches is not None and set(branches) - set(DEFAULT_BRANCHES):
        raise UserError(f"branches must be a subset of {list(DEFAULT_BRANCHES)}")
    model = copy.deepcopy(model)
    pairs, note = conv_bn_pairs(model)
    paired = dict(pairs)
    report = ExpansionReport(note=note)
    for path, module in list(model.named_modules()):
        if not isinstance(module, nn.Conv2d) or isinstance(module, MultiBranchConv):
            continue
        why = _why_not(module) if path in paired else "not followed by a BatchNorm2d"
        if why is None and module.kernel_size[0] < 3:
            why = "1x1"
        if why is not None:
            if module.kernel_size[0] >= 3:
                report.skipped[path] = why
            continue
        names, notes = _branches_for(module, tuple(extra))
        if branches is not None:
            names = [n for n in names if n in branches or n in extra]
        bn = model.get_submodule(paired[path])
        set_submodule(model, path, MultiBranchConv(module, bn, tuple(names)))
        set_submodule(model, paired[path], nn.Identity())
        report.expanded.append(path)
        if notes:
            report.skipped[f"{path} (branches)"] = "; ".join(notes)
    if not report.expanded:
        raise UserError(
            f"{type(model).__name__} has no KxK conv (K >= 3) followed by BatchNorm2d to expand"
            + (f": {next(iter(report.skipped.values()))}" if report.skipped else "")
        )
    model.rep_report = report
    return model


def multi_branch_blocks(model: nn.Module) -> list[MultiBranchConv]:
    """Every multi-branch block of `model`."""
    return [m for m in model.modules() if isinstance(m, MultiBranchConv)]


@contextlib.contextmanager
def branch_dropping(model: nn.Module, rate: float, rescale: str = "kept") -> Iterator[nn.Module]:
    """Within the block, every multi-branch block of `model` drops branches per sample at `rate`.

    `rescale`: 'kept' (keep one at least, survivors times branches / kept) or 'keep_prob' (the official
    RSD DropPath: survivors times 1 / (1 - rate), all may drop); see `MultiBranchConv`. State lives on
    the blocks of this model only, and is restored on exit (no module-level flag).
    """
    if not 0 <= rate < 1:
        raise UserError(f"branch drop rate must be in [0, 1), got {rate}")
    if rescale not in ("kept", "keep_prob"):
        raise UserError(f"branch drop rescale must be 'kept' or 'keep_prob', got {rescale!r}")
    blocks = multi_branch_blocks(model)
    previous = [(block.drop_rate, block.drop_rescale) for block in blocks]
    for block in blocks:
        block.drop_rate, block.drop_rescale = rate, rescale
    try:
        yield model
    finally:
        for block, (rate_before, rescale_before) in zip(blocks, previous, strict=True):
            block.drop_rate, block.drop_rescale = rate_before, rescale_before
