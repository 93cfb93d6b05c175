"""Checkpoints written by the CIFAR distillation reference code (CRD / RepDistiller and mdistiller), read
onto the zoo: their tensor names mapped by `reference_names.to_zoo`, mdistiller's whole-run files split
into the student or the teacher on request.

Formats (a network's `weights_format`, `--init-format`, `--teacher-format`):
- `auto` (default): the file's names as the zoo's if they fit, else the reference's when the mapped names
  fit (or fit better); an mdistiller run file must be named, since it holds two networks;
- `kdforge`: the zoo's names only; `crd`: the reference models' names (CRD's `ckpt_epoch_240.pth` with
  `{epoch, model, accuracy, optimizer}`, mdistiller's `student_best`, any `module.` prefix);
- `mdistiller-student` / `mdistiller-teacher`: one network of an mdistiller run checkpoint
  (`module.student.*` / `module.teacher.*` beside the distiller's own modules).
"""

from __future__ import annotations

import torch
from kdforge.compress.config import WEIGHTS_FORMATS
from kdforge.compress.errors import UserError
from kdforge.compress.weights.formats import strip_prefixes

_RUN_PARTS = ("student", "teacher")
_COUNTER = "num_batches_tracked"  # absent from files older than the counter; never a reason to mismatch


def arrange(
    tensors: dict[str, torch.Tensor], arch: str, expected: set[str], weights_format: str, where: str
) -> tuple[dict[str, torch.Tensor], str | None]:
    """(the file's tensors under the model's names, the reference format read or None) for `arch`,
    whose state dict has the keys `expected`; a name that still does not fit is left to `fit_weights`."""
    if weights_format not in WEIGHTS_FORMATS:
        raise UserError(f"unknown weights format {weights_format!r}: use one of {', '.join(WEIGHTS_FORMATS)}")
    tensors = strip_prefixes(dict(tensors), expected)
    parts = run_parts(tensors, expected)
    if weights_format.startswith("mdistiller-"):
        part = weights_format.removeprefix("mdistiller-")
        if part not in parts:
            raise UserError(
                f"{where} is not an mdistiller run checkpoint: it has no '{part}.' tensors (it has "
                f"{next(iter(tensors), 'none')!r}); read it with weights format auto or crd"
            )
        inner = {k[len(part) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{part}.")}
        return _reference(inner, arch), weights_format
    if parts:
        raise UserError(
            f"{where} holds a whole mdistiller run (its student and its teacher): name the one to load, "
            "weights format mdistiller-student or mdistiller-teacher (--init-format, --teacher-format, "
            "eval --format; in a recipe <role>.weights_format)"
        )
    if weights_format == "kdforge":
        return tensors, None
    if weights_format == "crd":
        return _reference(tensors, arch), "crd"
    mapped = _reference(tensors, arch)
    if mapped.keys() == tensors.keys() or _fits(tensors, expected):
        return tensors, None
    if _fits(mapped, expected) or _overlap(mapped, expected) > _overlap(tensors, expected):
        return mapped, "crd"
    return tensors, None


def run_parts(tensors: dict[str, torch.Tensor], expected: set[str]) -> set[str]:
    """The networks an mdistiller run file holds (`student`, `teacher`), or none for a one-network file."""
    found = {part for part in _RUN_PARTS if any(k.startswith(f"{part}.") for k in tensors)}
    if found and any(k.startswith(f"{part}.") for k in expected for part in found):
        return set()  # the model's own names start so: a plain file of it
    return found if len(found) == len(_RUN_PARTS) else set()


def _reference(tensors: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    from kdforge.compress.weights.reference_names import to_zoo

    return to_zoo(arch, tensors)


def _fits(tensors: dict[str, torch.Tensor], expected: set[str]) -> bool:
    drop = {k for k in expected if k.endswith(_COUNTER)}
    return set(tensors) - drop == expected - drop


def _overlap(tensors: dict[str, torch.Tensor], expected: set[str]) -> int:
    return len(set(tensors) & expected)
