"""The deploy half of the pipeline for one checkpoint: merge -> ONNX (parity-checked) -> fp16 / int8 Q/DQ ->
AOTInductor package and TensorRT engines where those backends run -> accuracy per precision and runtime ->
latency per backend, precision and batch -> deploy.md / deploy.json / deploy.csv / latency.png."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.atomic import atomic_write_text, remove_stale_temporaries
from kdforge.compress.config import DeployConfig, Precision, RunConfig, from_dict
from kdforge.compress.data import build_data
from kdforge.compress.device import resolve_device
from kdforge.compress.errors import UserError
from kdforge.compress.layout import RunLayout
from kdforge.compress.runlock import run_lock
from kdforge.compress.train.checkpoint import load_model, versions
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
from kdforge.export.quantize import onnx_top1, to_fp16, to_int8
from kdforge.export.quantize.accuracy import top1
from kdforge.export.report.markdown import code, command, shown_command, text
from kdforge.export.sidecar import sha256
from torch import nn

PRECISIONS: tuple[str, ...] = typing.get_args(Precision)  # declared once, on DeployConfig.precisions
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")  # the u8-activation form is for ONNX Runtime's CPU kernels
OPSET = 18
Log = Callable[[str], None]
ALWAYS_IN_FLAGS = ("precisions", "backends", "batches")  # the reproduce line names these even at default


def checked(config: DeployConfig) -> DeployConfig:
    """`config` validated against its fields' types and limits (a DeployConfig built in code skips them)."""
    return from_dict(DeployConfig, dataclasses.asdict(config), "deploy")


def resolved_backends(config: DeployConfig) -> tuple[str, ...]:
    """The backends `config` asks for (None: every one usable here), each checked to run on this machine."""
    if config.backends is None:
        return available_backends()
    backends = tuple(config.backends)
    check_backends(backends)
    return backends


def timing_policy(config: DeployConfig) -> TimingPolicy:
    """How each variant is timed: the profiler's defaults with `config.min_duration_s`."""
    return TimingPolicy(min_duration_s=config.min_duration_s)


def recorded_options(config: DeployConfig, policy: TimingPolicy | None = None) -> dict[str, Any]:
    """Every input of a deploy besides the checkpoint, as deploy.json records it (backends and device
    resolved: `auto` is recorded as the device it picked here, so a run resumed on a machine where it
    picks another one measures again); a resumed `kdforge run` reuses a deploy only when this is equal."""
    config = checked(config)
    options = {k: v for k, v in dataclasses.asdict(config).items() if k != "enabled"}  # a pipeline switch
    return {
        **options,
        "device": resolve_device(config.device).type,
        "backends": list(resolved_backends(config)),
        "opset": OPSET,
        "policy": dataclasses.asdict(policy or timing_policy(config)),
    }


def deploy_flags(options: dict[str, Any]) -> str:
    """The `kdforge deploy` flags of recorded options, shell-quoted (see `deploy_flag_words`)."""
    return command(*deploy_flag_words(options))


def deploy_flag_words(options: dict[str, Any]) -> list[str]:
    """The `kdforge deploy` flags of recorded options: precisions, backends and batches always, the
    others when they differ from their default (flag names from DeployConfig's fields)."""
    defaults = dataclasses.asdict(DeployConfig())
    flags = []
    for f in dataclasses.fields(DeployConfig):
        value = options.get(f.name, defaults[f.name])
        if "flag" not in f.metadata or value is None:
            continue
        if f.name not in ALWAYS_IN_FLAGS and value == defaults[f.name]:
            continue
        if isinstance(value, bool):
            flags += [f.metadata["flag"]] if value else []
        else:
            flags += [
                f.metadata["flag"],
                ",".join(map(str, value)) if isinstance(value, list) else str(value),
            ]
    return flags


