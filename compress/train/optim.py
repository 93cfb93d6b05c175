"""Optimizers and per-step learning-rate schedules (multistep / cosine / constant, linear warm-up)."""

from __future__ import annotations

import math
from typing import Any

import torch
from kdforge.compress.config import TrainConfig
from kdforge.compress.errors import UserError

WARMUP_START = 0.01  # warm-up starts at lr/100


def build_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW over the method's parameter groups; a group's 'lr_scale' multiplies the lr."""
    param_groups = []
    for group in groups:
        group = dict(group)
        group["lr"] = config.lr * group.pop("lr_scale", 1.0)
        if group["params"]:
            param_groups.append(group)
    if not param_groups:
        raise UserError("the method has no trainable parameters; check the model and method settings")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            param_groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(param_groups, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, epoch: float) -> float:
    """Multiplier of the base lr at a (fractional) epoch: warm-up, then the schedule."""
    if config.warmup_epochs > 0 and epoch < config.warmup_epochs:
        return WARMUP_START + (1 - WARMUP_START) * epoch / config.warmup_epochs
    if config.schedule == "multistep":
        return config.lr_decay ** sum(1 for milestone in config.milestones if epoch >= milestone)
    if config.schedule == "cosine":
        span = max(config.epochs - config.warmup_epochs, 1e-9)
        progress = min(max((epoch - config.warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor` (steps count fractions of epochs)."""
    steps = max(steps_per_epoch, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(config, step / steps))
