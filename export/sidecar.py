"""JSON sidecars for compiled artifacts (`model.pt2.json`, `model.engine.json`): what built the file, for
which input, with which preprocessing, and the file's SHA-256, so a truncated or swapped artifact is caught
with one clear line before any runtime tries to load it. The SHA-256 proves nothing about who built the file
(whoever hands it over can write the sidecar too): that is the signature's job (kdforge.export.trust)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.digest import sha256_file as sha256
from kdforge.compress.errors import UserError

PREPROCESSING_KEYS = ("classes", "mean", "std", "input_shape")


def sidecar_path(artifact: str | Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, info: dict[str, Any]) -> Path:
    """Record `info` plus the artifact's size and SHA-256 next to it (atomically), signed by this user's
    kdforge (see kdforge.export.trust): what kdforge built here loads without --trust-code."""
    from kdforge.export.trust import sign

    artifact = Path(artifact)
    record = {**info, "file": artifact.name, "bytes": artifact.stat().st_size, "sha256": sha256(artifact)}
    record = sign(record)
    path = sidecar_path(artifact)
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def read_sidecar(artifact: str | Path, rebuild_hint: str) -> dict[str, Any]:
    """The sidecar of `artifact`, after checking the artifact still matches it (size, then SHA-256).
    Every failure is one UserError line ending in `rebuild_hint`."""
    artifact = Path(artifact)
    path = sidecar_path(artifact)
    if not artifact.is_file():
        raise UserError(f"{str(artifact)!r} not found; {rebuild_hint}")
    if not path.is_file():
        raise UserError(
            f"{artifact.name} has no sidecar {path.name} (kdforge writes one per build); {rebuild_hint}"
        )
    try:
        record = json.loads(path.read_text())
        expected_bytes, expected_sha = int(record["bytes"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path.name} is not a kdforge sidecar (unreadable JSON); {rebuild_hint}") from None
    size = artifact.stat().st_size
    if size != expected_bytes:
        raise UserError(
            f"{artifact.name} is corrupt: {size} bytes, its sidecar says {expected_bytes}; {rebuild_hint}"
        )
    if sha256(artifact) != expected_sha:
        raise UserError(f"{artifact.name} is corrupt: its SHA-256 differs from its sidecar's; {rebuild_hint}")
    return record
