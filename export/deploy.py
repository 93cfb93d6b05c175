"""The deploy half of the pipeline for one checkpoint: merge -> ONNX (parity-checked) -> fp16 / int8 Q/DQ ->
accuracy per precision in ONNX Runtime -> latency per backend and batch -> deploy.md / deploy.json / CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.atomic import atomic_write_text
from compress.config import RunConfig, from_dict
from compress.data import build_data
from compress.errors import UserError
from compress.train.checkpoint import load_model, read_checkpoint, versions
from export.bench import COV_WARNING, OnnxRuntime, TimingPolicy, TorchEager, measure_interleaved
from export.bench.run import KNOWN_BACKENDS, check_backends
from export.onnx import check_parity, to_onnx
from export.quantize import CALIBRATION_METHODS, onnx_top1, to_fp16, to_int8
from export.sidecar import sha256

PRECISIONS = ("fp32", "fp16", "int8", "int8-u8")  # int8: TensorRT's form; int8-u8: ONNX Runtime CPU's


@dataclass
class DeployOptions:
    """What to build and measure."""

    precisions: tuple[str, ...] = PRECISIONS
    backends: tuple[str, ...] = KNOWN_BACKENDS
    batches: tuple[int, ...] = (1, 64)
    calibration_images: int = 256
    calibration_method: str = "minmax"
    opset: int = 18
    policy: TimingPolicy = field(default_factory=TimingPolicy)

    def check(self) -> None:
        for p in self.precisions:
            if p not in PRECISIONS:
                raise UserError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
        check_backends(self.backends)
        if any(b < 1 for b in self.batches):
            raise UserError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UserError(
                f"unknown calibration method {self.calibration_method!r}; choose from {CALIBRATION_METHODS}"
            )


def load_network(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The eval-mode network of a kdforge checkpoint (multi-branch, plain or merged) and its metadata."""
    checkpoint = read_checkpoint(path)
    if checkpoint.meta["model"].get("reparameterized"):
        from export.reparam import load_merged

        model, checkpoint = load_merged(path)
    else:
        model, checkpoint = load_model(path)
    return model.eval(), checkpoint.meta


def deploy(
    checkpoint: str | Path, out_dir: str | Path, options: DeployOptions | None = None
) -> dict[str, Any]:
    """Build every precision of `checkpoint`'s network under `out_dir`, check and measure them."""
    options = options or DeployOptions()
    options.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_network(checkpoint)
    config = from_dict(RunConfig, meta["config"])
    data = build_data(config.data)
    shape = (1, *meta["data"]["input_shape"])
    test = list(data.loader("test", seed=config.seed))
    calibration = torch.cat([x for x, _ in data.loader("train", seed=config.seed)])[
        : options.calibration_images
    ]
    onnx_meta = {
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
    files: dict[str, Path] = {}
    fp32 = to_onnx(
        model,
        out / f"{stem}-fp32.onnx",
        shape,
        opset=options.opset,
        metadata={**onnx_meta, "precision": "fp32"},
    )
    parity = check_parity(model, fp32, torch.cat([x for x, _ in test])[:8])
    if "fp32" in options.precisions:
        files["fp32"] = fp32
    if "fp16" in options.precisions:
        files["fp16"] = to_fp16(fp32, out / f"{stem}-fp16.onnx")
    for precision, activations in (("int8", "int8"), ("int8-u8", "uint8")):
        if precision in options.precisions:
            files[precision] = to_int8(
                fp32,
                out / f"{stem}-{precision}.onnx",
                calibration,
                method=options.calibration_method,
                activations=activations,
            )
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
    torch_top1 = 100.0 * correct / sum(len(y) for _, y in test)
    accuracy = {
        "torch fp32": torch_top1,
        **{f"onnxruntime {p}": onnx_top1(f, test) for p, f in files.items()},
    }

    latency: list[dict[str, Any]] = []
    runs: list[tuple[str, str, Any]] = []
    if "torch" in options.backends:
        runs.append(("torch", "fp32", TorchEager(model, shape)))
    if "onnxruntime" in options.backends:
        runs += [("onnxruntime", p, OnnxRuntime(f)) for p, f in files.items()]
    for batch in options.batches:  # every backend and precision of one batch size timed together
        calls = {(backend, precision): runner.prepare(batch) for backend, precision, runner in runs}
        timed = measure_interleaved(
            {f"{b} {p}": call for (b, p), call in calls.items()}, batch, options.policy, _sync(runs)
        )
        for backend, precision, runner in runs:
            stats = timed[f"{backend} {precision}"]
            size = f.stat().st_size if (f := files.get(precision)) and backend == "onnxruntime" else None
            latency.append(
                {
                    "backend": backend,
                    "precision": precision,
                    **runner.describe(),
                    **stats.as_dict(),
                    "size_mb": round((size or _param_bytes(model)) / 1e6, 3),
                }
            )
    result = {
        "checkpoint": str(checkpoint),
        "arch": meta["model"]["arch"],
        "input_shape": list(shape),
        "files": {p: str(f) for p, f in files.items()},
        "parity": [vars(r) for r in parity],
        "accuracy": accuracy,
        "latency": latency,
        "options": {
            "precisions": list(options.precisions),
            "backends": list(options.backends),
            "batches": list(options.batches),
            "calibration_images": len(calibration),
            "calibration_method": options.calibration_method,
            "policy": vars(options.policy),
        },
        "environment": {**versions(), "threads": torch.get_num_threads()},
    }
    _write(out, result)
    return result


def _sync(runs: list[tuple[str, str, Any]]) -> Any:
    def sync() -> None:
        for _, _, runner in runs:
            runner.sync()

    return sync


def _param_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _flag(cov: float) -> str:
    return " (!)" if cov > COV_WARNING else ""


def _write(out: Path, result: dict[str, Any]) -> None:
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
        "size_mb",
    ]
    with open(out / "deploy.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result["latency"])
    acc, opts = result["accuracy"], result["options"]
    base = acc["torch fp32"]
    lines = [
        f"# Deploy report: {result['arch']} ({Path(result['checkpoint']).name})",
        "",
        f"Input {result['input_shape']}; ONNX parity with PyTorch (ONNX Runtime, real test images): "
        + ", ".join(f"batch {p['batch']} max |error| {p['max_abs']:.2e}" for p in result["parity"])
        + ". Latency excludes host-to-device copies (CPU here: inputs are already in place); at each batch "
        "size every backend and precision is timed in the same rotating rounds, so drift hits all alike.",
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
        f"Reproduce: `kdforge deploy {result['checkpoint']} --precision {','.join(opts['precisions'])} "
        f"--backends {','.join(opts['backends'])} --batches {','.join(map(str, opts['batches']))}`",
    ]
    atomic_write_text(out / "deploy.md", "\n".join(lines) + "\n")