@dataclass
class DeployInput:
    """The network to deploy with what every stage needs: its data, input shape and file metadata."""

    model: nn.Module
    arch: str
    shape: tuple[int, ...]  # (1, C, H, W)
    test: list[tuple[torch.Tensor, torch.Tensor]]  # the test split, batched
    calibration: torch.Tensor  # training images for int8 calibration
    describe: dict[str, Any]  # metadata written into every exported file
    stem: str  # file-name stem of the artifacts


def deploy(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: DeployConfig | None = None,
    log: Log | None = None,
    *,
    policy: TimingPolicy | None = None,
) -> dict[str, Any]:
    """Build every precision of `checkpoint`'s network under `out_dir`, check and measure them.

    `policy` replaces the timing built from `config.min_duration_s` (tests time a few iterations)."""
    config = checked(config or DeployConfig())
    policy = policy or timing_policy(config)
    options = recorded_options(config, policy)  # checks the backends before any work
    out = Path(out_dir)
    with run_lock(out):  # one deploy per folder, and never into a non-empty folder kdforge did not make
        return _deploy(checkpoint, out, config, options, policy, log)


def _deploy(
    checkpoint: str | Path,
    out: Path,
    config: DeployConfig,
    options: dict[str, Any],
    policy: TimingPolicy,
    log: Log | None,
) -> dict[str, Any]:
    """`deploy`'s work, with the output folder locked."""
    backends = tuple(options["backends"])
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by a deploy killed mid-write
    began = time.perf_counter()
    source = load_source(checkpoint, config.calibration_images)
    step = _stepper(log or (lambda message: None), began, source.arch)
    onnx_files, parity = export_onnx(source, config, out, step)
    ready = check_readiness(onnx_files, step)
    compiled = compile_artifacts(source, out, onnx_files, backends, config, step, ready)
    accuracy = measure_accuracy(source, onnx_files, compiled, step)
    variants = latency_variants(source, onnx_files, compiled, backends, config.device)
    latency = measure_latency(source, variants, config.batches, policy, step)
    latency += native_latency(onnx_files, compiled, config, policy, step)
    result = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": source.describe["source_checkpoint_sha256"],
        "arch": source.arch,
        "input_shape": list(source.shape),
        "files": {p: str(f) for p, f in onnx_files.items()},
        "artifacts": {
            **{f"onnx {p}": str(f) for p, f in onnx_files.items()},
            **{f"{b} {p}": str(r.path) for b, by in compiled.items() for p, r in by.items()},
        },
        "parity": [vars(r) for r in parity],
        "readiness": ready,
        "accuracy": accuracy,
        "latency": latency,
        "options": options,
        "calibration_images_used": len(source.calibration),
        "environment": {**versions(), "threads": torch.get_num_threads()},
        "seconds": round(time.perf_counter() - began, 1),
    }
    write_results(out, result)
    step(f"wrote {RunLayout(out).deploy_md}")
    return result


def load_source(checkpoint: str | Path, calibration_images: int) -> DeployInput:
    """Load (and merge, when multi-branch) the network, its test split and its calibration images."""
    model, loaded = load_model(checkpoint)  # plain, multi-branch or merged: the one loader tells them apart
    model, meta = model.eval(), loaded.meta
    recorded = meta.get("config")
    if not isinstance(recorded, dict):
        raise UserError(
            f"{Path(checkpoint).name} records no training recipe (metadata 'config'), which deploy needs "
            "for its test and calibration images; deploy a checkpoint written by kdforge teacher, compress "
            "or run"
        )
    config = from_dict(RunConfig, recorded)
    data = build_data(config.data)
    arch = meta["model"]["arch"]
    shape = (1, *meta["data"]["input_shape"])
    train = torch.cat([x for x, _ in data.loader("train", seed=config.seed)])
    describe = {
        "name": config.name,
        "arch": arch,
        "classes": meta["data"]["classes"],
        "mean": meta["data"]["mean"],
        "std": meta["data"]["std"],
        "input_layout": "NCHW",
        "input_shape": list(shape[1:]),
        "kdforge": versions()["kdforge"],
        "source_checkpoint_sha256": sha256(checkpoint),
    }
    stem = Path(checkpoint).stem
    return DeployInput(
        model=model,
        arch=arch,
        shape=shape,
        test=list(data.loader("test", seed=config.seed)),
        calibration=train[:calibration_images],
        describe=describe,
        stem=stem if stem not in ("best", "last", "merged") else arch,
    )


