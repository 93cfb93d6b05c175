"""The wheel as a user gets it: built from a copy of this checkout, installed into a fresh virtual environment
(its dependencies borrowed from the project's environment, without the project's own editable kdforge) and
run from a folder outside the checkout. It holds one package, `kdforge`, with the runner's C++ sources and
CMake files inside, and `kdforge build-native` builds kdforge-runner from those."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,  # about 2 minutes on 2 cores, most of it compiling the runner
    pytest.mark.skipif(
        shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler"
    ),
]
REPO = Path(__file__).resolve().parents[1]
NOT_SOURCES = (".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__", ".*_cache", ".hypo*")


@dataclass
class Installed:
    """A virtual environment with the wheel installed, and a working folder outside the checkout."""

    wheel: Path
    venv: Path
    env: dict[str, str]
    cwd: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def run(self, *argv: str | Path) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in argv]
        return subprocess.run(
            command, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600
        )


def _borrowed_dependencies(folder: Path) -> Path:
    """A folder of links to everything in the project's site-packages except its kdforge install (the
    editable finder and its .pth, or an installed kdforge), for the new environment's sys.path."""
    folder.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name
        if name.startswith(("kdforge", "__editable__", "__pycache__")) or name.endswith(".pth"):
            continue
        (folder / name).symlink_to(entry)
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a clean copy: setuptools' build/ of an earlier build never leaks in
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES), symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (root / "dist").glob("kdforge-*.whl")
    venv = (root / "venv").resolve()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "_borrowed_dependencies.pth").write_text(f"{_borrowed_dependencies(root / 'deps')}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["XDG_CACHE_HOME"] = str(root / "cache")
    work = root / "work"
    work.mkdir()
    done = Installed(wheel, venv, env, work)
    # pip comes from the borrowed folder; it installs into the new environment (sys.prefix)
    install = done.run(python, *pip[1:], "install", "--no-deps", "--no-index", wheel)
    assert install.returncode == 0, install.stdout + install.stderr
    return done


def test_the_wheel_holds_one_package_with_the_runner_sources(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {name for name in top if not name.endswith(".dist-info")} == {"kdforge"}, top  # no compress/...
    native = {name.removeprefix("kdforge/export/native/") for name in names if "/native/" in name}
    shipped = {p.name for p in (REPO / "export" / "native").iterdir() if p.suffix in (".cpp", ".h", ".cmake")}
    assert {"CMakeLists.txt", "runner.cmake", "main.cpp", "build.py", "run.py"} <= native
    assert shipped <= native, shipped - native


def test_the_installed_package_is_the_wheels_and_the_old_names_are_gone(installed: Installed) -> None:
    code = "import kdforge, kdforge.kernels, kdforge.export.native.build as native; "
    code += "print(kdforge.__file__, kdforge.kernels.__file__, native.SOURCE_DIR)"
    done = installed.run(installed.python, "-c", code)
    assert done.returncode == 0, done.stderr
    for path in done.stdout.split():
        assert Path(path).resolve().is_relative_to(installed.venv), done.stdout  # not the checkout
    for name in ("kernels", "compress", "export"):
        old = installed.run(installed.python, "-c", f"import {name}")
        assert old.returncode == 1 and f"No module named '{name}'" in old.stderr, old.stderr


def test_the_cli_front_door_and_doctor(installed: Installed) -> None:
    shown = installed.run("kdforge", "--help")
    assert shown.returncode == 0 and "build-native" in shown.stdout, shown.stderr
    doctor = installed.run("kdforge", "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "torch" in doctor.stdout


def test_build_native_from_the_installed_sources(installed: Installed) -> None:
    build = installed.cwd / "runner"
    done = installed.run("kdforge", "build-native", "--build-dir", build)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"built {build / 'kdforge-runner'}; backends compiled in: aoti" in done.stdout
    cache = (build / "CMakeCache.txt").read_text()
    assert f"CMAKE_HOME_DIRECTORY:INTERNAL={installed.venv}/" in cache  # the sources in the installed wheel
    shown = installed.run(build / "kdforge-runner", "--help")
    assert shown.returncode == 0 and shown.stdout.startswith("usage: kdforge-runner"), shown.stderr
