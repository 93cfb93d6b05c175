"""Structural reparameterization, training side: expand convs into multi-branch blocks (RSD).

The merge back into one conv per block lives in `export.reparameterize`.
"""

from compress.rep.blocks import DEFAULT_BRANCHES, OPTIONAL_BRANCHES, MultiBranchConv
from compress.rep.expand import ExpansionReport, branch_dropping, expand, multi_branch_blocks
from compress.rep.graph import conv_bn_pairs, set_submodule

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
