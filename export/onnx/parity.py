"""Parity of an ONNX file with the PyTorch network it came from, in ONNX Runtime, on real samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from kdforge.compress.errors import UserError, first_line
from torch import nn

ORT_PROVIDERS = {  # the provider asked for first, then the fallbacks for nodes it does not take
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def ort_session(
    path: str | Path, threads: int | None = None, spinning: bool = True, provider: str = "cpu"
):  # -> onnxruntime.InferenceSession
    """An ONNX Runtime session on `provider` (cpu, cuda or tensorrt, CPU as fallback for unsupported
    nodes); `threads` intra-op threads (default: torch's). `spinning=False` stops idle pool threads from
    busy-waiting, so sessions timed in turn do not steal each other's cores."""
    import onnxruntime as ort

    providers = ORT_PROVIDERS[provider]
    if providers[0] not in ort.get_available_providers():
        raise UserError(
            f"this ONNX Runtime has no {providers[0]} (it has {', '.join(ort.get_available_providers())}); "
            "install the GPU build as the README's 'GPU machines' section says"
        )

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise UserError(f"ONNX Runtime cannot load {str(path)!r}: {first_line(exc)}") from exc


@dataclass
class ParityResult:
    """Worst disagreement between PyTorch and ONNX Runtime at one batch size."""

    batch: int
    max_abs: float
    max_rel: float
    top1_agreement: float  # fraction of samples with the same argmax


def check_parity(
    model: nn.Module,
    path: str | Path,
    samples: torch.Tensor,
    batches: tuple[int, ...] = (1, 8),
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> list[ParityResult]:
    """Compare `model` (eval) with the ONNX file on `samples` at each batch size; UserError if any
    element is outside rtol/atol, naming the worst output element and its error."""
    session = ort_session(path)
    name = session.get_inputs()[0].name
    model = model.eval().cpu().float()
    results = []
    for batch in batches:
        x = samples[:batch].float().cpu()
        if x.shape[0] < batch:
            raise UserError(f"parity check needs {batch} samples, got {x.shape[0]}")
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {name: x.numpy().astype(np.float32)})[0].astype(np.float32)
        error = np.abs(got - expected)
        allowed = atol + rtol * np.abs(expected)
        worst = np.unravel_index(int(np.argmax(error - allowed)), error.shape)
        if (error > allowed).any():
            raise UserError(
                f"ONNX parity failed at batch {batch}: output {tuple(int(i) for i in worst)} is "
                f"{got[worst]:.6g} in ONNX Runtime vs {expected[worst]:.6g} in PyTorch "
                f"(|error| {error[worst]:.3g} > {allowed[worst]:.3g} = atol {atol} + rtol {rtol} x |value|)"
            )
        results.append(
            ParityResult(
                batch,
                float(error.max()),
                float((error / (np.abs(expected) + 1e-12)).max()),
                float((got.argmax(1) == expected.argmax(1)).mean()),
            )
        )
    return results
