"""Structural reparameterization, training side: expand convs into multi-branch blocks (RSD).

The merge back into one conv per block lives in `kdforge.export.reparameterize`.
"""

from kdforge.compress.reparam.blocks import DEFAULT_BRANCHES, OPTIONAL_BRANCHES, MultiBranchConv
from kdforge.compress.reparam.expand import ExpansionReport, branch_dropping, expand, multi_branch_blocks
from kdforge.compress.reparam.graph import conv_bn_pairs, set_submodule

__all__ = [
    "DEFAULT_BRANCHES",
    "OPTIONAL_BRANCHES",
    "ExpansionReport",
    "MultiBranchConv",
    "branch_dropping",
    "conv_bn_pairs",
    "expand",
    "multi_branch_blocks",
    "set_submodule",
]
