"""One run per directory: an exclusive `flock` on `<out>/.kdforge.lock`, held for the run's lifetime.

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

from kdforge.compress.errors import UserError

LOCK_NAME = ".kdforge.lock"


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
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
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
