"""The deploy half of the pipeline for one checkpoint: merge -> ONNX (parity-checked) -> fp16 / int8 Q/DQ ->
AOTInductor package and TensorRT engines where those backends run -> accuracy per precision and runtime ->
latency per backend, precision and batch -> deploy.md / deploy.json / deploy.csv / latency.png."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.atomic import atomic_write_text, remove_stale_temporaries
from kdforge.compress.config import DeployConfig, RunConfig, from_dict
from kdforge.compress.data import build_data
from kdforge.compress.errors import UserError
from kdforge.compress.train.checkpoint import load_model, read_checkpoint, versions
from kdforge.export.bench import COV_WARNING, TimingPolicy, measure_interleaved
from kdforge.export.bench.available import available_backends, check_backends
from kdforge.export.bench.backends import (
    ORT_BACKENDS,
    AotInductor,
    Backend,
    OnnxRuntime,
    TensorRT,
    TorchCompile,
    TorchEager,
)
from kdforge.export.onnx import check_parity, to_onnx
from kdforge.export.quantize import CALIBRATION_METHODS, onnx_top1, to_fp16, to_int8
from kdforge.export.quantize.accuracy import top1
from kdforge.export.sidecar import sha256
from torch import nn

PRECISIONS = ("fp32", "fp16", "int8", "int8-u8")  # int8: TensorRT's form; int8-u8: ONNX Runtime CPU's
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")  # the u8-activation form is for ONNX Runtime's CPU kernels
Log = Callable[[str], None]
NATIVE_CHOICES = ("auto", "always", "never")


@dataclass
class DeployOptions:
    """What to build and measure. `backends` None: every backend that can run here."""

    precisions: tuple[str, ...] = PRECISIONS
    backends: tuple[str, ...] | None = None
    batches: tuple[int, ...] = (1, 64)
    calibration_images: int = 256
    calibration_method: str = "minmax"
    opset: int = 18
    device: str = "auto"  # for torch, torch-compile and aoti
    cuda_graph: bool = False  # TensorRT: replay a captured CUDA graph
    native: str = "auto"  # kdforge-runner rows too: auto (when build/native holds it), always, never
    policy: TimingPolicy = field(default_factory=TimingPolicy)

    def check(self) -> None:
        for p in self.precisions:
            if p not in PRECISIONS:
                raise UserError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        if self.backends is not None:
            check_backends(self.backends)
        if not self.batches or any(b < 1 for b in self.batches):
            raise UserError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.native not in NATIVE_CHOICES:
            raise UserError(f"native: choose one of {', '.join(NATIVE_CHOICES)}, not {self.native!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UserError(
                f"unknown calibration method {self.calibration_method!r}; choose from {CALIBRATION_METHODS}"
            )

    @classmethod
    def from_config(cls, config: DeployConfig) -> DeployOptions:
        """The options a recipe's `deploy:` section asks for."""
        return cls(
            precisions=tuple(config.precisions),
            backends=tuple(config.backends) if config.backends is not None else None,
            batches=tuple(config.batches),
            calibration_images=config.calibration_images,
            calibration_method=config.calibration_method,
            device=config.device,
            native=config.native,
            policy=TimingPolicy(min_duration_s=config.min_duration_s),
        )

    def resolved_backends(self) -> tuple[str, ...]:
        return self.backends if self.backends is not None else available_backends()


