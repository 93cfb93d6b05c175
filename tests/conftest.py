"""Suite-wide settings: one torch thread per test process.

The suite runs under pytest-xdist on 2 cores; two processes with two OpenMP threads each oversubscribe
the machine and make small tensor ops orders of magnitude slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
