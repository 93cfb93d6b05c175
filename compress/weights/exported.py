"""A `torch.export` program (`.pt2`) as a frozen teacher: its forward pass and nothing else, its archive
checked so nothing in it is unpickled."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.digest import sha256_file
from kdforge.compress.errors import UserError
from kdforge.compress.weights.formats import inside_name, sniff
from kdforge.compress.weights.provenance import Provenance, first_line
from torch import nn

EXPORTED_ONLY = (
    "is a torch.export program (.pt2): kdforge runs only its forward pass (the logits), so a method "
    "that taps the teacher's features or trains it cannot use it; use kd, dkd or dist, or give the "
    "teacher as a checkpoint or state dict of a registry architecture"
)


class ExportedTeacher(nn.Module):
    """A `torch.export` program as a frozen teacher: forward pass only.

    The program is not a submodule: the teacher shows no parameters, buffers or submodules (nothing to
    train, save or tap), and a forward hook on it (what feature taps use) is refused in one line. It
    moves to the input's device on the first call there and always runs on contiguous inputs.
    """

    def __init__(self, program: Any, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self.__dict__["_program"] = program
        self.__dict__["_runner"] = None
        self.__dict__["_device"] = None

    def _runner_for(self, device: torch.device) -> Any:
        if self._runner is None or self._device != device:
            from torch.export.passes import move_to_device_pass

            runner = move_to_device_pass(self._program, device).module()
            for parameter in runner.parameters():
                parameter.requires_grad_(False)
            self.__dict__["_runner"], self.__dict__["_device"] = runner, device
        return self._runner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._runner_for(images.device)(images.contiguous())

    def parameter_count(self) -> int:
        return sum(t.numel() for t in self._program.state_dict.values())

    def register_forward_hook(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"teacher {self.path!r} {EXPORTED_ONLY}")

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        raise UserError(f"teacher {self.path!r} {EXPORTED_ONLY}")


def _check_archive(path: Path) -> None:
    """Refuse a .pt2 whose loading would unpickle anything beyond plain tensors (torch.export.load falls
    back to full unpickling for some entries) or load compiled code, before torch reads it."""
    where = repr(str(path))
    with zipfile.ZipFile(path) as archive:
        entries = {inside_name(name): name for name in archive.namelist()}
        if "archive_version" not in entries or not any(
            n.startswith("models/") and n.endswith(".json") for n in entries
        ):
            raise UserError(f"{where} is not a torch.export.save program; export it with torch.export.save")
        for name, full in entries.items():
            if name.startswith("data/aotinductor/"):
                raise UserError(f"{where} is a compiled AOTInductor package, not a torch.export program")
            refused = None
            if name.endswith("_weights_config.json") or name.endswith("_constants_config.json"):
                config = json.loads(archive.read(full)).get("config", {})
                for key, entry in config.items():
                    if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                        ("weight_", "tensor_")
                    ):
                        refused = f"its entry {key!r} is a pickled object"
                        break
            elif name.startswith("data/constants/") and name.endswith(".pt"):
                refused = "it stores constants in the pickled legacy format"
            elif name.startswith("data/sample_inputs/"):
                try:
                    torch.load(io.BytesIO(archive.read(full)), weights_only=True)
                except Exception:
                    refused = "its sample inputs are pickled objects other than tensors"
            if refused:
                raise UserError(
                    f"{where}: {refused}; kdforge never unpickles code. Re-export a plain program "
                    "(tensors only) with torch.export.save"
                )


def load_exported(
    path: str | Path, input_shape: tuple[int, ...], num_classes: int
) -> tuple[ExportedTeacher, Provenance]:
    """A `.pt2` teacher (torch.export.save), checked safe to load, runnable at batch 1 and 3 on the data's
    input shape, and predicting `num_classes` classes."""
    path = Path(path)
    where = repr(str(path))
    kind = sniff(path)
    if kind == "aoti":
        raise UserError(f"{where} is a compiled AOTInductor package, not a torch.export program")
    if kind != "torch.export":
        raise UserError(f"{where} is not a torch.export program (.pt2)")
    _check_archive(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UserError(f"{where}: torch.export.load failed ({first_line(exc)})") from None
    teacher = ExportedTeacher(program, path)
    shape = tuple(input_shape)
    for batch in (1, 3):
        try:
            with torch.no_grad():
                logits = teacher(torch.zeros(batch, *shape))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(
                f"teacher {where} does not run on a batch of {batch} {shape} images ({first_line(exc)}); "
                "export it at the data's image size with a dynamic batch dimension "
                "(dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
            ) from None
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, num_classes):
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise UserError(
                f"teacher {where} outputs {got} for {batch} images, not ({batch}, {num_classes}) logits: "
                f"a teacher must predict the data set's {num_classes} classes"
            )
    return teacher, Provenance(os.path.abspath(path), "torch.export", sha256_file(path))
