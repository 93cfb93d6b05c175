"""Fused loss kernels against eager torch, torch.compile and Liger-Kernel: forward+backward time, achieved
bandwidth against the kernels' bytes-moved model and against the 3 N*e floor, extra peak memory; and with
--breakdown the time, GB/s, registers and spills of every kernel launch (CUDA profiler).

Traffic is counted in N*e, N = B*C elements of e bytes (the logits' element size). The floor of any fused
forward+backward is 3 N*e (read student and teacher once, write the student gradient once); the kernels'
model (docs/kernels.md) is 5 N*e for KD and DKD, 7 or 9 N*e for DIST (one chunk or longer rows): the
forward must read both logits to return the loss before grad_output exists, and the backward reads them
again to write the gradient scaled by it. Both are compared with the measured copy bandwidth (a 1 GiB
device-to-device copy, bytes read + written).

Every torch.compile row is a fresh `torch.compile(dynamic=False)` after torch._dynamo.reset(), checked with
torch._dynamo.explain: a case with graph breaks or no graph is reported as `compile-fallback` with the
reason, never as `compile`. Liger rows (KD: its fused KL divergence) appear when liger-kernel is installed;
otherwise the reason is recorded. Each row is appended to --rows (JSON lines) as soon as it is measured, so
a run killed by a time limit keeps what it measured. Without CUDA only eager rows are timed (small shapes)
and the GPU rows are reported missing: no GPU figure is ever written from a CPU run.

    python benchmarks/loss_kernels.py [--losses kd dkd dist] [--shapes 4096x32000 ...] [--dtypes bf16 fp32]
        [--variants triton eager compile liger] [--breakdown] [--reps 20] [--out DIR]
        [--rows FILE.jsonl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import RESULTS, machine, slug, write_results
from kdforge.kernels import dist_loss, dkd_loss, kd_loss
from kdforge.kernels.traffic import model_traffic
from rich.console import Console
from rich.table import Table

GPU_SHAPES = [(64, 100), (256, 1000), (4096, 32000), (8192, 128256)]
CPU_SHAPES = [(64, 100), (256, 1000), (1024, 32000)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
LARGE = 2**24  # B*C from which the bandwidth targets apply
TARGETS = {  # loss: (fraction of copy bandwidth at the model's traffic, x eager, x torch.compile, x Liger)
    "kd": (0.80, 3.0, 1.3, 3.0),
    "dkd": (0.80, 3.0, 1.3, None),
    "dist": (0.60, 3.0, None, None),
}
KERNELS = {  # loss: {Triton kernel name: model part}
    "kd": {"_kd_forward_kernel": "forward", "_kd_backward_kernel": "backward"},
    "dkd": {"_dkd_forward_kernel": "forward", "_dkd_backward_kernel": "backward"},
    "dist": {"_dist_row_kernel": "row", "_dist_col_kernel": "column", "_dist_grad_kernel": "grad"},
}

LossFn = Callable[..., torch.Tensor]


def _loss_call(name: str, target: torch.Tensor) -> LossFn:
    if name == "kd":
        return lambda s, t, backend: kd_loss(s, t, 4.0, backend=backend)
    if name == "dkd":
        return lambda s, t, backend: dkd_loss(s, t, target, backend=backend)
    return lambda s, t, backend: dist_loss(s, t, temperature=4.0, backend=backend)


def liger_status() -> tuple[LossFn | None, str | None]:
    """Liger's KL-div path for KD (its log_softmax inputs + LigerKLDIVLoss), or why there is none."""
    if importlib.util.find_spec("liger_kernel") is None:
        return None, "liger-kernel is not installed (pip install 'kdforge[liger]')"
    try:
        from liger_kernel.transformers import LigerKLDIVLoss  # pyright: ignore[reportMissingImports]
    except Exception as exc:  # an install that does not import is reported, not fatal
        return None, f"liger-kernel does not import: {type(exc).__name__}: {str(exc)[:120]}"
    kl = LigerKLDIVLoss(reduction="batchmean")

    def call(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return kl(torch.log_softmax(s.float() / 4.0, dim=1), torch.softmax(t.float() / 4.0, dim=1)) * 16.0

    return call, None


def compiled(fn: Callable, s: torch.Tensor, t: torch.Tensor) -> tuple[Callable, str, str | None]:
    """A fresh torch.compile(dynamic=False) of `fn` for this case: (callable, variant, note). The variant
    is `compile` only when dynamo captures the whole function in one graph."""
    import torch._dynamo

    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(fn)(s.detach().requires_grad_(), t)
    except Exception as exc:
        return fn, "compile-fallback", f"dynamo could not trace it ({type(exc).__name__}); timed eager"
    torch._dynamo.reset()
    if explained.graph_count == 0:
        return fn, "compile-fallback", "no graph captured; timed eager"
    note = None
    variant = "compile"
    if explained.graph_break_count:
        reasons = "; ".join(str(getattr(b, "reason", b))[:80] for b in explained.break_reasons[:2])
        variant, note = "compile-fallback", f"{explained.graph_break_count} graph breaks: {reasons}"
    return torch.compile(fn, dynamic=False), variant, note


def _time(step: Callable[[], None], reps: int, cuda: bool) -> list[float]:
    for _ in range(3):
        step()
    samples = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
        else:
            tick = time.perf_counter()
            step()
            samples.append(time.perf_counter() - tick)
    return samples


def _measure(
    fn: Callable, s: torch.Tensor, t: torch.Tensor, reps: int, cuda: bool
) -> tuple[float, float | None]:
    """Median seconds of forward+backward, and extra peak memory (bytes, CUDA only) of one step."""
    leaf = s.detach().requires_grad_()

    def step() -> None:
        leaf.grad = None
        fn(leaf, t).backward()

    seconds = statistics.median(_time(step, reps, cuda))
    peak = None
    if cuda:
        leaf.grad = None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = float(torch.cuda.max_memory_allocated() - base)
    return seconds, peak


def copy_bandwidth(cuda: bool) -> float | None:
    """Bytes per second of a 1 GiB device-to-device copy, counting read + write (CUDA only)."""
    if not cuda:
        return None
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    seconds = statistics.median(_time(lambda: dst.copy_(src), 20, True))
    return 2 * 2**28 * 4 / seconds


def kernel_resources() -> dict[str, list[dict]]:
    """Registers and spills of every compiled variant of the loss kernels, as the driver loaded them."""
    import kdforge.kernels.dist_kd_triton as dist_mod
    import kdforge.kernels.dkd_triton as dkd_mod
    import kdforge.kernels.kd_triton as kd_mod
    import triton

    found: dict[str, list[dict]] = {}
    for module in (kd_mod, dkd_mod, dist_mod):
        for name, fn in vars(module).items():
            if isinstance(fn, triton.runtime.JITFunction) and name.endswith("_kernel"):
                for cache in getattr(fn, "device_caches", {}).values():  # Triton's own layout: best effort
                    for kernel in cache[0].values() if isinstance(cache[0], dict) else ():
                        found.setdefault(name, []).append(
                            {
                                "registers": getattr(kernel, "n_regs", None),
                                "spills": getattr(kernel, "n_spills", None),
                                "warps": kernel.metadata.num_warps,
                            }
                        )
    return found


def breakdown(name: str, s: torch.Tensor, t: torch.Tensor, call: LossFn, reps: int) -> dict[str, dict]:
    """Device time per kernel launch of the Triton path (torch.profiler), with the model's traffic."""
    from torch.profiler import ProfilerActivity, profile

    leaf = s.detach().requires_grad_()

    def step() -> None:
        leaf.grad = None
        call(leaf, t, "triton").backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    traffic = model_traffic(name, s.shape[1])
    elements, size = s.numel(), s.element_size()
    parts: dict[str, dict] = {}
    for event in prof.key_averages():
        part = next((p for k, p in KERNELS[name].items() if k in event.key), None)
        if part is None:
            continue
        total = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
        seconds = total / reps / 1e6  # microseconds over every launch -> seconds per step
        nbytes = traffic[part] * elements * size
        parts[part] = {"kernel": event.key, "ms": seconds * 1e3, "model_ne": traffic[part]}
        parts[part]["gb_s"] = nbytes / seconds / 1e9 if seconds else None
    return parts


def parse_shape(text: str) -> tuple[int, int]:
    batch, classes = text.lower().split("x")
    return int(batch), int(classes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--losses", nargs="+", default=["kd", "dkd", "dist"], choices=["kd", "dkd", "dist"])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, help="BxC, e.g. 4096x32000")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument(
        "--variants", nargs="+", default=["triton", "eager", "compile", "liger"],
        choices=["triton", "eager", "compile", "liger"],
    )  # fmt: skip
    parser.add_argument("--breakdown", action="store_true", help="per-kernel profile of the Triton path only")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rows", type=Path, help="append each measured row here (JSON lines) at once")
    parser.add_argument("--name", default=None, help="results file name (default kernels-<device>)")
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shapes = args.shapes or (GPU_SHAPES if cuda else CPU_SHAPES)
    console = Console(width=160)
    info = machine()
    bandwidth = copy_bandwidth(cuda)
    if bandwidth:
        console.print(f"copy bandwidth (read + write): {bandwidth / 1e9:.0f} GB/s")
    liger, liger_missing = liger_status() if cuda else (None, "no CUDA device")
    missing: dict[str, str] = {}
    if not cuda:
        missing["gpu"] = "no CUDA device: Triton, torch.compile and Liger rows need a GPU"
    elif "liger" in args.variants and liger is None:
        missing["liger"] = liger_missing or ""
    rows: list[dict] = []
    if args.rows:
        args.rows.parent.mkdir(parents=True, exist_ok=True)

    def emit(row: dict) -> None:
        rows.append(row)
        if args.rows:
            with open(args.rows, "a") as handle:
                handle.write(json.dumps(row) + "\n")

    if args.rows and bandwidth:
        emit({"kind": "copy", "device": info["device"], "copy_gb_s": bandwidth / 1e9})
    for name in args.losses:
        for batch, classes in shapes:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                if not cuda and dtype is not torch.float32 and batch * classes > 2**20:
                    continue  # CPU half-precision softmax at this size takes minutes and says nothing
                g = torch.Generator(device=device).manual_seed(0)
                s = torch.randn(batch, classes, device=device, generator=g).mul_(3).to(dtype)
                t = torch.randn(batch, classes, device=device, generator=g).mul_(3).to(dtype)
                target = torch.randint(0, classes, (batch,), device=device, generator=g)
                call = _loss_call(name, target)
                elements, size = batch * classes, s.element_size()
                base = {"loss": name, "B": batch, "C": classes, "dtype": dtype_name, "device": info["device"]}
                if args.breakdown:
                    if cuda:
                        parts = breakdown(name, s, t, call, args.reps)
                        for part, numbers in parts.items():
                            emit({**base, "kind": "kernel", "part": part, **numbers})
                            console.print(
                                f"{name} {batch}x{classes} {dtype_name} {numbers['kernel']}: "
                                f"{numbers['ms']:.3f} ms, {numbers['model_ne']} N*e, "
                                f"{numbers['gb_s'] or 0:.0f} GB/s"
                            )
                    del s, t
                    continue
                variants = _variants(args.variants, name, call, liger, cuda, s, t)
                reps = args.reps if batch * classes <= 2**22 or cuda else 3
                for variant, fn, note in variants:
                    try:
                        seconds, peak = _measure(fn, s, t, reps, cuda)
                    except Exception as exc:  # one failing baseline must not lose the others
                        error = f"{type(exc).__name__}: {exc}"[:300]
                        emit({**base, "kind": "case", "variant": variant, "error": error})
                        continue
                    fused = variant == "triton"
                    traffic = model_traffic(name, classes)
                    model = sum(traffic.values()) * elements * size if fused else None
                    floor = 3 * elements * size
                    row = {
                        **base,
                        "kind": "case",
                        "variant": variant,
                        "note": note,
                        "ms": seconds * 1e3,
                        "model_ne": sum(traffic.values()) if fused else None,
                        "model_gb_s": model / seconds / 1e9 if model else None,
                        "model_copy_fraction": model / seconds / bandwidth if model and bandwidth else None,
                        "floor_gb_s": floor / seconds / 1e9,
                        "floor_copy_fraction": floor / seconds / bandwidth if bandwidth else None,
                        "extra_peak_mb": peak / 2**20 if peak is not None else None,
                        "grad_buffer_mb": elements * size / 2**20,
                    }
                    emit(row)
                    console.print(
                        f"{name} {batch}x{classes} {dtype_name} {variant}: {seconds * 1e3:.3f} ms"
                        + (f" ({note})" if note else "")
                    )
                del s, t
                if cuda:
                    torch.cuda.empty_cache()
    resources = {}
    if cuda and ("triton" in args.variants or args.breakdown):
        try:
            resources = kernel_resources()
        except Exception as exc:  # another Triton's internals: report, do not lose the rows
            resources = {"error": [{"reason": f"{type(exc).__name__}: {exc}"[:200]}]}
    if args.rows and resources:
        emit({"kind": "resources", "kernels": resources})
    cases = [r for r in rows if r.get("kind") == "case" and "error" not in r]
    checks = evaluate_targets(cases) if cuda else {}
    payload = {
        "benchmark": "kernels",
        "machine": info,
        "copy_bandwidth_gb_s": bandwidth / 1e9 if bandwidth else None,
        "rows": rows,
        "checks": checks,
        "missing": missing or None,
        "resources": resources,
    }
    _print_table(console, cases, info)
    for check, ok in checks.items():
        console.print(f"{check}: {'PASS' if ok else 'FAIL'}")
    for what, why in missing.items():
        console.print(f"{what} rows missing: {why}")
    markdown = render(rows, info, bandwidth, checks, missing)
    write_results(args.name or f"kernels-{slug(info['device'])}", payload, markdown, args.out)


def _variants(
    wanted: list[str],
    name: str,
    call: LossFn,
    liger: LossFn | None,
    cuda: bool,
    s: torch.Tensor,
    t: torch.Tensor,
) -> list[tuple[str, Callable, str | None]]:
    """(variant, callable, note) in the order asked; GPU-only variants only on CUDA."""
    out: list[tuple[str, Callable, str | None]] = []
    for variant in wanted:
        if variant == "eager":
            out.append(("eager", lambda a, b, call=call: call(a, b, "torch"), None))
        elif not cuda:
            continue
        elif variant == "triton":
            out.append(("triton", lambda a, b, call=call: call(a, b, "triton"), None))
        elif variant == "compile":
            fn, label, note = compiled(lambda a, b, call=call: call(a, b, "torch"), s, t)
            out.append((label, fn, note))
        elif variant == "liger" and name == "kd" and liger is not None:
            out.append(("liger", liger, None))
    return out


def _print_table(console: Console, cases: list[dict], info: dict) -> None:
    table = Table(title=f"loss kernels, forward+backward on {info['device']}")
    for column in (
        "loss",
        "B x C",
        "dtype",
        "variant",
        "ms",
        "model N*e",
        "GB/s model",
        "GB/s @3Ne",
        "peak MB",
    ):
        table.add_column(column, justify="left" if column in ("loss", "dtype", "variant") else "right")
    for r in cases:
        table.add_row(
            r["loss"],
            f"{r['B']}x{r['C']}",
            r["dtype"],
            r["variant"],
            f"{r['ms']:.3f}",
            str(r["model_ne"] or "-"),
            f"{r['model_gb_s']:.0f}" if r["model_gb_s"] else "-",
            f"{r['floor_gb_s']:.0f}",
            f"{r['extra_peak_mb']:.1f}" if r["extra_peak_mb"] is not None else "-",
        )
    console.print(table)


def _row(rows: list[dict], **key) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in key.items())), None)


