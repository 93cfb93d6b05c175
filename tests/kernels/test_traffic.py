"""The bytes-moved model (`kdforge.kernels.traffic`) against the kernels' actual memory accesses.

The Triton interpreter executes every `tl.load`/`tl.store` through one builder; the fixture below wraps
those two calls and adds up, per tensor, the bytes of the lanes that the mask lets through. A forward and
a backward then report how many times they read each logit tensor and wrote each gradient, in N*e, to be
compared with the walks the model (and so the benchmark's GB/s and docs/kernels.md's table) assumes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from kdforge.kernels import dist_loss, dkd_loss, kd_loss
from kdforge.kernels.traffic import FORWARD_PARTS, model_traffic, walks
from kdforge.kernels.validation import interpreting

pytestmark = pytest.mark.skipif(
    not interpreting(), reason="counts loads and stores in the Triton interpreter (TRITON_INTERPRET=1)"
)

B = 3
CHUNKED, ONE_CHUNK = 5003, 100  # > 2048: three chunks per row; <= 2048: one


class AccessCounter:
    """Bytes loaded from and stored to the given tensors by interpreted Triton kernels."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import triton.runtime.interpreter as interpreter

        builder = interpreter.interpreter_builder
        self._log: list[tuple[str, np.ndarray, int]] = []
        load, store = builder.create_masked_load, builder.create_masked_store

        def counted_load(ptrs, mask, other, *rest):
            self._record("read", ptrs, mask, interpreter)
            return load(ptrs, mask, other, *rest)

        def counted_store(ptrs, value, mask, *rest):
            self._record("write", ptrs, mask, interpreter)
            return store(ptrs, value, mask, *rest)

        monkeypatch.setattr(builder, "create_masked_load", counted_load)
        monkeypatch.setattr(builder, "create_masked_store", counted_store)

    def _record(self, kind: str, ptrs, mask, interpreter) -> None:
        addresses = ptrs.data.ravel()
        if mask is not None:
            addresses = addresses[np.broadcast_to(mask.data, ptrs.data.shape).ravel().astype(bool)]
        size = np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize
        self._log.append((kind, addresses, size))

    def take(self, **tensors: torch.Tensor | None) -> Counter:
        """N*e read or written per named tensor since the last call, e.g. {("s", "read"): 2.0}."""
        moved: Counter = Counter()
        for kind, addresses, size in self._log:
            for name, tensor in tensors.items():
                if tensor is None:
                    continue
                low = tensor.data_ptr()
                hits = int(((addresses >= low) & (addresses < low + tensor.nbytes)).sum())
                if hits:
                    moved[(name, kind)] += hits * size
        self._log.clear()
        return Counter({(name, kind): n / tensors[name].nbytes for (name, kind), n in moved.items()})


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> AccessCounter:
    return AccessCounter(monkeypatch)


def _loss(name: str, s, t, standardize: bool):
    if name == "kd":
        return kd_loss(s, t, 4.0, standardize=standardize, backend="triton")
    if name == "dkd":
        target = torch.arange(B) * 37 % s.shape[1]
        return dkd_loss(s, t, target, standardize=standardize, backend="triton")
    return dist_loss(s, t, temperature=4.0, standardize=standardize, backend="triton")


def _expected(parts: dict, names: tuple[str, ...], teacher_grad: bool) -> Counter:
    """Reads of s and t and writes of the gradients that the model's walks make in these kernels."""
    want: Counter = Counter()
    for name in names:
        kernel = parts[name]
        want[("s", "read")] += kernel.walks
        want[("t", "read")] += kernel.walks
        if kernel.writes:
            want[("grad_s", "write")] += 1
            if teacher_grad:
                want[("grad_t", "write")] += 1
    return Counter({key: value for key, value in want.items() if value})


CASES = [
    # (loss, classes, standardize, teacher_grad)
    *[(loss, CHUNKED, False, False) for loss in ("kd", "dkd", "dist")],
    *[(loss, CHUNKED, True, True) for loss in ("kd", "dkd", "dist")],
    *[(loss, ONE_CHUNK, True, False) for loss in ("kd", "dkd", "dist")],
    *[(loss, ONE_CHUNK, False, True) for loss in ("kd", "dkd")],
]


@pytest.mark.parametrize(("loss", "classes", "standardize", "teacher_grad"), CASES)
def test_kernels_read_and_write_what_the_model_says(
    counter: AccessCounter, loss: str, classes: int, standardize: bool, teacher_grad: bool
) -> None:
    g = torch.Generator().manual_seed(classes)
    s = torch.randn(B, classes, generator=g).requires_grad_()
    t = torch.randn(B, classes, generator=g).requires_grad_(teacher_grad)
    parts = walks(loss, classes, teacher_grad=teacher_grad, standardize=standardize)
    forward_names = FORWARD_PARTS[loss]
    backward_names = tuple(name for name in parts if name not in forward_names)

    result = _loss(loss, s, t, standardize)
    forward = counter.take(s=s, t=t)  # the forward writes no gradient buffer: none exists yet
    result.backward(torch.tensor(2.0))
    backward = counter.take(s=s, t=t, grad_s=s.grad, grad_t=t.grad)

    assert forward == _expected(parts, forward_names, teacher_grad), forward
    assert backward == _expected(parts, backward_names, teacher_grad), backward


def test_the_model_counts_rewalks_of_one_chunk_rows_as_cache_hits() -> None:
    """The DRAM figures the benchmark divides by: docs/kernels.md's table, row by row. KD and DKD move
    5 N*e (forward: read both logits; backward: read both again, write the student's gradient)."""
    for loss in ("kd", "dkd"):
        assert model_traffic(loss, ONE_CHUNK) == {"forward": 2, "backward": 3}
        assert sum(model_traffic(loss, CHUNKED).values()) == 5
        assert sum(model_traffic(loss, ONE_CHUNK, standardize=True).values()) == 5
        assert sum(model_traffic(loss, CHUNKED, standardize=True).values()) == 7
        assert sum(model_traffic(loss, ONE_CHUNK, teacher_grad=True).values()) == 6
    assert sum(model_traffic("dist", ONE_CHUNK).values()) == 7
    assert sum(model_traffic("dist", CHUNKED).values()) == 9
    assert sum(model_traffic("dist", CHUNKED, standardize=True, teacher_grad=True).values()) == 12
