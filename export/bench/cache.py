"""Every latency `kdforge run --budget` measures, kept in an append-only JSON-lines file keyed by what decides
the figure (the timed file's bytes, backend and its version, precision, batch, input, threads, machine), so
a resumed or repeated search never times the same file twice on the same machine.

One record a line, each appended with one write, flushed and fsynced: a kill loses at most the line being
written, and a damaged or truncated line is skipped when the file is read. The file is data from disk: it
is never followed through a link, never read past `MAX_CACHE_BYTES`, and a line that is not a record is
ignored."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import stat
from pathlib import Path
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.compress.text import printable
from kdforge.export.bench.schema import row_problems

MAX_CACHE_BYTES = 64 * 2**20
MAX_LINE_BYTES = 256 * 1024  # a row without its samples is about 1 KB
RECORD_TAG = "kdforge-latency"
RECORD_VERSION = 1
KEY_FIELDS = (
    "sha256",
    "backend",
    "backend_version",
    "precision",
    "batch",
    "input_shape",
    "threads",
    "machine",
)
_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # no link followed, a FIFO never blocks the open


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' when it has none, as on many ARM kernels)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, colon, value = line.partition(":")
                if colon and key.strip() == "model name":
                    return " ".join(value.split())
    except OSError:
        pass
    return ""


def _gpu_name() -> str:
    """The first CUDA device's name when torch sees one ('' otherwise)."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except Exception:  # a broken driver must not stop a CPU measurement
        return ""


def machine_identity() -> str:
    """A short stable name of this machine for cache keys: CPU model (or architecture), logical cores and
    the CUDA GPU when there is one. The bundle's measure.sh writes the same form on a device."""
    cpu = _cpu_model() or platform.machine() or "unknown CPU"
    parts = [cpu, f"{os.cpu_count() or 0} logical cores"]
    if gpu := _gpu_name():
        parts.append(f"GPU {' '.join(gpu.split())}")
    return printable(", ".join(parts), 200)


def measurement_key(
    *,
    sha256: str,
    backend: str,
    backend_version: str,
    precision: str,
    batch: int,
    input_shape: tuple[int, ...],
    threads: int | None,
    machine: str,
) -> dict[str, Any]:
    """The cache key of one timing: every input that changes the figure."""
    return {
        "sha256": sha256,
        "backend": backend,
        "backend_version": backend_version,
        "precision": precision,
        "batch": batch,
        "input_shape": list(input_shape),
        "threads": threads,
        "machine": machine,
    }


def _canonical(key: dict[str, Any] | str) -> str:
    return key if isinstance(key, str) else json.dumps(key, sort_keys=True, separators=(",", ":"))


def stored_row_problems(row: dict[str, Any]) -> list[str]:
    """What is wrong with a row kept without its samples: the profiler's checks minus the samples'."""
    problems = row_problems({**row, "samples_ms": []})
    return [p for p in problems if "samples_ms" not in p]


def _parse_record(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """(canonical key, row) of one line, None when the line is not a well-formed record."""
    if len(raw) > MAX_LINE_BYTES:
        return None
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # damaged, truncated, not UTF-8, absurd nesting or numbers
        return None
    if not isinstance(record, dict) or record.get(RECORD_TAG) != RECORD_VERSION:
        return None
    key, row = record.get("key"), record.get("row")
    if not isinstance(key, dict) or set(key) != set(KEY_FIELDS) or not isinstance(row, dict):
        return None
    if stored_row_problems(row):
        return None
    return _canonical(key), row


class MeasurementCache:
    """The latency rows already measured, read from `path` (a JSON-lines file) once, appended to by `put`.
    `timed` counts the fresh timings recorded through this object."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.timed = 0
        self._rows: dict[str, dict[str, Any]] = {}
        for line in self._read().split(b"\n"):
            if line.strip() and (parsed := _parse_record(line)) is not None:
                self._rows[parsed[0]] = parsed[1]  # a later record of the same key wins

    def _where(self) -> str:
        return repr(str(self.path)[:200])

    def _check_file(self, fd: int) -> os.stat_result:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"measurement cache {self._where()} is not a regular file; delete it")
        if info.st_size > MAX_CACHE_BYTES:
            raise UserError(
                f"measurement cache {self._where()} is over {MAX_CACHE_BYTES >> 20} MiB; delete it "
                "(kdforge times the files again)"
            )
        return info

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags | _OPEN, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # the path is a symbolic link
                raise UserError(
                    f"measurement cache {self._where()} is a symbolic link; kdforge writes only a real "
                    "file there: remove the link"
                ) from None
            raise UserError(f"cannot use measurement cache {self._where()}: {exc.strerror}") from None

    def _read(self) -> bytes:
        if not self.path.exists() and not self.path.is_symlink():
            return b""
        with os.fdopen(self._open(os.O_RDONLY), "rb") as handle:
            self._check_file(handle.fileno())
            text = handle.read(MAX_CACHE_BYTES + 1)
        if len(text) > MAX_CACHE_BYTES:  # grew while read
            raise UserError(
                f"measurement cache {self._where()} is over {MAX_CACHE_BYTES >> 20} MiB; delete it"
            )
        return text

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, key: dict[str, Any] | str) -> dict[str, Any] | None:
        """The row recorded under `key` (a copy), None when it was never timed."""
        row = self._rows.get(_canonical(key))
        return dict(row) if row is not None else None

    def put(self, key: dict[str, Any] | str, row: dict[str, Any]) -> None:
        """Record one fresh timing under `key` (its samples and the `cached` flag are not kept), appended
        as one line and synced to disk before this returns."""
        if isinstance(key, str):
            key = json.loads(key)
        kept = {k: v for k, v in row.items() if k not in ("samples_ms", "cached")}
        if problems := stored_row_problems(kept):
            raise ValueError(f"not a latency row: {'; '.join(problems)}")
        line = json.dumps(
            {RECORD_TAG: RECORD_VERSION, "key": key, "row": kept}, separators=(",", ":"), allow_nan=False
        ).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._open(os.O_RDWR | os.O_APPEND | os.O_CREAT)  # read: the last byte
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process appending at once writes before or after
            size = self._check_file(fd).st_size
            # a line torn by a kill stays a damaged line of its own, not glued to this record
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            _write_all(fd, (b"\n" if torn else b"") + line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)  # closing drops the lock
        self._rows[_canonical(key)] = kept
        self.timed += 1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