def evaluate_targets(rows: list[dict]) -> dict[str, bool]:
    """The GPU targets at B*C >= 2^24, per loss, shape and dtype (bandwidth at the model's traffic)."""
    checks: dict[str, bool] = {}
    for r in rows:
        if r["variant"] != "triton" or r["B"] * r["C"] < LARGE:
            continue
        fraction, x_eager, x_compile, x_liger = TARGETS[r["loss"]]
        where = f"{r['loss']} {r['B']}x{r['C']} {r['dtype']}"
        checks[f"{where}: >= {fraction:.0%} of copy bandwidth at {r['model_ne']} N*e"] = (
            r["model_copy_fraction"] or 0
        ) >= fraction
        for variant, factor in (("eager", x_eager), ("compile", x_compile), ("liger", x_liger)):
            other = _row(rows, loss=r["loss"], B=r["B"], C=r["C"], dtype=r["dtype"], variant=variant)
            if factor is not None and other is not None:
                checks[f"{where}: >= {factor}x {variant}"] = other["ms"] / r["ms"] >= factor
        if r["extra_peak_mb"] is not None:
            checks[f"{where}: extra peak <= one gradient buffer"] = (
                r["extra_peak_mb"] <= 1.05 * r["grad_buffer_mb"]
            )
    return checks


