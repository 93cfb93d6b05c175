"""One run per directory: an exclusive `flock` on `<out>/.kdforge.lock`, held for the run's lifetime.

The lock file also marks the folder as kdforge's: kdforge writes into an existing folder only when it is
empty or is a run folder (`is_run_dir`), so `--out ~/my-project` never overwrites a user's own files.

The kernel drops the lock when its process dies, however it dies, so a lock left by a killed run is
simply taken (with a warning naming the dead process); a live holder makes a second run stop with one
line naming it. The file records who holds it (pid, host, start time, command) for that message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import yaml
from kdforge.compress.errors import UserError
from kdforge.compress.layout import LOCK_NAME, RunLayout

__all__ = ["LOCK_NAME", "check_run_dir", "is_run_dir", "run_lock"]
RECORD_KEYS = {  # what kdforge versions before the lock file leave in a run folder, and keys each holds
    "result.json": {"best_path", "last_path", "best_epoch", "test_top1"},  # a training stage
    "results.json": {"recipe", "rows"},  # `kdforge run`'s folder
    "deploy.json": {"checkpoint_sha256", "options", "latency"},  # a deploy folder
}
CONFIG_KEYS = {"name", "seed", "data", "teacher", "student", "method"}  # a stage's config.yaml
MAX_RECORD_BYTES = 4 * 1024 * 1024


def _record_keys(path: Path) -> set[str]:
    """The top-level keys of a JSON or YAML record kdforge wrote (empty: missing, too big or unreadable)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return set()
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            tree = json.loads(text)
        else:
            from kdforge.compress.config import parse_yaml

            tree = parse_yaml(text, str(path))
    except (OSError, ValueError, RecursionError, UserError, yaml.YAMLError):
        return set()
    return set(tree) if isinstance(tree, dict) else set()


def is_run_dir(folder: Path, depth: int = 1) -> bool:
    """Whether kdforge made `folder`: it holds the lock file kdforge creates on first use, a record an earlier
    kdforge wrote (result.json, results.json, deploy.json or a config.yaml beside checkpoints/), or only
    run folders (a pipeline's stages that `kdforge teacher`/`compress` trained on their own)."""
    lock = folder / LOCK_NAME
    if lock.is_file() and not lock.is_symlink():
        return True
    if any(keys <= _record_keys(folder / name) for name, keys in RECORD_KEYS.items()):
        return True
    layout = RunLayout(folder)
    if layout.checkpoints.is_dir() and _record_keys(layout.config_yaml) >= CONFIG_KEYS:
        return True
    if depth == 0:
        return False
    entries = _entries(folder, 64)
    return (
        bool(entries)
        and len(entries) < 64
        and all((folder / e).is_dir() and is_run_dir(folder / e, depth - 1) for e in entries)
    )


def _entries(folder: Path, limit: int) -> list[str]:
    """Up to `limit` names in `folder` (a huge folder is not listed in full)."""
    names = []
    with os.scandir(folder) as found:
        for entry in found:
            names.append(entry.name)
            if len(names) >= limit:
                break
    return names


def check_run_dir(out_dir: str | Path) -> None:
    """Refuse (one line) an existing non-empty folder that kdforge did not make, before anything is written:
    a run writes config.yaml, metrics.jsonl, report.md, ... and would replace the user's own."""
    out = Path(out_dir)
    if not out.exists() and not out.is_symlink():
        return
    where = repr(str(out)[:200])
    if not out.is_dir():
        raise UserError(f"{where} is not a folder; choose a new or empty folder for the run (--out)")
    try:
        entries = _entries(out, 4)
    except OSError as exc:
        raise UserError(f"cannot use {where} as a run directory: {exc.strerror}") from None
    if entries and not is_run_dir(out):
        held = ", ".join(repr(e[:40]) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(
            f"{where} holds files kdforge did not write ({held}); a run would replace files there: "
            "choose a new or empty folder (--out)"
        )
    for folder in (out, RunLayout(out).checkpoints):
        linked = [e for e in _entries(folder, 1000) if (folder / e).is_symlink()] if folder.is_dir() else []
        if linked or (folder != out and folder.is_symlink()):
            name = repr((linked or [folder.name])[0][:40])
            raise UserError(
                f"{where} holds a symbolic link ({name}); kdforge writes only real files in a run "
                "folder, so that a run cannot write elsewhere: replace the link or choose a new --out"
            )


def _holder(handle: int) -> dict:
    os.lseek(handle, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(handle, 4096).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}


@contextlib.contextmanager
def run_lock(out_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold `out_dir`'s lock for the block; UserError (one line) if a live process holds it."""
    if not enabled:
        yield
        return
    out = Path(out_dir)
    check_run_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise UserError(f"cannot use {str(out)!r} as a run directory: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(handle)
            raise UserError(
                f"{str(out)!r} is in use by kdforge process {who.get('pid', '?')} on {who.get('host', '?')} "
                f"(since {who.get('started', '?')}); wait for it to finish or choose another --out"
            ) from None
        previous = _holder(handle)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            warnings.warn(
                f"taking over {out / LOCK_NAME} left by process {previous['pid']} (no longer running)",
                stacklevel=3,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:500],
        }
        os.ftruncate(handle, 0)
        os.lseek(handle, 0, os.SEEK_SET)
        os.write(handle, json.dumps(record).encode())
        try:
            yield
        finally:
            os.ftruncate(handle, 0)  # a clean exit leaves no holder to report
    finally:
        os.close(handle)  # closing drops the flock
