"""The fused loss kernels' bytes-moved model, in N*e (N = B*C logits of e bytes): what each kernel reads
and writes of the (B, C) logits and gradients, from the walks it makes over a row.

A kernel walks each row of both logits one or more times and writes each requested gradient once. Its
first walk reads both logits from DRAM (2 N*e). A further walk over a row of one chunk (C <= CHUNK)
re-reads what the same program has just read, served by L1/L2, so the model does not count it; over a
longer row it counts 2 N*e again. `tests/kernels/test_traffic.py` counts the kernels' actual loads and
stores in the Triton interpreter and checks them against `walks` below; `benchmarks/loss_kernels.py`
turns `model_traffic` into GB/s.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdforge.kernels.triton_common import CHUNK

FORWARD_PARTS = {"kd": ("forward",), "dkd": ("forward",), "dist": ("row", "column")}


@dataclass(frozen=True)
class KernelWalks:
    """One kernel's passes over both logits and the gradient buffers it writes (each once)."""

    walks: int
    writes: int

    def dram(self, classes: int) -> int:
        """N*e from/to DRAM in the model: re-walks of one-chunk rows are cache hits."""
        counted = self.walks if classes > CHUNK else min(self.walks, 1)
        return 2 * counted + self.writes


def walks(
    loss: str, classes: int, *, teacher_grad: bool = False, standardize: bool = False
) -> dict[str, KernelWalks]:
    """Per kernel of `loss` ("kd", "dkd", "dist"), in launch order. KD and DKD: a forward walk (after a
    moments walk with `standardize`) that writes nothing, and a backward walk that writes the gradients:
    5 N*e for rows of one chunk, 7 with `standardize` over longer rows."""
    grads = 2 if teacher_grad else 1
    moments = 1 if standardize else 0
    if loss == "dist":
        # the gradient kernel's first walk reduces sum(g y), which needs the column kernel's coefficients
        row, column = KernelWalks(1 + moments, 0), KernelWalks(1, 0)
        return {"row": row, "column": column, "grad": KernelWalks(2, grads)}
    if loss not in ("kd", "dkd"):
        raise ValueError(f"no traffic model for loss {loss!r}")
    return {"forward": KernelWalks(1 + moments, 0), "backward": KernelWalks(1, grads)}


def model_traffic(
    loss: str, classes: int, *, teacher_grad: bool = False, standardize: bool = False
) -> dict[str, int]:
    """N*e each kernel moves from/to DRAM in the model (docs/kernels.md, "Bytes moved")."""
    kernels = walks(loss, classes, teacher_grad=teacher_grad, standardize=standardize)
    return {name: kernel.dram(classes) for name, kernel in kernels.items()}
