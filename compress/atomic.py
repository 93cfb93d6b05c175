"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory.

A reader (or a run killed mid-write) only ever sees the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def _new_temporary(path: Path) -> Path:
    """Create `.<name>.<random>.tmp` next to `path`, empty, with the permissions a plain `open()` gives.

    The kernel applies the umask to mode 0o666 at creation, so the umask is never read or changed
    (mkstemp's files are owner-only, and reading the umask means setting it: racy in threaded programs).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, _CREATE, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {str(path)!r}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files (and staging folders, see export.aoti) of writes that were killed mid-way
    (SIGKILL skips the cleanup that an exception gets). Call it only on a directory this process holds
    (see compress.runlock)."""
    folder = Path(directory)
    removed = list(folder.glob(".*.tmp")) if folder.is_dir() else []
    for tmp in removed:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
