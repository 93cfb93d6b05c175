"""Structural reparameterization (RSD): inference latency of one architecture in three forms, and the
training cost of an RSD step, in one run.

Part 1, latency on CPU (torch eager under inference_mode, and ONNX Runtime's CPU provider) of
  plain                 build(name) with its conv -> BN pairs folded (the baseline),
  plain (BN unfolded)   build(name).eval() as is (for information),
  multi-branch          expand(build(name)).eval(): the 5-branch network RSD trains,
  merged                reparameterize(expanded): the multi-branch network merged back into one conv per
                        block (its BN statistics and affines randomised first so the merge is non-trivial).
Target: merged / plain = 1.00 +- 0.05 per model, runtime and batch size. Timing as trtexec does it:
a warm-up of --warmup seconds, then repetition blocks that run every form once (rotating the order, so
drift hits all alike) until at least --reps blocks and --duration seconds, or, for slow forms, at
least --min-reps blocks with every form having run --duration seconds; median and p90 per call.
Every ONNX export is checked against torch's output of the same form before timing.
Part 2, per-step cost of an RSD step against a plain CE step of the same architecture, through the
real `Trainer.train_step` (forward, loss, backward, optimizer, schedule); interleaved reps, medians.

    python benchmarks/reparam.py [--models resnet20 resnet8x4 mobilenetv2 --batches 1 64 --reps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from common import RESULTS, machine, write_results
from kdforge.compress.models import build
from kdforge.compress.reparam import expand, multi_branch_blocks, reparameterize
from kdforge.export.onnx.parity import ort_session
from rich.console import Console
from rich.table import Table
from torch import nn
from train_step import trainer_for

TOLERANCE = 0.05
FORMS = ("plain", "plain (BN unfolded)", "multi-branch", "merged")
RUNTIMES = ("torch", "onnxruntime")


def _randomize_bn(model: nn.Module, scale: float = 1.0) -> None:
    """Random running statistics and affines for every BatchNorm2d of `model`, in place."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5).mul_(scale)
                module.bias.normal_(0.0, 0.1)


def _conv_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """The weight shapes of every Conv2d of `model`, in module order."""
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Conv2d)]


def _forms(name: str, classes: int) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The four eval-mode forms of `name`, and facts about them (conv shapes equal, merge error)."""
    base = build(name, classes)
    _randomize_bn(base)
    expanded = expand(base)
    branches = len(multi_branch_blocks(expanded)[0].branches)
    _randomize_bn(expanded, scale=branches**-0.5)  # keep activations' scale across summed branches
    expanded.eval()
    forms = {
        "plain": reparameterize(base.eval()),
        "plain (BN unfolded)": base.eval(),
        "multi-branch": expanded,
        "merged": reparameterize(expanded),
    }
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():
        reference, merged = forms["multi-branch"](x), forms["merged"](x)
    scale = reference.abs().max().item()
    error = (merged - reference).abs().max().item() / max(scale, 1e-12)
    torch.testing.assert_close(merged, reference, rtol=1e-3, atol=1e-4 * max(scale, 1.0))
    facts = {
        "blocks": len(multi_branch_blocks(expanded)),
        "branches": branches,
        "same_conv_shapes": _conv_shapes(forms["merged"]) == _conv_shapes(forms["plain"]),
        "batchnorms_in_merged": sum(isinstance(m, nn.BatchNorm2d) for m in forms["merged"].modules()),
        "merge_max_rel_error": error,
        "parameters": {form: sum(p.numel() for p in m.parameters()) for form, m in forms.items()},
    }
    return forms, facts


def _export(model: nn.Module, path: Path, batch: int | None) -> None:
    """ONNX export (dynamo, opset 20); dynamic batch when `batch` is None, else fixed to `batch`."""
    example = torch.randn(batch or 2, 3, 32, 32)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=1024)},)
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=20, dynamic_shapes=dynamic)


def _session(path: Path) -> ort.InferenceSession:
    """A CPU ONNX Runtime session, not spinning when idle (interleaved sessions would steal the cores)."""
    return ort_session(path, spinning=False)


def _sessions(
    forms: dict[str, nn.Module], batches: list[int], folder: Path, errors: dict[str, str]
) -> dict[tuple[str, int], ort.InferenceSession]:
    """(form, batch) -> session; a dynamic-batch export per form, one per batch size where that fails."""
    sessions: dict[tuple[str, int], ort.InferenceSession] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for form, model in forms.items():
        stem = form.replace(" ", "_").replace("(", "").replace(")", "")
        try:
            _export(model, folder / f"{stem}.onnx", None)
            session = _session(folder / f"{stem}.onnx")
            sessions.update({(form, batch): session for batch in batches})
            continue
        except Exception as exc:
            errors[f"{form} (dynamic batch)"] = f"{type(exc).__name__}: {exc}"
        for batch in batches:
            try:
                _export(model, folder / f"{stem}-b{batch}.onnx", batch)
                sessions[(form, batch)] = _session(folder / f"{stem}-b{batch}.onnx")
            except Exception as exc:
                errors[f"{form} (batch {batch})"] = f"{type(exc).__name__}: {exc}"
    return sessions


def _measure(calls: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per call of every entry of `calls`: warm-up, then interleaved repetition blocks."""
    for fn in calls.values():
        start, count = time.perf_counter(), 0
        while count < 2 or time.perf_counter() - start < args.warmup:
            fn()
            count += 1
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    start = time.perf_counter()
    blocks = 0
    while True:
        shift = blocks % len(names)
        for name in names[shift:] + names[:shift]:
            begin = time.perf_counter()
            calls[name]()
            samples[name].append(time.perf_counter() - begin)
        blocks += 1
        elapsed = time.perf_counter() - start
        enough_time = min(sum(values) for values in samples.values()) >= args.duration
        if blocks >= args.min_reps and elapsed >= args.duration and (blocks >= args.reps or enough_time):
            return samples


