"""`bench_artifact`: time a checkpoint, an ONNX file, an AOTInductor package or a TensorRT engine on every
requested backend and batch size; what a backend needs (ONNX, .pt2, engine) is built in a scratch folder."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.export.bench.available import available_backends, check_backends, why_unavailable
from kdforge.export.bench.backends import (
    ORT_BACKENDS,
    AotInductor,
    Backend,
    OnnxRuntime,
    TensorRT,
    TorchCompile,
    TorchEager,
)
from kdforge.export.bench.timing import TimingPolicy, measure_interleaved

NATIVE_BACKEND = {"checkpoint": "aoti", "aoti": "aoti", "engine": "tensorrt", "onnx": "onnxruntime"}
RUNS_ON = {  # which backends can run each kind of artifact
    "checkpoint": ("torch", "torch-compile", "aoti", *ORT_BACKENDS, "tensorrt"),
    "onnx": (*ORT_BACKENDS, "tensorrt"),
    "aoti": ("aoti",),
    "engine": ("tensorrt",),
}


def _runners(
    artifact: Any, backends: tuple[str, ...], work: Path, device: str, trust_code: bool = False
) -> dict[str, Backend]:
    """One backend object per name, building the ONNX / .pt2 / engine it needs from the artifact (what it
    builds is signed here; a given .pt2 or engine needs `trust_code` unless kdforge built it here)."""
    shape = (1, *artifact.input_shape)
    runners: dict[str, Backend] = {}
    onnx_path = artifact.path if artifact.kind == "onnx" else None
    for name in backends:
        if name not in RUNS_ON[artifact.kind]:
            raise UserError(
                f"backend {name} cannot run {artifact.path.name} (a {artifact.kind}); it runs on "
                f"{', '.join(RUNS_ON[artifact.kind])}, and every backend runs a kdforge checkpoint"
            )
        if name in ("torch", "torch-compile"):
            runners[name] = (TorchEager if name == "torch" else TorchCompile)(artifact.model, shape, device)
        elif name == "aoti":
            path = artifact.path
            if artifact.kind == "checkpoint":
                from kdforge.export.aoti import compile_package

                path = compile_package(
                    artifact.model,
                    work / "model.pt2",
                    shape,
                    device=device,
                    metadata={"input_shape": list(artifact.input_shape)},
                )
            runners[name] = AotInductor(path, trust_code=trust_code)
        else:
            if onnx_path is None and artifact.kind == "checkpoint":
                from kdforge.export.onnx import to_onnx

                onnx_path = to_onnx(artifact.model, work / "model.onnx", shape)
            if name in ORT_BACKENDS:
                alone = len(backends) == 1
                runners[name] = OnnxRuntime(onnx_path, provider=ORT_BACKENDS[name], alone=alone)
            else:
                engine = artifact.path
                if artifact.kind != "engine":
                    from kdforge.export.tensorrt import build_engine

                    engine = build_engine(onnx_path, work / "model.engine", "fp32")
                runners[name] = TensorRT(engine, trust_code=trust_code)
    return runners


def bench_artifact(
    path: str | Path,
    backends: tuple[str, ...] | None = None,
    batches: tuple[int, ...] = (1, 64),
    policy: TimingPolicy | None = None,
    input_shape: tuple[int, int, int] | None = None,
    device: str = "auto",
    native: str = "never",
    trust_code: bool = False,
) -> list[dict[str, Any]]:
    """Latency rows (one per backend and batch) for the artifact at `path`; backends share rounds.
    `backends` None: every backend available here that can run this kind of artifact. `native` (one of
    DeployConfig.native's values: bench's --native is deploy's) adds the rows of kdforge-runner timing the
    same artifact (a checkpoint: its .pt2) afterwards: 'always', or 'auto' when `kdforge build-native`
    has built a runner with its backend.
    A .pt2 package or engine runs native code: one kdforge did not build here needs `trust_code`."""
    from kdforge.export.artifact import open_artifact
    from kdforge.export.trust import require_trusted

    if backends is not None:
        check_backends(backends)
    if any(batch < 1 for batch in batches):
        raise UserError(f"batch sizes must be >= 1, got {list(batches)}")
    artifact = open_artifact(path)
    if artifact.kind in ("aoti", "engine"):  # before any backend or kdforge-runner loads it
        what = "an AOTInductor package" if artifact.kind == "aoti" else "a TensorRT engine"
        require_trusted(artifact.path, _sidecar(artifact), trust_code, f"{what} (a compiled program)")
    if input_shape is not None and tuple(input_shape) != tuple(artifact.input_shape):
        raise UserError(
            f"{artifact.path.name} takes input (C, H, W) = {tuple(artifact.input_shape)}, "
            f"not {tuple(input_shape)}; drop --input-shape or pass the matching one"
        )
    if backends is None:
        backends = tuple(b for b in available_backends() if b in RUNS_ON[artifact.kind])
        if not backends:  # e.g. an engine on a machine without TensorRT: say what is missing
            reasons = "; ".join(filter(None, (why_unavailable(b) for b in RUNS_ON[artifact.kind])))
            raise UserError(f"nothing here can run {artifact.path.name}: {reasons}")
    policy = policy or TimingPolicy()
    with tempfile.TemporaryDirectory() as work:
        runners = _runners(artifact, backends, Path(work), device, trust_code)
        rows = []
        for batch in batches:
            calls = {name: runner.prepare(batch) for name, runner in runners.items()}
            timers = {name: runner.timer() for name, runner in runners.items()}
            timed = measure_interleaved(calls, batch, policy, timers=timers)
            rows += [{**runners[name].describe(), **stats.as_dict()} for name, stats in timed.items()]
        if _wants_native(native, artifact, runners):
            rows += _native_rows(artifact, runners, Path(work), batches, policy, device)
    return rows


def _wants_native(native: str, artifact: Any, runners: dict[str, Backend]) -> bool:
    """Whether kdforge-runner times the artifact too: always, never, or (auto) when a built runner has its
    backend; on a checkpoint, auto uses the .pt2 the aoti backend compiled rather than compiling one."""
    if native != "auto":
        return native == "always"
    from kdforge.export.native import find_runner

    try:
        runner = find_runner()
    except UserError:
        return False
    if artifact.kind == "checkpoint" and not isinstance(runners.get("aoti"), AotInductor):
        return False
    return NATIVE_BACKEND[artifact.kind] in runner.backends


def _sidecar(artifact: Any) -> dict[str, Any]:
    """The checked sidecar of a compiled artifact."""
    from kdforge.export.sidecar import read_sidecar

    return read_sidecar(artifact.path, "rebuild it with `kdforge deploy`")


def _native_rows(
    artifact: Any,
    runners: dict[str, Backend],
    work: Path,
    batches: tuple[int, ...],
    policy: TimingPolicy,
    device: str,
) -> list[dict[str, Any]]:
    """kdforge-runner on the artifact itself, or on a .pt2 compiled from a checkpoint."""
    from kdforge.export.native import run_native

    target = artifact.path
    if artifact.kind == "checkpoint":
        aoti = runners.get("aoti")
        if isinstance(aoti, AotInductor):
            target = aoti.path
        else:
            from kdforge.export.aoti import compile_package

            shape = (1, *artifact.input_shape)
            meta = {"input_shape": list(artifact.input_shape)}
            target = compile_package(artifact.model, work / "native.pt2", shape, device=device, metadata=meta)
    return run_native(target, batches, policy)
