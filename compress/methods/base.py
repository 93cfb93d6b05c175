"""The method contract every distillation method implements (mdistiller-like), and `@register`.

A method owns every network it trains, answers `forward_train(images, labels)` with the student's
logits and a dict of named, already weighted loss terms, and `forward(images)` for evaluation. It says
which parameters train through `param_groups()`; the Trainer knows nothing else about it. A class
decorated with `@register` joins `METHODS` or `TEACHER_STRATEGIES` (kdforge.compress.registry) under its
`name` when its module is imported.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field, is_dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
from kdforge.compress.config import options_from_dict
from kdforge.compress.registry import METHODS, TEACHER_STRATEGIES, qualified
from torch import nn

D = TypeVar("D", bound="type[Distiller]")


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


def register(cls: D) -> D:
    """Class decorator: add a method to its table under `cls.name`, after checking it can be built."""
    if not cls.__dict__.get("name"):
        raise TypeError(f"{qualified(cls)} sets no `name`: @register adds a method under its own name")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"method {cls.name!r} ({qualified(cls)}) does not implement {missing}")
    if cls.kind not in ("student", "teacher"):
        raise TypeError(f"{qualified(cls)}.kind must be 'student' or 'teacher', got {cls.kind!r}")
    if not is_dataclass(cls.Options):
        raise TypeError(f"{qualified(cls)}.Options must be a dataclass (the method's validated options)")
    table, other = (TEACHER_STRATEGIES, METHODS) if cls.kind == "teacher" else (METHODS, TEACHER_STRATEGIES)
    taken = other.registered().get(cls.name)
    if taken is not None and qualified(taken) != qualified(cls):
        raise TypeError(f"method name {cls.name!r} of {qualified(cls)} is taken by {qualified(taken)}")
    if cls.name in other.registered():  # a reload that changed the kind
        del other[cls.name]
    return table.register(cls.name, cls)


class Distiller(nn.Module, abc.ABC):
    """Base class: a student, an optional teacher, and the options dataclass of the method.

    Networks given to `freeze_network` never change (no gradients, eval mode, not part of the resume
    state); networks given to `keep_in_eval` change but always run in eval mode (an EMA copy, a teacher
    whose head alone trains).
    """

    name: ClassVar[str] = ""  # the recipe's `method.name`, under which `@register` adds the class
    kind: ClassVar[Literal["student", "teacher"]] = "student"  # "teacher": a teacher strategy
    needs_teacher: ClassVar[bool] = True
    Options: ClassVar[type] = object
    renamed_options: ClassVar[dict[str, str]] = {}  # old option name -> new: the old keeps working

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
            self.freeze_network(teacher)

    @classmethod
    def validate_options(cls, raw: dict[str, Any], path: str = "method.options") -> Any:
        """`cls.Options` from the recipe's raw options: keys, types and field limits, or a one-line UserError.

        An old name of `renamed_options` is accepted (load_recipe's `normalized` warns about it once).
        Override (calling super) for checks that span several fields or options of another method.
        """
        return options_from_dict(cls.Options, raw, path, cls.renamed_options)

    @property
    def frozen(self) -> tuple[nn.Module, ...]:
        """Networks that never change: no gradients, eval mode, left out of the resume state."""
        return tuple(self._frozen)

    @property
    def eval_only(self) -> tuple[nn.Module, ...]:
        """Networks that change (and are resumed) but always run in eval mode."""
        return tuple(self._eval_only)

    def freeze_network(self, module: nn.Module) -> nn.Module:
        """Freeze `module` (no gradients, eval mode) for good; it is not saved in the resume state."""
        self._frozen.append(freeze(module))
        return module

    def keep_in_eval(self, module: nn.Module) -> nn.Module:
        """Keep `module` in eval mode whatever `train()` says; it is still saved in the resume state."""
        self._eval_only.append(module)
        return module

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
