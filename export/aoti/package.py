"""`compile_package`: eval network -> torch.export (symbolic batch) -> AOTInductor `.pt2` with a sidecar;
`AotiPackage`: load one back (after the sidecar's corruption and trust checks, and the archive's entry
names) and run it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.device import resolve_device
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.reparam import reparameterize
from kdforge.compress.weights.formats import archive_entries
from kdforge.export.sidecar import PREPROCESSING_KEYS, read_sidecar, write_sidecar
from kdforge.export.trust import require_trusted
from torch import nn

REBUILD_HINT = "rebuild it with `kdforge deploy CHECKPOINT --backends aoti`"
KIND = "aoti-package"


def compile_package(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int, int],
    *,
    device: str = "cpu",
    max_batch: int = 1024,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Compile the reparameterized eval network into an AOTInductor package at `path` for `device`,
    batch dimension symbolic in [1, max_batch]; the package is written atomically, then its sidecar."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise UserError(f"{path.name}: an AOTInductor package file must end in .pt2")
    target = resolve_device(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = reparameterize(model).eval().to(target).float()
    example = torch.randn(2, *input_shape[1:], device=target)  # batch 2: a batch of 1 would specialise
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    # Compiled into a staging folder under its final name (the archive's inner folder is named after the
    # file), then moved into place; a killed compile leaves only the folder, which resume cleans up.
    staging = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    staging.mkdir(exist_ok=True)
    tmp = staging / path.name
    quiet = io.StringIO()
    try:
        with torch.inference_mode(False), contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(network, (example,), dynamic_shapes=({0: batch},))
            torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
        os.replace(tmp, path)
    except UserError:
        raise
    except Exception as exc:  # export and inductor raise many types; one line, the cause kept for --debug
        raise UserError(f"AOTInductor compile of {type(model).__name__} failed: {first_line(exc)}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info = {
        "kind": KIND,
        "device": target.type,
        "torch": torch.__version__,
        "precision": "fp32",
        "batch_range": [1, max_batch],
        "compile_seconds": round(time.perf_counter() - began, 2),
        **{k: v for k, v in (metadata or {}).items() if k in (*PREPROCESSING_KEYS, "name", "arch")},
    }
    write_sidecar(path, info)
    return path


def package_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar of a `.pt2` package, after checking the package matches it."""
    record = read_sidecar(path, REBUILD_HINT)
    if record.get("kind") != KIND:
        raise UserError(f"{Path(path).name}: its sidecar describes a {record.get('kind')!r}, not a {KIND}")
    return record


ALLOWED = ("archive_format", "archive_version", "byteorder", ".data/", "data/aotinductor/model/")
_LOADING = threading.Lock()  # one package extracts at a time: TMPDIR is pointed at its own folder


def check_entries(path: Path) -> None:
    """Refuse a package with an entry torch would extract outside its folder (`..`, absolute names), with
    duplicate names, or with entries a kdforge package never has (pickled programs, weights), before
    torch reads it; this holds even with --trust-code."""
    entries = archive_entries(path, repr(path.name))
    foreign = next((name for name in entries if not name.startswith(ALLOWED)), None)
    if foreign is not None:
        raise UserError(f"{path.name} has an entry {foreign[:120]!r} no AOTInductor package of kdforge has")
    if not any(name.startswith("data/aotinductor/model/") for name in entries):
        raise UserError(f"{path.name} is not an AOTInductor package (no data/aotinductor/model/)")


def _load_runner(path: Path) -> Any:
    """torch's package loader on `path`, extracting into a private folder: removed when loading fails, and
    when the loaded runner is garbage collected."""
    from torch.export.pt2_archive._package import AOTICompiledModel

    folder = tempfile.mkdtemp(prefix="kdforge-aoti-")
    # The loader extracts under $TMPDIR (it has no parameter for it): point it at our folder while it runs.
    with _LOADING:
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = folder
        try:
            loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved
    runner = AOTICompiledModel(loader)
    weakref.finalize(runner, shutil.rmtree, folder, True)
    return runner


class AotiPackage:
    """A loaded `.pt2` package on the device it was compiled for.

    A package is native code that runs as it loads: one kdforge did not build for this user (see
    kdforge.export.trust) is refused unless `trust_code`; entry names that escape the extraction folder
    are refused always."""

    def __init__(self, path: str | Path, trust_code: bool = False) -> None:
        self.path = Path(path)
        self.meta = package_metadata(path)
        require_trusted(self.path, self.meta, trust_code, "an AOTInductor package (a compiled program)")
        check_entries(self.path)
        self.device = resolve_device(self.meta["device"])
        # Loading imports torch.utils.cpp_extension, which warns that no CUDA toolkit is installed: true on a
        # CPU machine and irrelevant to running a compiled package.
        extension_log = logging.getLogger("torch.utils.cpp_extension")
        level = extension_log.level
        extension_log.setLevel(logging.ERROR)
        try:
            self.runner = _load_runner(self.path)
        except Exception as exc:  # a package from another torch build or a damaged archive
            raise UserError(f"cannot load {self.path.name}: {first_line(exc)}; {REBUILD_HINT}") from exc
        finally:
            extension_log.setLevel(level)
        self.min_batch, self.max_batch = self.meta["batch_range"]

    def check_batch(self, batch: int) -> None:
        if not self.min_batch <= batch <= self.max_batch:
            raise UserError(
                f"{self.path.name} was compiled for batches {self.min_batch}-{self.max_batch}, not {batch}"
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of preprocessed (N, C, H, W) images (any device; the result stays on the package's)."""
        self.check_batch(images.shape[0])
        with torch.inference_mode():
            out = self.runner(images.to(self.device, torch.float32))
        return out[0] if isinstance(out, list | tuple) else out