def _p90(values: list[float]) -> float:
    """The 90th percentile of `values`."""
    return float(np.percentile(values, 90))


def _latency(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, str]]:
    """Part 1: latency rows, per-model facts, and export errors."""
    rows: list[dict[str, Any]] = []
    facts: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            torch.manual_seed(0)
            forms, facts[name] = _forms(name, args.classes)
            model_errors: dict[str, str] = {}
            sessions = _sessions(forms, args.batches, Path(folder) / name.replace(":", "_"), model_errors)
            errors.update({f"{name}: {key}": value for key, value in model_errors.items()})
            for batch in args.batches:
                x = torch.randn(batch, 3, 32, 32)
                feed = x.numpy()
                with torch.inference_mode():
                    expected = {form: model(x).numpy() for form, model in forms.items()}
                calls: dict[str, dict[str, Callable[[], object]]] = {runtime: {} for runtime in RUNTIMES}
                for form, model in forms.items():

                    def eager(model: nn.Module = model, x: torch.Tensor = x) -> torch.Tensor:
                        with torch.inference_mode():
                            return model(x)

                    calls["torch"][form] = eager
                    session = sessions.get((form, batch))
                    if session is None:
                        continue
                    input_name = session.get_inputs()[0].name
                    got = session.run(None, {input_name: feed})[0]
                    np.testing.assert_allclose(got, expected[form], rtol=1e-3, atol=1e-4)
                    calls["onnxruntime"][form] = lambda s=session, i=input_name, f=feed: s.run(None, {i: f})
                for runtime, runtime_calls in calls.items():
                    if not runtime_calls:
                        continue
                    samples = _measure(runtime_calls, args)
                    for form, values in samples.items():
                        rows.append(
                            {
                                "model": name,
                                "runtime": runtime,
                                "batch": batch,
                                "form": form,
                                "median_ms": statistics.median(values) * 1e3,
                                "p90_ms": _p90(values) * 1e3,
                                "n": len(values),
                            }
                        )
                    reps = len(next(iter(samples.values())))
                    print(f"  {name} batch {batch} {runtime}: {reps} repetition blocks", flush=True)
    return rows, facts, errors