def export_onnx(
    source: DeployInput, config: DeployConfig, out: Path, step: Log
) -> tuple[dict[str, Path], list[Any]]:
    """The fp32 ONNX (parity-checked against PyTorch) and the fp16 / int8 forms `config` asks for."""
    step("ONNX export and parity check")
    onnx_files: dict[str, Path] = {}
    stem, describe = source.stem, source.describe
    fp32 = to_onnx(
        source.model,
        out / f"{stem}-fp32.onnx",
        source.shape,
        opset=OPSET,
        metadata={**describe, "precision": "fp32"},
    )
    parity = check_parity(source.model, fp32, torch.cat([x for x, _ in source.test])[:8])
    if "fp32" in config.precisions:
        onnx_files["fp32"] = fp32
    if "fp16" in config.precisions:
        step("fp16 ONNX")
        onnx_files["fp16"] = to_fp16(fp32, out / f"{stem}-fp16.onnx")
    for precision, activations in (("int8", "int8"), ("int8-u8", "uint8")):
        if precision in config.precisions:
            method, count = config.calibration_method, len(source.calibration)
            step(f"{precision} Q/DQ ONNX ({method} calibration on {count} images)")
            onnx_files[precision] = to_int8(
                fp32,
                out / f"{stem}-{precision}.onnx",
                source.calibration,
                method=method,
                activations=activations,
            )
    return onnx_files, parity


def measure_accuracy(
    source: DeployInput, onnx_files: dict[str, Path], compiled: dict[str, dict[str, Any]], step: Log
) -> dict[str, float]:
    """Test top-1 of the PyTorch network and of every built file, on the runtime that runs it."""
    step("accuracy per precision on the test split")
    model, test = source.model, source.test
    with torch.no_grad():
        accuracy = {"torch fp32": top1(lambda x: model(x).numpy(), test)}
    accuracy.update({f"onnxruntime {p}": onnx_top1(f, test) for p, f in onnx_files.items()})
    if "aoti" in compiled:
        package = compiled["aoti"]["fp32"].package
        accuracy["aoti fp32"] = top1(lambda x: package(x).float().cpu().numpy(), test)
    for precision, runner in compiled.get("tensorrt", {}).items():
        engine = runner.engine
        accuracy[f"tensorrt {precision}"] = top1(lambda x, e=engine: e.infer(x).float().cpu().numpy(), test)
    return accuracy


def latency_variants(
    source: DeployInput,
    onnx_files: dict[str, Path],
    compiled: dict[str, dict[str, Any]],
    backends: tuple[str, ...],
    device: str,
) -> list[tuple[str, str, Backend]]:
    """(backend, precision, runner) of everything to time: PyTorch, every ONNX file, package and engine."""
    runs: list[tuple[str, str, Backend]] = []
    if "torch" in backends:
        runs.append(("torch", "fp32", TorchEager(source.model, source.shape, device)))
    if "torch-compile" in backends:
        runs.append(("torch-compile", "fp32", TorchCompile(source.model, source.shape, device)))
    if "aoti" in compiled:
        runs.append(("aoti", "fp32", compiled["aoti"]["fp32"]))
    for name, provider in ORT_BACKENDS.items():
        if name in backends:
            runs += [(name, p, OnnxRuntime(f, provider=provider)) for p, f in onnx_files.items()]
    runs += [("tensorrt", p, runner) for p, runner in compiled.get("tensorrt", {}).items()]
    return runs


