"""A `torch.export` program (`.pt2`) as a frozen teacher: its forward pass and nothing else, loaded from a
copy of its archive rebuilt from checked entries, so nothing in it is unpickled or evaluated."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.digest import sha256_file
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.train.finite import check_finite
from kdforge.compress.weights.formats import archive_entries, sniff
from kdforge.compress.weights.provenance import Provenance
from kdforge.compress.weights.pt2_program import checked_program
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


def _payload(config_bytes: bytes, tensor_prefix: tuple[str, ...], what: str, where: str) -> dict[str, Any]:
    """A weights or constants config whose every entry is a raw tensor record (no pickled object)."""
    try:
        parsed = json.loads(config_bytes)
        config = parsed["config"]
        if not isinstance(config, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{where}: its {what} config is not torch.export JSON; re-export it") from None
    for key, entry in config.items():
        if (
            not isinstance(entry, dict)
            or entry.get("use_pickle", False) is not False
            or not isinstance(entry.get("path_name"), str)
            or not entry["path_name"].startswith(tensor_prefix)
            or not isinstance(entry.get("tensor_meta"), dict)
        ):
            raise UserError(
                f"{where} is refused without running anything: its {what} entry {str(key)[:80]!r} is a "
                "pickled object; kdforge never unpickles code. Re-export a plain program (tensors only) "
                "with torch.export.save"
            )
    return parsed


def _refused(where: str, what: str) -> UserError:
    return UserError(
        f"{where} is refused without running anything: {what}, and kdforge never unpickles code. Re-export "
        "a plain program (tensors only) with torch.export.save"
    )


def _safe_copy(path: Path) -> io.BytesIO:
    """The archive rebuilt from its checked entries only, so torch reads exactly what was checked.

    Every entry name is checked as torch's reader sees it (no duplicates, no second root, no `..`), legacy
    pickled weights and constants, pickled or custom objects and compiled code are refused, the configs and
    the program JSON are checked and rewritten, and the sample inputs are read as tensors only and saved
    again: nothing left in the copy takes torch.export.load down a path that unpickles."""
    where = repr(str(path))
    entries = archive_entries(path, where)
    if "archive_version" not in entries or "models/model.json" not in entries:
        raise UserError(f"{where} is not a torch.export.save program; export it with torch.export.save")
    for name in entries:
        if name.startswith("data/aotinductor/"):
            raise UserError(f"{where} is a compiled AOTInductor package, not a torch.export program")
        if name in ("data/weights/model.pt", "data/constants/model.pt"):
            raise _refused(where, f"it stores {name.split('/')[1]} in the legacy pickled format ({name})")
        if name.startswith("models/") and name != "models/model.json":
            raise UserError(f"{where} holds several programs ({name}); save one program per .pt2 file")
    copy = io.BytesIO()
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(copy, "w") as out:

        def read(name: str) -> bytes:
            if name not in entries:
                raise UserError(f"{where} has no {name}; export it with torch.export.save")
            return archive.read(entries[name])

        for name in ("archive_format", "archive_version", "byteorder", ".data/version"):
            if name in entries:
                out.writestr(f"archive/{name}", read(name))
        try:
            program = json.loads(read("models/model.json"))
        except ValueError:
            raise UserError(f"{where}: its program is not JSON; export it with torch.export.save") from None
        if not isinstance(program, dict):
            raise UserError(f"{where}: its program is not torch.export JSON; export it again")
        out.writestr("archive/models/model.json", json.dumps(checked_program(program, where)))
        payloads = (("weights", "weight", ("weight_", "tensor_")), ("constants", "constant", ("tensor_",)))
        for folder, what, prefix in payloads:
            config_name = f"data/{folder}/model_{folder}_config.json"
            config = _payload(read(config_name), prefix, what, where)
            out.writestr(f"archive/{config_name}", json.dumps(config))
            for record in sorted({entry["path_name"] for entry in config["config"].values()}):
                if "/" in record:
                    raise _refused(where, f"its {what} record {record[:80]!r} is outside its folder")
                out.writestr(f"archive/data/{folder}/{record}", read(f"data/{folder}/{record}"))
        try:
            samples = torch.load(io.BytesIO(read("data/sample_inputs/model.pt")), weights_only=True)
        except UserError:
            raise
        except Exception:
            raise _refused(where, "its sample inputs are pickled objects other than tensors") from None
        buffer = io.BytesIO()
        torch.save(samples, buffer)
        out.writestr("archive/data/sample_inputs/model.pt", buffer.getvalue())
    copy.seek(0)
    return copy


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
    checked = _safe_copy(path)
    try:
        program = torch.export.load(checked)
    except Exception as exc:
        raise UserError(f"{where}: torch.export.load failed ({first_line(exc)})") from None
    teacher = ExportedTeacher(program, path)
    check_finite(program.state_dict, f"teacher {where}")
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
