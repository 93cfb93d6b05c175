"""Suite-wide settings, applied before any test module imports `kernels`.

- Without a CUDA device, TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors. The interpreter is
  chosen when a kernel is decorated, so it must be set here, before `kernels` is imported (later it
  fails with "0 active drivers"). With a GPU the kernels compile and the same tests run on CUDA.
- One torch thread per test process: on 2 cores, processes with two OpenMP threads each oversubscribe
  the machine and make small tensor ops orders of magnitude slower.
- TorchInductor's cache (AOTInductor exports, torch.compile; about 0.5 GB a run, most of it precompiled
  headers keyed on the venv's path) goes into the run's temporary folder, which a green run deletes,
  instead of piling up in /tmp/torchinductor_<user> across fresh clones. A cache dir set by the caller wins.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """Point TorchInductor's cache at the run's temporary root, shared by all xdist workers."""
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    basetemp = config._tmp_path_factory.getbasetemp()
    run_root = basetemp.parent if "PYTEST_XDIST_WORKER" in os.environ else basetemp
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(run_root / "torchinductor")
