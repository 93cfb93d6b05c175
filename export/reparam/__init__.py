"""Structural reparameterization, deployment side: merge multi-branch blocks and fold BatchNorms."""

from kdforge.export.reparam.checkpoint import load_merged, save_merged
from kdforge.export.reparam.merge import fold_batchnorms, merge_block, reparameterize

__all__ = ["fold_batchnorms", "load_merged", "merge_block", "reparameterize", "save_merged"]