def load_network(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The eval-mode network of a kdforge checkpoint (multi-branch, plain or merged) and its metadata."""
    checkpoint = read_checkpoint(path)
    if checkpoint.meta["model"].get("reparameterized"):
        from kdforge.export.reparam import load_merged

        model, checkpoint = load_merged(path)
    else:
        model, checkpoint = load_model(path)
    return model.eval(), checkpoint.meta


def deploy(
    checkpoint: str | Path, out_dir: str | Path, options: DeployOptions | None = None, log: Log | None = None
) -> dict[str, Any]:
    """Build every precision of `checkpoint`'s network under `out_dir`, check and measure them."""
    options = options or DeployOptions()
    options.check()
    log = log or (lambda message: None)
    backends = options.resolved_backends()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by a deploy killed mid-write
    began = time.perf_counter()
    model, meta = load_network(checkpoint)
    config = from_dict(RunConfig, meta["config"])
    data = build_data(config.data)
    shape = (1, *meta["data"]["input_shape"])
    test = list(data.loader("test", seed=config.seed))
    calibration = torch.cat([x for x, _ in data.loader("train", seed=config.seed)])[
        : options.calibration_images
    ]
    describe = {
        "name": config.name,
        "arch": meta["model"]["arch"],
        "classes": meta["data"]["classes"],
        "mean": meta["data"]["mean"],
        "std": meta["data"]["std"],
        "input_layout": "NCHW",
        "input_shape": list(shape[1:]),
        "kdforge": versions()["kdforge"],
        "source_checkpoint_sha256": sha256(checkpoint),
    }
    stem = (
        Path(checkpoint).stem
        if Path(checkpoint).stem not in ("best", "last", "merged")
        else meta["model"]["arch"]
    )
    step = _stepper(log, began, meta["model"]["arch"])

    step("ONNX export and parity check")
    onnx_files: dict[str, Path] = {}
    fp32 = to_onnx(
        model,
        out / f"{stem}-fp32.onnx",
        shape,
        opset=options.opset,
        metadata={**describe, "precision": "fp32"},
    )
    parity = check_parity(model, fp32, torch.cat([x for x, _ in test])[:8])
    if "fp32" in options.precisions:
        onnx_files["fp32"] = fp32
    if "fp16" in options.precisions:
        step("fp16 ONNX")
        onnx_files["fp16"] = to_fp16(fp32, out / f"{stem}-fp16.onnx")
    for precision, activations in (("int8", "int8"), ("int8-u8", "uint8")):
        if precision in options.precisions:
            method, count = options.calibration_method, len(calibration)
            step(f"{precision} Q/DQ ONNX ({method} calibration on {count} images)")
            onnx_files[precision] = to_int8(
                fp32,
                out / f"{stem}-{precision}.onnx",
                calibration,
                method=options.calibration_method,
                activations=activations,
            )
    compiled = _compile(model, shape, stem, out, describe, onnx_files, backends, options, step)

    step("accuracy per precision on the test split")
    with torch.no_grad():
        accuracy = {"torch fp32": top1(lambda x: model(x).numpy(), test)}
    accuracy.update({f"onnxruntime {p}": onnx_top1(f, test) for p, f in onnx_files.items()})
    if "aoti" in compiled:
        package = compiled["aoti"]["fp32"].package
        accuracy["aoti fp32"] = top1(lambda x: package(x).float().cpu().numpy(), test)
    for precision, runner in compiled.get("tensorrt", {}).items():
        engine = runner.engine
        accuracy[f"tensorrt {precision}"] = top1(lambda x, e=engine: e.infer(x).float().cpu().numpy(), test)

    runs: list[tuple[str, str, Backend]] = []
    if "torch" in backends:
        runs.append(("torch", "fp32", TorchEager(model, shape, options.device)))
    if "torch-compile" in backends:
        runs.append(("torch-compile", "fp32", TorchCompile(model, shape, options.device)))
    if "aoti" in compiled:
        runs.append(("aoti", "fp32", compiled["aoti"]["fp32"]))
    for name, provider in ORT_BACKENDS.items():
        if name in backends:
            runs += [(name, p, OnnxRuntime(f, provider=provider)) for p, f in onnx_files.items()]
    runs += [("tensorrt", p, runner) for p, runner in compiled.get("tensorrt", {}).items()]
    latency: list[dict[str, Any]] = []
    for batch in options.batches:  # every backend and precision of one batch size timed together
        step(f"latency at batch {batch}: {len(runs)} variants in rotating rounds")
        calls = {f"{b} {p}": runner.prepare(batch) for b, p, runner in runs}
        timers = {f"{b} {p}": runner.timer() for b, p, runner in runs}
        timed = measure_interleaved(calls, batch, options.policy, timers=timers)
        for backend, precision, runner in runs:
            stats = timed[f"{backend} {precision}"]
            described = runner.describe()
            latency.append(
                {
                    **described,
                    "backend": backend,
                    "precision": precision,
                    **stats.as_dict(),
                    "size_mb": described.get("size_mb", round(_param_bytes(model) / 1e6, 3)),
                }
            )
    latency += _native_latency(onnx_files, compiled, options, step)
    files = {f"onnx {p}": str(f) for p, f in onnx_files.items()}
    files.update({f"{b} {p}": str(r.path) for b, by in compiled.items() for p, r in by.items()})
    result = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": describe["source_checkpoint_sha256"],
        "arch": meta["model"]["arch"],
        "input_shape": list(shape),
        "files": {p: str(f) for p, f in onnx_files.items()},
        "artifacts": files,
        "parity": [vars(r) for r in parity],
        "accuracy": accuracy,
        "latency": latency,
        "options": {
            "precisions": list(options.precisions),
            "backends": list(backends),
            "batches": list(options.batches),
            "device": options.device,
            "native": options.native,
            "calibration_images": len(calibration),
            "calibration_method": options.calibration_method,
            "policy": vars(options.policy),
        },
        "environment": {**versions(), "threads": torch.get_num_threads()},
        "seconds": round(time.perf_counter() - began, 1),
    }
    _write(out, result)
    step(f"wrote {out / 'deploy.md'}")
    return result


def _stepper(log: Log, began: float, arch: str) -> Log:
    def step(message: str) -> None:
        log(f"[{time.perf_counter() - began:6.1f} s] {arch}: {message}")

    return step


