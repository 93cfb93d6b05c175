"""Checkpoints written by the CIFAR distillation reference code (CRD / RepDistiller and mdistiller), read
onto the zoo: names through `reference_names.to_zoo` (the same names today: the zoo's CIFAR models are the
reference's), mdistiller's whole-run files split into the student or the teacher on request.

Formats (a network's `weights_format`; `--init-format`, `--teacher-format`, `kdforge eval --format`):
- `auto` (default) and `crd`: a file of one network, kdforge's or the reference code's (CRD's
  `ckpt_epoch_240.pth` with `{epoch, model, accuracy, optimizer}`, mdistiller's `student_best`);
- `mdistiller-student` / `mdistiller-teacher`: one network of an mdistiller run checkpoint
  (`module.student.*` / `module.teacher.*` beside the distiller's own modules), which must be named.
"""

from __future__ import annotations

import torch
from kdforge.compress.config import WEIGHTS_FORMATS
from kdforge.compress.errors import UserError
from kdforge.compress.weights.formats import strip_prefixes
from kdforge.compress.weights.reference_names import to_zoo

_RUN_PARTS = ("student", "teacher")


def arrange(
    tensors: dict[str, torch.Tensor], arch: str, expected: set[str], weights_format: str, where: str
) -> tuple[dict[str, torch.Tensor], str | None, str]:
    """(the file's tensors under the zoo's names, the mdistiller part read or None, `where` for messages)
    for `arch`, whose state dict has the keys `expected`; a name that does not fit is left to
    `fit_weights`, which names it in one line."""
    if weights_format not in WEIGHTS_FORMATS:
        raise UserError(f"unknown weights format {weights_format!r}: use one of {', '.join(WEIGHTS_FORMATS)}")
    tensors = strip_prefixes(dict(tensors), expected)
    parts = run_parts(tensors, expected)
    if not weights_format.startswith("mdistiller-"):
        if parts:
            raise UserError(
                f"{where} holds a whole mdistiller run (its student and its teacher): name the one to load, "
                "weights format mdistiller-student or mdistiller-teacher (--init-format, --teacher-format, "
                "eval --format; in a recipe <role>.weights_format)"
            )
        return to_zoo(arch, tensors), None, where
    part = weights_format.removeprefix("mdistiller-")
    if part not in parts:
        raise UserError(
            f"{where} is not an mdistiller run checkpoint: it has no '{part}.' tensors (it has "
            f"{next(iter(tensors), 'none')!r}); read it with weights format auto"
        )
    inner = {k[len(part) + 1 :]: v for k, v in tensors.items() if k.startswith(f"{part}.")}
    return to_zoo(arch, inner), weights_format, f"{where} (read as {weights_format})"


def run_parts(tensors: dict[str, torch.Tensor], expected: set[str]) -> set[str]:
    """The networks an mdistiller run file holds (`student`, `teacher`), or none for a one-network file."""
    found = {part for part in _RUN_PARTS if any(k.startswith(f"{part}.") for k in tensors)}
    if found and any(k.startswith(f"{part}.") for k in expected for part in found):
        return set()  # the model's own names start so: a plain file of it
    return found if len(found) == len(_RUN_PARTS) else set()
