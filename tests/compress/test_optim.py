"""Learning-rate schedules against their closed forms, stepping per batch."""

from __future__ import annotations

import math

import pytest
import torch
from kdforge.compress.config import TrainConfig
from kdforge.compress.train.optim import build_optimizer, build_scheduler, lr_factor


def test_multistep_decays_at_each_milestone() -> None:
    config = TrainConfig(epochs=240, schedule="multistep", milestones=[150, 180, 210], lr_decay=0.1)
    assert [lr_factor(config, e) for e in (0, 149.99, 150, 180, 239)] == pytest.approx(
        [1, 1, 0.1, 0.01, 0.001]
    )


def test_cosine_with_linear_warmup() -> None:
    config = TrainConfig(epochs=10, schedule="cosine", warmup_epochs=2)
    assert lr_factor(config, 0) == pytest.approx(0.01)
    assert lr_factor(config, 1) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(config, 2) == pytest.approx(1.0)
    assert lr_factor(config, 6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(config, 10) == pytest.approx(0.0, abs=1e-12)


def test_scheduler_steps_per_batch_and_lr_scale_groups() -> None:
    config = TrainConfig(epochs=4, lr=0.1, schedule="multistep", milestones=[2], lr_decay=0.5)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs[9] == pytest.approx([0.1, 0.01]) and lrs[10] == pytest.approx([0.05, 0.005])


def test_adamw_and_sgd_settings() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    sgd = build_optimizer(
        [{"params": [p]}], TrainConfig(lr=0.2, momentum=0.8, nesterov=True, weight_decay=1e-3)
    )
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.8
    adamw = build_optimizer([{"params": [p]}], TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05
