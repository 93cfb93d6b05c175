"""What a weights file is (sniffed from its bytes, not its name) and its tensors: state dicts read with
`torch.load(weights_only=True)`, safetensors, wrapper dicts and key prefixes unwrapped."""

from __future__ import annotations

import json
import pickle
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kdforge.compress.errors import UserError, first_line

PREFIXES = ("module.", "model.", "_orig_mod.")  # DDP, Lightning-style wrappers, torch.compile
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params")


def sniff(path: str | Path) -> str:
    """The file's format from its bytes: kdforge, safetensors, state_dict (torch.save), torch.export, aoti."""
    path = Path(path)
    if path.is_dir() and (path / "best.safetensors").is_file():
        path = path / "best.safetensors"
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} not found")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [inside_name(name) for name in archive.namelist()]
        except zipfile.BadZipFile as exc:
            raise UserError(f"{str(path)!r} is a damaged zip file ({first_line(exc)})") from None
        if "archive_format" in names:
            return "aoti" if any(name.startswith("data/aotinductor/") for name in names) else "torch.export"
        return "state_dict"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header size, then the JSON header
        (size,) = struct.unpack("<Q", head[:8])
        if 8 + size <= path.stat().st_size:
            with open(path, "rb") as handle:
                handle.seek(8)
                try:
                    header = json.loads(handle.read(size))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    header = None
            if isinstance(header, dict):
                meta = header.get("__metadata__") or {}
                return "kdforge" if "kdforge" in meta else "safetensors"
    if head[:1] == b"\x80":  # a pickle (torch.save's legacy format)
        return "state_dict"
    raise UserError(
        f"{str(path)!r} is not a weights file kdforge reads: give a kdforge checkpoint, a state dict "
        "(torch.save: .pth/.pt/.bin), a safetensors file or a torch.export program (.pt2)"
    )


def archive_entries(path: str | Path, where: str | None = None) -> dict[str, str]:
    """Each entry of a torch zip archive under the name torch's reader gives it (the exact name minus the
    root folder of the first entry), mapped to the exact name, after refusing every name two readers could
    disagree on or an extractor could write outside its folder: a second root, absolute or drive names,
    backslashes, empty, `.` or `..` parts, and duplicates (also after case folding)."""
    where = where or repr(str(path))
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{where} is a damaged zip file ({first_line(exc)})") from None
    if not names:
        raise UserError(f"{where} is an empty zip archive")
    root = names[0].split("/", 1)[0]
    entries: dict[str, str] = {}
    folded: set[str] = set()
    for name in names:
        parts = name.split("/")
        bad = (
            len(parts) < 2
            or parts[0] != root
            or any(part in ("", ".", "..") for part in parts)
            or any(c in name for c in "\\\0:")
        )
        inner = "/".join(parts[1:])
        if bad or name.casefold() in folded:
            why = "a duplicate" if not bad else "outside its folder or not normalised"
            raise UserError(
                f"{where} is refused without reading it: its entry {name[:120]!r} is {why}, which a hostile "
                "archive uses to make a check read one file and the loader another or to write outside "
                "its folder; re-save it with torch"
            )
        folded.add(name.casefold())
        entries[inner] = name
    return entries


def inside_name(name: str) -> str:
    """An archive entry without the archive's root folder (torch.save and torch.export both add one)."""
    parts = PurePosixPath(name).parts
    return "/".join(parts[1:]) if len(parts) > 1 else name


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str, dict[str, Any] | None]:
    """(tensors, format, kdforge metadata or None) of a weights file, without running pickled code."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    kind = sniff(path)
    where = repr(str(path))
    if kind == "torch.export":
        raise UserError(
            f"{where} is a torch.export program: it has no weights kdforge can start a network from; "
            "use it as a teacher as is (teacher.checkpoint or --teacher)"
        )
    if kind == "aoti":
        raise UserError(f"{where} is a compiled AOTInductor package, not weights; give the network's weights")
    if kind == "kdforge":
        from kdforge.compress.reparam.checkpoint import network_form
        from kdforge.compress.train.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(path)
        if network_form(checkpoint.meta) == "merged":
            raise UserError(f"{where} is a merged (deployable) network; start from its training checkpoint")
        return checkpoint.tensors, "kdforge", checkpoint.meta
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors", None
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{where} is not a readable safetensors file ({first_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol is noise beside our one line
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f"it references {found[1]}" if found else "it holds objects other than tensors"
        raise UserError(
            f"{where} is refused without running anything: {what}, and kdforge never unpickles code (it "
            "reads tensors only); re-save the weights alone: torch.save(model.state_dict(), PATH)"
        ) from None
    except Exception as exc:  # a torn or foreign file
        raise UserError(f"{where} cannot be read as a PyTorch state dict ({first_line(exc)})") from None
    return unwrap(loaded, where), "state_dict", None


def unwrap(loaded: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict inside what torch.load returned: itself, or under `state_dict`, `model`, ..."""
    node = loaded
    for _ in range(4):
        if not isinstance(node, Mapping):
            break
        if node and all(isinstance(v, torch.Tensor) for v in node.values()):
            return {str(k): v for k, v in node.items()}
        inner = next((node[k] for k in WRAPPER_KEYS if isinstance(node.get(k), Mapping)), None)
        if inner is None:
            tensors = {str(k): v for k, v in node.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
            break
        node = inner
    shown = f"keys {list(loaded)[:5]}" if isinstance(loaded, Mapping) else type(loaded).__name__
    raise UserError(
        f"{where} holds no state dict ({shown}); save one with torch.save(model.state_dict(), PATH)"
    )


def strip_prefixes(tensors: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop a wrapper's key prefix (`module.`, `model.`, `_orig_mod.`) every key carries but the model's
    own keys do not, repeatedly (DDP around torch.compile: `module._orig_mod.`)."""
    changed = True
    while changed and tensors:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in tensors) and not all(k.startswith(prefix) for k in expected):
                tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
                changed = True
    return tensors
