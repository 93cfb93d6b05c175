"""Suite-wide settings, applied before any test module imports `kernels`.

- Without a CUDA device, TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors. The interpreter is
  chosen when a kernel is decorated, so it must be set here, before `kernels` is imported (later it
  fails with "0 active drivers"). With a GPU the kernels compile and the same tests run on CUDA.
- One torch thread per test process: on 2 cores, processes with two OpenMP threads each oversubscribe
  the machine and make small tensor ops orders of magnitude slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(1)
