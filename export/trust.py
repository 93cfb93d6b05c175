"""Which compiled programs this user may load without saying so: an AOTInductor package or a TensorRT engine
is native code that runs when loaded, and its sidecar's SHA-256 proves nothing when the same person hands
over both. kdforge signs the sidecars of what it builds with an HMAC-SHA256 under a per-user secret key
(`$KDFORGE_HOME/trust.key`, mode 0600; KDFORGE_HOME defaults to ~/.config/kdforge); anything else is
refused unless the user passes --trust-code (`trust_code=True` in Python)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from kdforge.compress.errors import UserError

KEY_NAME = "trust.key"
FIELD = "signature"


def kdforge_home() -> Path:
    """Where kdforge keeps per-user state: $KDFORGE_HOME, else ~/.config/kdforge."""
    return Path(os.environ.get("KDFORGE_HOME") or Path.home() / ".config" / "kdforge")


def _read_key(path: Path) -> bytes | None:
    """The key at `path`, None when there is none; refused when others could read or replace it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read kdforge's trust key {str(path)!r} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        text = handle.read(200).strip()
    owner_ok = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    if not stat.S_ISREG(info.st_mode) or not owner_ok or info.st_mode & 0o077:
        raise UserError(
            f"kdforge's trust key {str(path)!r} is not a private file of yours; "
            f"remove it (kdforge makes a new one) or chmod 600 it"
        )
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UserError(f"kdforge's trust key {str(path)!r} is damaged; remove it (kdforge makes a new one)")
    return key


def user_key(create: bool = False) -> bytes | None:
    """This user's signing key; made atomically when `create` and missing (several processes may race:
    each writes its own private temporary file and the first hard link into place wins)."""
    path = kdforge_home() / KEY_NAME
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trust.key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise UserError(
            f"cannot create kdforge's trust key in {str(path.parent)!r} ({exc.strerror}); set KDFORGE_HOME "
            "to a private writable folder"
        ) from None
    return _read_key(path)


def _digest(record: dict[str, Any], key: bytes) -> str:
    body = json.dumps({k: v for k, v in record.items() if k != FIELD}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def sign(record: dict[str, Any]) -> dict[str, Any]:
    """The sidecar record with this user's signature over all its fields (the file's SHA-256 included)."""
    key = user_key(create=True) or b""
    return {**record, FIELD: _digest(record, key)}


def signed_here(record: dict[str, Any]) -> bool:
    """Whether this user's kdforge signed the record (the artifact it describes was built here)."""
    key = user_key()
    given = record.get(FIELD)
    return key is not None and isinstance(given, str) and hmac.compare_digest(given, _digest(record, key))


def require_trusted(path: str | Path, record: dict[str, Any], trust_code: bool, what: str) -> None:
    """Refuse to load a compiled program kdforge did not build for this user, unless `trust_code`."""
    if trust_code or signed_here(record):
        return
    raise UserError(
        f"{Path(path).name} is {what} that kdforge did not build here, and loading it runs its native code; "
        "rebuild it with `kdforge deploy`, or pass --trust-code (trust_code=True in Python) if you trust "
        "whoever built it"
    )
