"""The method contract every distillation method implements (mdistiller-like).

A method owns every network it trains, answers `forward_train(images, labels)` with the student's
logits and a dict of named, already weighted loss terms, and `forward(images)` for evaluation. It says
which parameters train through `param_groups()`; the Trainer knows nothing else about it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients into `module` and keep it in eval mode (BN statistics stay fixed)."""
    module.requires_grad_(False)
    module.eval()
    return module


@dataclass(frozen=True)
class NetworkSpec:
    """How to rebuild a network from the model registry: `build(arch, num_classes, **options)`."""

    arch: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodContext:
    """What a method may need beyond its networks: the class count and how teacher/student were built."""

    num_classes: int
    student: NetworkSpec | None = None
    teacher: NetworkSpec | None = None


class Distiller(nn.Module, abc.ABC):
    """Base class: a student, an optional teacher, and the options dataclass of the method.

    `_frozen` networks never change (no gradients, eval mode, not part of the resume state);
    `_eval_only` networks change but always run in eval mode (an EMA copy, a teacher whose head trains).
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    Options: ClassVar[type] = object

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        options: Any,
        context: MethodContext | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.options = options
        self.context = context
        self._frozen: list[nn.Module] = []
        self._eval_only: list[nn.Module] = []
        if teacher is not None and not self.trains_teacher():
            self._frozen.append(freeze(teacher))

    @classmethod
    def wants_teacher(cls, options: dict[str, Any]) -> bool:
        """Whether a run with these raw `method.options` needs a teacher checkpoint."""
        return cls.needs_teacher

    def deliverable_meta(self) -> dict[str, Any]:
        """Extra `model` metadata to rebuild the deliverable (e.g. its multi-branch expansion)."""
        return {}

    def trains_teacher(self) -> bool:
        """Whether the teacher is updated too (SATE, DIST+ acclimation, RSD); False for plain KD."""
        return False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation: the student's logits."""
        return self.student(images)

    @abc.abstractmethod
    def forward_train(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training forward: (student logits, {loss name: weighted scalar}); the Trainer sums them."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; a group may carry 'lr_scale' to train at a multiple of the lr."""
        return [{"params": [p for p in self.student.parameters() if p.requires_grad]}]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter some optimizer group updates."""
        for group in self.param_groups():
            yield from group["params"]

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        """Hook for schedules inside a method (e.g. a loss warm-up); `epoch` counts from 0."""

    def after_step(self) -> None:
        """Hook run after every optimizer step (e.g. to update an EMA copy of a network)."""

    def deliverable(self) -> nn.Module:
        """The network the run produces and checkpoints as `best`/`last` (the student)."""
        return self.student

    def companions(self) -> dict[str, tuple[nn.Module, NetworkSpec]]:
        """Other trained networks worth a checkpoint of their own (SATE's intermediate teacher), by name."""
        return {}

    def train(self, mode: bool = True) -> Distiller:
        """Switch modes, keeping frozen and eval-only networks in eval mode."""
        super().train(mode)
        for module in (*self._frozen, *self._eval_only):
            module.eval()
        return self
