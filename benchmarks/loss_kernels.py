"""Fused loss kernels against eager torch, torch.compile and Liger-Kernel: forward+backward time,
achieved bandwidth and extra peak memory, for KD, DKD and DIST.

Bandwidth counts the minimum traffic of a fused forward+backward, 3 * B * C * bytes (read the student
and teacher logits once, write the student gradient once), and is compared with the device's measured
copy bandwidth (a large device-to-device copy, bytes read + written). On a machine without CUDA only the
torch path is timed and the GPU rows are reported as missing.

    python benchmarks/loss_kernels.py [--losses kd dkd dist] [--reps 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import RESULTS, machine, slug, write_results
from kdforge.kernels import dist_loss, dkd_loss, kd_loss
from rich.console import Console
from rich.table import Table

GPU_SHAPES = [(64, 100), (256, 1000), (4096, 32000), (8192, 128256)]
CPU_SHAPES = [(64, 100), (256, 1000), (1024, 32000)]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LARGE = 2**24  # B*C from which the bandwidth targets apply
TARGETS = {  # loss: (fraction of copy bandwidth, x eager, x torch.compile, x Liger)
    "kd": (0.80, 3.0, 1.3, 3.0),
    "dkd": (0.80, 3.0, 1.3, None),
    "dist": (0.60, 3.0, None, None),
}

LossFn = Callable[..., torch.Tensor]


def _loss_call(name: str, target: torch.Tensor) -> LossFn:
    if name == "kd":
        return lambda s, t, backend: kd_loss(s, t, 4.0, backend=backend)
    if name == "dkd":
        return lambda s, t, backend: dkd_loss(s, t, target, backend=backend)
    return lambda s, t, backend: dist_loss(s, t, temperature=4.0, backend=backend)


def _liger_kd() -> LossFn | None:
    """Liger's KL-div path for KD: its own log_softmax + LigerKLDIVLoss (when liger-kernel is installed)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return None
    from liger_kernel.transformers import LigerKLDIVLoss

    kl = LigerKLDIVLoss(reduction="batchmean")

    def call(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return kl(torch.log_softmax(s.float() / 4.0, dim=1), torch.softmax(t.float() / 4.0, dim=1)) * 16.0

    return call


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
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    s: torch.Tensor,
    t: torch.Tensor,
    reps: int,
    cuda: bool,
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


def copy_bandwidth(device: str) -> float | None:
    """Bytes per second of a 1 GiB device-to-device copy, counting read + write (CUDA only)."""
    if device != "cuda":
        return None
    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    seconds = statistics.median(_time(lambda: dst.copy_(src), 20, True))
    return 2 * src.numel() * 4 / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--losses", nargs="+", default=["kd", "dkd", "dist"], choices=["kd", "dkd", "dist"])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    shapes = GPU_SHAPES if cuda else CPU_SHAPES
    bandwidth = copy_bandwidth(device)
    liger = _liger_kd() if cuda else None
    rows: list[dict] = []
    console = Console(width=150)
    for name in args.losses:
        for batch, classes in shapes:
            for dtype_name, dtype in DTYPES.items():
                if not cuda and dtype is torch.bfloat16 and batch * classes > 2**20:
                    continue  # CPU bf16 softmax at this size takes minutes and says nothing about the GPU
                g = torch.Generator(device=device).manual_seed(0)
                s = torch.randn(batch, classes, device=device, generator=g).mul_(3).to(dtype)
                t = torch.randn(batch, classes, device=device, generator=g).mul_(3).to(dtype)
                target = torch.randint(0, classes, (batch,), device=device, generator=g)
                call = _loss_call(name, target)
                variants: dict[str, Callable] = {"eager": lambda a, b, call=call: call(a, b, "torch")}
                if cuda:
                    variants["triton"] = lambda a, b, call=call: call(a, b, "triton")
                    variants["compile"] = torch.compile(lambda a, b, call=call: call(a, b, "torch"))
                    if name == "kd" and liger is not None:
                        variants["liger"] = liger
                reps = args.reps if batch * classes <= 2**22 or cuda else 3
                minimum_bytes = 3 * batch * classes * s.element_size()
                for variant, fn in variants.items():
                    seconds, peak = _measure(fn, s, t, reps, cuda)
                    rows.append(
                        {
                            "loss": name,
                            "B": batch,
                            "C": classes,
                            "dtype": dtype_name,
                            "variant": variant,
                            "ms": seconds * 1e3,
                            "gb_s": minimum_bytes / seconds / 1e9,
                            "copy_fraction": (minimum_bytes / seconds / bandwidth) if bandwidth else None,
                            "extra_peak_mb": peak / 2**20 if peak is not None else None,
                            "grad_buffer_mb": batch * classes * s.element_size() / 2**20,
                        }
                    )
                    console.print(f"{name} {batch}x{classes} {dtype_name} {variant}: {seconds * 1e3:.3f} ms")
                del s, t
    checks = evaluate_targets(rows) if cuda else {}
    info = machine()
    payload = {
        "benchmark": "kernels",
        "machine": info,
        "copy_bandwidth_gb_s": bandwidth / 1e9 if bandwidth else None,
        "rows": rows,
        "checks": checks,
        "missing": None if cuda else "no CUDA device: Triton, torch.compile and Liger rows need a GPU",
    }
    markdown = render(rows, info, bandwidth, checks, cuda)
    table = Table(title=f"loss kernels, forward+backward on {info['device']}")
    for column in ("loss", "B x C", "dtype", "variant", "ms", "GB/s", "of copy bw", "extra peak MB"):
        table.add_column(column, justify="left" if column in ("loss", "dtype", "variant") else "right")
    for r in rows:
        table.add_row(
            r["loss"],
            f"{r['B']}x{r['C']}",
            r["dtype"],
            r["variant"],
            f"{r['ms']:.3f}",
            f"{r['gb_s']:.1f}",
            f"{r['copy_fraction']:.0%}" if r["copy_fraction"] else "-",
            f"{r['extra_peak_mb']:.1f}" if r["extra_peak_mb"] is not None else "-",
        )
    console.print(table)
    for check, ok in checks.items():
        console.print(f"{check}: {'PASS' if ok else 'FAIL'}")
    if not cuda:
        console.print(
            "GPU rows missing: no CUDA device here (Triton, torch.compile and Liger are timed on a GPU)"
        )
    write_results(f"kernels-{slug(info['device'])}", payload, markdown, args.out)


def _row(rows: list[dict], **key) -> dict | None:
    return next((r for r in rows if all(r[k] == v for k, v in key.items())), None)


def evaluate_targets(rows: list[dict]) -> dict[str, bool]:
    """The issue's GPU targets at B*C >= 2^24, per loss, shape and dtype."""
    checks: dict[str, bool] = {}
    for r in rows:
        if r["variant"] != "triton" or r["B"] * r["C"] < LARGE:
            continue
        fraction, x_eager, x_compile, x_liger = TARGETS[r["loss"]]
        where = f"{r['loss']} {r['B']}x{r['C']} {r['dtype']}"
        checks[f"{where}: >= {fraction:.0%} of copy bandwidth"] = (r["copy_fraction"] or 0) >= fraction
        for variant, factor in (("eager", x_eager), ("compile", x_compile), ("liger", x_liger)):
            other = _row(rows, loss=r["loss"], B=r["B"], C=r["C"], dtype=r["dtype"], variant=variant)
            if factor is not None and other is not None:
                checks[f"{where}: >= {factor}x {variant}"] = other["ms"] / r["ms"] >= factor
        if r["extra_peak_mb"] is not None:
            checks[f"{where}: extra peak <= one gradient buffer"] = (
                r["extra_peak_mb"] <= 1.05 * r["grad_buffer_mb"]
            )
    return checks


def render(rows: list[dict], info: dict, bandwidth: float | None, checks: dict[str, bool], cuda: bool) -> str:
    """The Markdown report."""
    lines = [
        f"# Loss kernels: forward+backward on {info['device']}",
        "",
        f"{info['date']}, torch {info['torch']}. GB/s counts the minimum traffic 3*B*C*bytes (read s and t "
        "once, write the gradient once); medians over repetitions (CUDA events on GPU).",
    ]
    if bandwidth:
        lines.append(f"Measured copy bandwidth (read + write): {bandwidth / 1e9:.0f} GB/s.")
    if not cuda:
        lines += [
            "",
            "**GPU rows missing**: no CUDA device on this machine. Only the torch path is timed here; the"
            " Triton, torch.compile and Liger rows and the targets need a GPU (`benchmarks/gpu_suite.sh`).",
        ]
    lines += [
        "",
        "| loss | B x C | dtype | variant | ms | GB/s | of copy bw | extra peak MB |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        fraction = f"{r['copy_fraction']:.0%}" if r["copy_fraction"] else "-"
        peak = f"{r['extra_peak_mb']:.1f}" if r["extra_peak_mb"] is not None else "-"
        lines.append(
            f"| {r['loss']} | {r['B']}x{r['C']} | {r['dtype']} | {r['variant']} | {r['ms']:.3f} | "
            f"{r['gb_s']:.1f} | {fraction} | {peak} |"
        )
    if checks:
        lines += ["", "## Targets (B*C >= 2^24)", ""]
        lines += [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in checks.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
