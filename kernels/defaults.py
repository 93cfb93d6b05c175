"""The loss hyper-parameter defaults, declared once for the kernels and for the methods' options. Torch-free,
so a recipe is checked (compress/method_options.py) without importing torch."""

from __future__ import annotations

KD_TEMPERATURE = 4.0  # Hinton et al.'s T on CIFAR, also the KD/DKD papers' recipes
DKD_TEMPERATURE = 4.0  # DKD (Zhao et al., CVPR 2022), CIFAR
# DIST: the CIFAR recipes' tau (the paper's ImageNet recipe uses 1).
DIST_TEMPERATURE = 4.0