def _pct(value: float | None) -> str:
    return f"{value:.0%}" if value else "-"


def render(
    rows: list[dict], info: dict, bandwidth: float | None, checks: dict[str, bool], missing: dict[str, str]
) -> str:
    """The Markdown report."""
    lines = [
        f"# Loss kernels: forward+backward on {info['device']}",
        "",
        f"{info['date']}, torch {info['torch']}. Traffic in N*e (N = B*C elements of e bytes): `model` is the"
        " kernels' bytes-moved model (docs/kernels.md), `@3Ne` the floor of any fused forward+backward (read"
        " s and t once, write the gradient once). Medians over repetitions (CUDA events on GPU).",
    ]
    if bandwidth:
        lines.append(f"Measured copy bandwidth (read + write): {bandwidth / 1e9:.0f} GB/s.")
    for what, why in missing.items():
        lines += ["", f"**{what} rows missing**: {why}."]
    kernels = [r for r in rows if r.get("kind") == "kernel"]
    if kernels:
        lines += [
            "",
            "## Per kernel (Triton path)",
            "",
            "| loss | B x C | dtype | kernel | ms | model N*e | GB/s |",
        ]
        lines.append("|---|---:|---|---|---:|---:|---:|")
        for r in kernels:
            gb = f"{r['gb_s']:.0f}" if r.get("gb_s") else "-"
            lines.append(
                f"| {r['loss']} | {r['B']}x{r['C']} | {r['dtype']} | {r['kernel']} | {r['ms']:.3f} | "
                f"{r['model_ne']} | {gb} |"
            )
    cases = [r for r in rows if r.get("kind") == "case"]
    if cases:
        lines += [
            "",
            "## Forward + backward",
            "",
            "| loss | B x C | dtype | variant | ms | model N*e | GB/s model | of copy bw | GB/s @3Ne "
            "| of copy bw | extra peak MB | note |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in cases:
            if "error" in r:
                where = f"| {r['loss']} | {r['B']}x{r['C']} | {r['dtype']} | {r['variant']} |"
                lines.append(f"{where} error | | | | | | | {r['error']} |")
                continue
            model_gb = f"{r['model_gb_s']:.0f}" if r["model_gb_s"] else "-"
            peak = f"{r['extra_peak_mb']:.1f}" if r["extra_peak_mb"] is not None else "-"
            lines.append(
                f"| {r['loss']} | {r['B']}x{r['C']} | {r['dtype']} | {r['variant']} | {r['ms']:.3f} | "
                f"{r['model_ne'] or '-'} | {model_gb} | {_pct(r['model_copy_fraction'])} | "
                f"{r['floor_gb_s']:.0f} | {_pct(r['floor_copy_fraction'])} | {peak} | {r['note'] or ''} |"
            )
    if checks:
        lines += ["", "## Targets (B*C >= 2^24)", ""]
        lines += [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in checks.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