def _ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model x runtime x batch: every form's median over plain's, and the merged verdict."""
    medians = {(r["model"], r["runtime"], r["batch"], r["form"]): r["median_ms"] for r in rows}
    out = []
    for model, runtime, batch in dict.fromkeys((r["model"], r["runtime"], r["batch"]) for r in rows):
        plain = medians.get((model, runtime, batch, "plain"))
        ratio = {
            form: medians[(model, runtime, batch, form)] / plain
            for form in FORMS[1:]
            if plain and (model, runtime, batch, form) in medians
        }
        merged = ratio.get("merged")
        verdict = "n/a" if merged is None else ("PASS" if abs(merged - 1) <= TOLERANCE else "FAIL")
        out.append({"model": model, "runtime": runtime, "batch": batch, **ratio, "verdict": verdict})
    return out


def _training(args: argparse.Namespace) -> dict[str, Any]:
    """Part 2: seconds per `Trainer.train_step` of RSD and of plain CE on the same architecture."""
    device = torch.device("cpu")
    torch.manual_seed(0)
    images = torch.randn(args.train_batch, 3, 32, 32)
    labels = torch.randint(0, args.classes, (args.train_batch,))
    with tempfile.TemporaryDirectory() as out:
        trainers = {
            "ce": trainer_for("ce", build(args.train_model, args.classes), None, out, device),
            "rsd": trainer_for("rsd", build(args.train_model, args.classes), None, out, device),
        }
        steps = {name: (lambda t=t: t.train_step(images, labels)) for name, t in trainers.items()}
        for fn in steps.values():  # warm-up: allocator, first-call costs
            for _ in range(2):
                fn()
        samples: dict[str, list[float]] = {name: [] for name in steps}
        for rep in range(args.train_reps):
            order = list(steps) if rep % 2 == 0 else list(steps)[::-1]
            for name in order:
                begin = time.perf_counter()
                steps[name]()
                samples[name].append(time.perf_counter() - begin)
    median = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "model": args.train_model,
        "batch": args.train_batch,
        "reps": args.train_reps,
        "seconds": samples,
        "median_seconds": median,
        "ratio_rsd_over_ce": median["rsd"] / median["ce"],
    }


def _fmt(value: float | None) -> str:
    """A ratio with two decimals, or empty when missing."""
    return "" if value is None else f"{value:.2f}"


def main() -> None:
    """Run both parts, print the tables and write benchmarks/results/reparam.{json,md}."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet8x4", "mobilenetv2"])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--reps", type=int, default=30, help="repetition blocks (at least, unless slow)")
    parser.add_argument("--min-reps", type=int, default=5, help="fewest blocks when forms are slow")
    parser.add_argument("--duration", type=float, default=1.0, help="minimum measured seconds")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per form")
    parser.add_argument("--train-model", default="resnet20")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--train-reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = " ".join(["python benchmarks/reparam.py", *sys.argv[1:]])

    rows, facts, errors = _latency(args)
    ratios = _ratios(rows)
    training = _training(args)

    console = Console(width=150)
    latency = Table(title=f"inference latency on CPU ({torch.get_num_threads()} threads), 3x32x32 input")
    for column in ("model", "runtime", "batch", "form", "median ms", "p90 ms", "n", "x plain"):
        latency.add_column(column, justify="left" if column in ("model", "runtime", "form") else "right")
    plain = {(r["model"], r["runtime"], r["batch"]): r["median_ms"] for r in rows if r["form"] == "plain"}
    lat_md = []
    for r in rows:
        base = plain.get((r["model"], r["runtime"], r["batch"]))
        cells = [
            r["model"],
            r["runtime"],
            str(r["batch"]),
            r["form"],
            f"{r['median_ms']:.3f}",
            f"{r['p90_ms']:.3f}",
            str(r["n"]),
            f"{r['median_ms'] / base:.2f}" if base else "",
        ]
        latency.add_row(*cells)
        lat_md.append("| " + " | ".join(cells) + " |")
    console.print(latency)

    verdicts = Table(title=f"ratios vs plain (BN folded); merged target 1.00 +- {TOLERANCE:.2f}")
    for column in ("model", "runtime", "batch", "merged", "multi-branch", "unfolded", "verdict"):
        verdicts.add_column(column, justify="left" if column in ("model", "runtime") else "right")
    ratio_md, verdict_lines = [], []
    for r in ratios:
        cells = [
            r["model"],
            r["runtime"],
            str(r["batch"]),
            _fmt(r.get("merged")),
            _fmt(r.get("multi-branch")),
            _fmt(r.get("plain (BN unfolded)")),
            r["verdict"],
        ]
        verdicts.add_row(*cells)
        ratio_md.append("| " + " | ".join(cells) + " |")
        verdict_lines.append(
            f"- {r['model']}, {r['runtime']}, batch {r['batch']}: merged / plain = {_fmt(r.get('merged'))} "
            f"(target 1.00 +- {TOLERANCE:.2f}): {r['verdict']}"
        )
    console.print(verdicts)
    for line in verdict_lines:
        console.print(line[2:])

    train = Table(title=f"train step on CPU: {training['model']}, batch {training['batch']}")
    for column in ("step", "median ms", "min ms", "max ms", "x ce"):
        train.add_column(column, justify="left" if column == "step" else "right")
    train_md = []
    for name, values in training["seconds"].items():
        median = training["median_seconds"][name]
        cells = [
            name,
            f"{median * 1e3:.1f}",
            f"{min(values) * 1e3:.1f}",
            f"{max(values) * 1e3:.1f}",
            f"{median / training['median_seconds']['ce']:.2f}",
        ]
        train.add_row(*cells)
        train_md.append("| " + " | ".join(cells) + " |")
    console.print(train)
    console.print(f"rsd / ce = {training['ratio_rsd_over_ce']:.2f}")
    for key, value in errors.items():
        console.print(f"[yellow]ONNX export failed[/]: {key}: {value}")

    same = all(f["same_conv_shapes"] and f["batchnorms_in_merged"] == 0 for f in facts.values())
    shape_sentence = (
        "The merged network has exactly the plain architecture's conv shapes (same Conv2d weight shapes, "
        "in the same order, now with biases) and no BatchNorm, for every model above."
        if same
        else "WARNING: the merged network's conv shapes differ from the plain architecture's for "
        + ", ".join(m for m, f in facts.items() if not f["same_conv_shapes"])
        + "."
    )
    console.print(shape_sentence)

    payload = {
        "benchmark": "reparam",
        "machine": machine(),
        "command": command,
        "ort": ort.__version__,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tolerance": TOLERANCE,
        "latency": rows,
        "ratios": ratios,
        "pass": all(r["verdict"] == "PASS" for r in ratios),
        "models": facts,
        "export_errors": errors,
        "training": training,
    }
    info = payload["machine"]
    blocks = ", ".join(f"{m} {f['blocks']} blocks x {f['branches']} branches" for m, f in facts.items())
    lines = [
        "# Structural reparameterization: latency of plain, multi-branch and merged networks",
        "",
        f"{info['date']}, {info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads), "
        f"torch {info['torch']}, onnxruntime {ort.__version__} (CPU provider, "
        f"{torch.get_num_threads()} intra-op threads); `{command}`.",
        "",
        "## Inference latency",
        "",
        f"{args.classes} classes, 3x32x32 input. Forms: plain = `reparameterize(build(name).eval())` "
        "(BN folded, the baseline); plain (BN unfolded) = `build(name).eval()`; multi-branch = "
        f"`expand(build(name)).eval()` ({blocks}); merged = `reparameterize` of the multi-branch "
        "network with randomised BN statistics and affines. Torch eager under `inference_mode`; ONNX "
        "Runtime from a dynamo export (opset 20), one session per form with idle thread spinning off "
        "(the sessions interleave), checked against torch's output of the same form "
        f"(rtol 1e-3, atol 1e-4) before timing. Warm-up {args.warmup} s per form, then repetition "
        f"blocks running every form once in rotating order, until >= {args.reps} blocks and "
        f">= {args.duration} s (or >= {args.min_reps} blocks with every form run >= {args.duration} s); "
        "per-call median and p90. Note ONNX Runtime fuses Conv + BatchNorm itself, so its unfolded "
        "plain form is folded in effect.",
        "",
        "| model | runtime | batch | form | median ms | p90 ms | n | x plain |",
        "|---|---|---:|---|---:|---:|---:|---:|",
        *lat_md,
        "",
        "## Ratios vs plain (BN folded)",
        "",
        "| model | runtime | batch | merged | multi-branch | unfolded | verdict |",
        "|---|---|---:|---:|---:|---:|---|",
        *ratio_md,
        "",
        *verdict_lines,
        "",
        shape_sentence,
        "",
        "## Training cost of an RSD step",
        "",
        f"`Trainer.train_step` (forward, loss, backward, optimizer, schedule) on {training['model']}, "
        f"batch {training['batch']}, 32x32, {args.classes} classes, CPU: RSD (expanded network, "
        "branch-dropped student pass + full teacher pass) vs plain CE on the unexpanded network. "
        f"Medians of {training['reps']} interleaved repetitions after 2 warm-up steps each.",
        "",
        "| step | median ms | min ms | max ms | x ce |",
        "|---|---:|---:|---:|---:|",
        *train_md,
        "",
        f"**rsd / ce = {training['ratio_rsd_over_ce']:.2f}**",
    ]
    if errors:
        lines += ["", "## ONNX export failures", "", *(f"- {k}: `{v}`" for k, v in errors.items())]
    json_path, md_path = write_results("reparam", payload, "\n".join(lines), args.out)
    console.print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
