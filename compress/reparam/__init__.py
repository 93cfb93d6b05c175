"""Structural reparameterization, the whole multi-branch lifecycle: expand convs into multi-branch blocks
for training (RSD), merge each block back into one conv and fold BatchNorms (`reparameterize`), and read
or write a checkpoint of either form (`structure`, `save_merged`).

`kdforge.export.reparameterize` is this `reparameterize`, re-exported as the deploy path's entry point.
"""

from kdforge.compress.reparam.blocks import DEFAULT_BRANCHES, OPTIONAL_BRANCHES, MultiBranchConv
from kdforge.compress.reparam.checkpoint import network_form, save_merged, structure
from kdforge.compress.reparam.expand import ExpansionReport, branch_dropping, expand, multi_branch_blocks
from kdforge.compress.reparam.graph import conv_bn_pairs, set_submodule
from kdforge.compress.reparam.merge import fold_batchnorms, merge_block, reparameterize

__all__ = [
    "DEFAULT_BRANCHES",
    "OPTIONAL_BRANCHES",
    "ExpansionReport",
    "MultiBranchConv",
    "branch_dropping",
    "conv_bn_pairs",
    "expand",
    "fold_batchnorms",
    "merge_block",
    "multi_branch_blocks",
    "network_form",
    "reparameterize",
    "save_merged",
    "set_submodule",
    "structure",
]