def measure_latency(
    source: DeployInput,
    runs: list[tuple[str, str, Backend]],
    batches: list[int],
    policy: TimingPolicy,
    step: Log,
) -> list[dict[str, Any]]:
    """One latency row per variant and batch; every variant of one batch size timed in the same rounds."""
    latency: list[dict[str, Any]] = []
    for batch in batches:
        step(f"latency at batch {batch}: {len(runs)} variants in rotating rounds")
        calls = {f"{b} {p}": runner.prepare(batch) for b, p, runner in runs}
        timers = {f"{b} {p}": runner.timer() for b, p, runner in runs}
        timed = measure_interleaved(calls, batch, policy, timers=timers)
        for backend, precision, runner in runs:
            described = runner.describe()
            latency.append(
                {
                    **described,
                    "backend": backend,
                    "precision": precision,
                    **timed[f"{backend} {precision}"].as_dict(),
                    "size_mb": described.get("size_mb", round(_param_bytes(source.model) / 1e6, 3)),
                }
            )
    return latency


def _stepper(log: Log, began: float, arch: str) -> Log:
    """`log` with the seconds since the deploy began and the architecture in front of each line."""

    def step(message: str) -> None:
        log(f"[{time.perf_counter() - began:6.1f} s] {arch}: {message}")

    return step


def check_readiness(onnx_files: dict[str, Path], step: Log) -> dict[str, dict[str, Any]]:
    """Lint each ONNX file for the runtime it is meant for (TensorRT 10 and 11, or ONNX Runtime)."""
    from kdforge.export.readiness import readiness, readiness_label

    ready = {precision: readiness(path, precision) for precision, path in onnx_files.items()}
    step(
        "ready for their runtime: "
        + ", ".join(f"{p} {readiness_label(entry)} ({entry['target']})" for p, entry in ready.items())
    )
    return ready


def compile_artifacts(
    source: DeployInput,
    out: Path,
    onnx_files: dict[str, Path],
    backends: tuple[str, ...],
    config: DeployConfig,
    step: Log,
    ready: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The AOTInductor package and the TensorRT engines the requested backends need, as backends; a file
    that failed the TensorRT lint is still handed to the builder (the lint may be stricter than the
    parser), but only after a line that says so and names its first problem."""
    compiled: dict[str, dict[str, Any]] = {}
    if "aoti" in backends:
        from kdforge.export.aoti import compile_package

        step("AOTInductor package (fp32; compiles C++, tens of seconds)")
        package = compile_package(
            source.model,
            out / f"{source.stem}-fp32.pt2",
            source.shape,
            device=config.device,
            max_batch=max(1024, *config.batches),
            metadata=source.describe,
        )
        compiled["aoti"] = {"fp32": AotInductor(package)}
    if "tensorrt" in backends:
        from kdforge.export.tensorrt import EngineOptions, build_engine

        engine_options = EngineOptions(
            min_batch=1, opt_batch=max(config.batches), max_batch=max(256, *config.batches)
        )
        compiled["tensorrt"] = {}
        for precision in TENSORRT_PRECISIONS:
            if precision in onnx_files:
                verdict = (ready or {}).get(precision)
                if verdict is not None and not verdict["ready"]:
                    step(
                        f"warning: {onnx_files[precision].name} is not TensorRT-ready ({verdict['errors']} "
                        f"problems, first: {verdict['problems'][0]}); building the engine anyway"
                    )
                step(f"TensorRT engine ({precision})")
                engine = build_engine(
                    onnx_files[precision],
                    out / f"{source.stem}-{precision}.engine",
                    precision,
                    engine_options,
                )
                compiled["tensorrt"][precision] = TensorRT(engine, cuda_graph=config.cuda_graph)
    return compiled


def native_latency(
    onnx_files: dict[str, Path],
    compiled: dict[str, dict[str, Any]],
    config: DeployConfig,
    policy: TimingPolicy,
    step: Log,
) -> list[dict[str, Any]]:
    """kdforge-runner's rows for every artifact it was built to run (timed after the Python rounds)."""
    if config.native == "never":
        return []
    from kdforge.export.native import find_runner, run_native

    try:
        runner = find_runner()
    except UserError:
        if config.native == "always":
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
                {**row, "precision": precision} for row in run_native(path, tuple(config.batches), policy)
            ]
    return rows


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _flag(cov: float) -> str:
    return " (!)" if cov > COV_WARNING else ""


