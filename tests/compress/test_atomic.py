"""Atomic writes leave the process umask alone and give files the permissions the umask implies."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kdforge.compress.atomic import atomic_path, atomic_write_text

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/status").is_file(), reason="reads the umask from /proc/self/status (Linux)"
)


def _run(code: str) -> str:
    """Run `code` in a fresh interpreter (a fresh import, and a umask of its own) and return its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_proc
def test_import_and_writes_never_touch_the_umask(tmp_path: Path) -> None:
    """os.umask is the only way to read the umask from Python, and it sets it too: no call at all is safe."""
    out = _run(
        f"""
        import os

        def umask_now():
            with open("/proc/self/status") as status:
                return next(line.split()[1] for line in status if line.startswith("Umask:"))

        os.umask(0o027)
        before = umask_now()

        def refuse(mask):
            raise AssertionError("os.umask called: it changes the umask of every thread")

        os.umask = refuse
        import kdforge.compress.atomic as atomic

        after_import = umask_now()
        atomic.atomic_write_text({str(tmp_path / "a.txt")!r}, "hello")
        print(before, after_import, umask_now())
        """
    )
    assert out.split() == ["0027", "0027", "0027"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_written_files_get_the_permissions_the_umask_implies(tmp_path: Path, umask: int) -> None:
    """Like a plain open(): 0o666 & ~umask, also when replacing a file that had other permissions."""
    target = tmp_path / "result.json"
    target.write_text("old")
    target.chmod(0o600)
    out = _run(
        f"""
        import os
        os.umask({umask:#o})
        from kdforge.compress.atomic import atomic_write_text
        atomic_write_text({str(target)!r}, "new")
        print(oct(os.stat({str(target)!r}).st_mode & 0o777))
        """
    )
    assert int(out, 8) == 0o666 & ~umask
    assert target.read_text() == "new"


def test_the_temporary_is_a_hidden_sibling_removed_on_failure(tmp_path: Path) -> None:
    """remove_stale_temporaries finds `.<name>.*.tmp`; a failed write leaves neither it nor a target."""
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.onnx.") and tmp.suffix == ".tmp"
        assert stat.S_ISREG(tmp.stat().st_mode) and tmp.stat().st_size == 0
        raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(target, "ok")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