def _compile(
    model: nn.Module,
    shape: tuple[int, ...],
    stem: str,
    out: Path,
    describe: dict[str, Any],
    onnx_files: dict[str, Path],
    backends: tuple[str, ...],
    options: DeployOptions,
    step: Log,
) -> dict[str, dict[str, Any]]:
    """The AOTInductor package and the TensorRT engines the requested backends need, as backends."""
    compiled: dict[str, dict[str, Any]] = {}
    if "aoti" in backends:
        from kdforge.export.aoti import compile_package

        step("AOTInductor package (fp32; compiles C++, tens of seconds)")
        package = compile_package(
            model,
            out / f"{stem}-fp32.pt2",
            shape,
            device=options.device,
            max_batch=max(1024, *options.batches),
            metadata=describe,
        )
        compiled["aoti"] = {"fp32": AotInductor(package)}
    if "tensorrt" in backends:
        from kdforge.export.tensorrt import EngineOptions, build_engine

        engine_options = EngineOptions(
            min_batch=1, opt_batch=max(options.batches), max_batch=max(256, *options.batches)
        )
        compiled["tensorrt"] = {}
        for precision in TENSORRT_PRECISIONS:
            if precision in onnx_files:
                step(f"TensorRT engine ({precision})")
                engine = build_engine(
                    onnx_files[precision], out / f"{stem}-{precision}.engine", precision, engine_options
                )
                compiled["tensorrt"][precision] = TensorRT(engine, cuda_graph=options.cuda_graph)
    return compiled


def _native_latency(
    onnx_files: dict[str, Path], compiled: dict[str, dict[str, Any]], options: DeployOptions, step: Log
) -> list[dict[str, Any]]:
    """kdforge-runner's rows for every artifact it was built to run (timed after the Python rounds)."""
    if options.native == "never":
        return []
    from kdforge.export.native import find_runner, run_native

    try:
        runner = find_runner()
    except UserError:
        if options.native == "always":
            raise
        return []
    targets = [("aoti", p, r.path) for p, r in compiled.get("aoti", {}).items()]
    targets += [("tensorrt", p, r.path) for p, r in compiled.get("tensorrt", {}).items()]
    targets += [("onnxruntime", p, f) for p, f in onnx_files.items()]
    rows = []
    for backend, precision, path in targets:
        if backend in runner.backends:
            step(f"kdforge-runner on {Path(path).name}")
            rows += [
                {**row, "precision": precision} for row in run_native(path, options.batches, options.policy)
            ]
    return rows


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _flag(cov: float) -> str:
    return " (!)" if cov > COV_WARNING else ""


def _write(out: Path, result: dict[str, Any]) -> None:
    from kdforge.export.report import plot_latency_vs_batch

    atomic_write_text(out / "deploy.json", json.dumps(result, indent=2) + "\n")
    columns = [
        "backend",
        "precision",
        "batch",
        "p50",
        "p90",
        "p95",
        "p99",
        "mean",
        "std",
        "cov",
        "throughput",
        "page_faults_per_run",
        "size_mb",
        "copies_included",
    ]
    table = io.StringIO()
    writer = csv.DictWriter(table, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result["latency"])
    atomic_write_text(out / "deploy.csv", table.getvalue())
    plot_latency_vs_batch(result["latency"], out / "latency.png", f"{result['arch']}: latency per image")
    acc, opts = result["accuracy"], result["options"]
    base = acc["torch fp32"]
    copies = sorted({r["backend"] for r in result["latency"] if r.get("copies_included")})
    lines = [
        f"# Deploy report: {result['arch']} ({Path(result['checkpoint']).name})",
        "",
        f"Input {result['input_shape']}; ONNX parity with PyTorch (ONNX Runtime, real test images): "
        + ", ".join(f"batch {p['batch']} max |error| {p['max_abs']:.2e}" for p in result["parity"])
        + ". Latency excludes host-to-device copies"
        + (f" except on {', '.join(copies)} (fed host arrays)" if copies else "")
        + "; at each batch size every backend and precision is timed in the same rotating rounds, so "
        "drift hits all alike.",
        "",
        "| precision / runtime | test top-1 % | vs PyTorch fp32 |",
        "|---|---:|---:|",
        *[f"| {k} | {v:.2f} | {v - base:+.2f} |" for k, v in acc.items()],
        "",
        "| backend | precision | batch | p50 ms | p90 ms | p99 ms | mean ms | CoV | images/s | size MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['p50']:.3f} | {r['p90']:.3f} "
            f"| {r['p99']:.3f} | {r['mean']:.3f} | {100 * r['cov']:.1f}%{_flag(r['cov'])} "
            f"| {r['throughput']:.0f} | {r['size_mb']:.2f} |"
            for r in result["latency"]
        ],
        "",
        f"(!) CoV above {100 * COV_WARNING:.0f}%: that figure is noisy; re-run on an idle machine.",
        "",
        "![latency per image against batch size](latency.png)",
        "",
        f"Reproduce: `kdforge deploy {result['checkpoint']} --precision {','.join(opts['precisions'])} "
        f"--backends {','.join(opts['backends'])} --batches {','.join(map(str, opts['batches']))}`",
    ]
    atomic_write_text(out / "deploy.md", "\n".join(lines) + "\n")