def write_results(out: Path, result: dict[str, Any]) -> None:
    """deploy.json (everything), deploy.csv (the latency rows), latency.png and deploy.md (for people)."""
    from kdforge.export.report import plot_latency_vs_batch

    layout = RunLayout(out)
    atomic_write_text(layout.deploy_json, json.dumps(result, indent=2) + "\n")
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
    atomic_write_text(layout.deploy_csv, table.getvalue())
    plot_latency_vs_batch(result["latency"], layout.latency_png, f"{result['arch']}: latency per image")
    atomic_write_text(layout.deploy_md, deploy_markdown(result))


def deploy_markdown(result: dict[str, Any]) -> str:
    """deploy.md: parity, accuracy per precision and runtime, latency per variant and how to reproduce."""
    from kdforge.export.readiness import readiness_label

    acc, opts = result["accuracy"], result["options"]
    base = acc["torch fp32"]
    copies = sorted({r["backend"] for r in result["latency"] if r.get("copies_included")})
    lines = [
        f"# Deploy report: {text(result['arch'])} ({code(Path(result['checkpoint']).name)})",
        "",
        f"Input {result['input_shape']}; ONNX parity with PyTorch (ONNX Runtime, real test images): "
        + ", ".join(f"batch {p['batch']} max |error| {p['max_abs']:.2e}" for p in result["parity"])
        + ". Latency excludes host-to-device copies"
        + (f" except on {text(', '.join(copies))} (fed host arrays)" if copies else "")
        + "; at each batch size every backend and precision is timed in the same rotating rounds, so "
        "drift hits all alike.",
        "",
        "| ONNX file | meant for | ready | problems |",
        "|---|---|---|---|",
        *[
            f"| {text(Path(result['files'][p]).name)} | {text(' and '.join(e['checked']))} "
            f"| {text(readiness_label(e))} | {text('; '.join(e['problems'][:3]) or '-')} |"
            for p, e in result.get("readiness", {}).items()
        ],
        "",
        "Checked by `kdforge check` against each runtime's published ONNX rules (TensorRT's parser "
        "operator table and explicit-quantization rules), without the runtime installed.",
        "",
        "| precision / runtime | test top-1 % | vs PyTorch fp32 |",
        "|---|---:|---:|",
        *[f"| {text(k)} | {v:.2f} | {v - base:+.2f} |" for k, v in acc.items()],
        "",
        "| backend | precision | batch | p50 ms | p90 ms | p99 ms | mean ms | CoV | images/s | size MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {text(r['backend'])} | {text(r['precision'])} | {r['batch']} | {r['p50']:.3f} "
            f"| {r['p90']:.3f} | {r['p99']:.3f} | {r['mean']:.3f} | {100 * r['cov']:.1f}%{_flag(r['cov'])} "
            f"| {r['throughput']:.0f} | {r['size_mb']:.2f} |"
            for r in result["latency"]
        ],
        "",
        f"(!) CoV above {100 * COV_WARNING:.0f}%: that figure is noisy; re-run on an idle machine.",
        "",
        "![latency per image against batch size](latency.png)",
        "",
        *shown_command(["kdforge", "deploy", result["checkpoint"], *deploy_flag_words(opts)], "Reproduce: "),
    ]
    return "\n".join(lines) + "\n"
