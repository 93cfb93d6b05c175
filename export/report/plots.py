"""PNG plots of latency rows (dicts with backend, precision, batch, p50, p90): latency against batch size
per backend and precision, and teacher against student per backend and precision at one batch size."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt


def _variant(row: dict[str, Any]) -> str:
    return f"{row['backend']} {row['precision']}"


def plot_latency_vs_batch(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """p50 latency per image (line) and the p50..p90 band against batch size, one line per variant."""
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        series[_variant(row)].append(row)
    figure, axis = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for name, points in sorted(series.items()):
        points.sort(key=lambda r: r["batch"])
        batch = [r["batch"] for r in points]
        p50 = [r["p50"] / r["batch"] for r in points]
        p90 = [r["p90"] / r["batch"] for r in points]
        (line,) = axis.plot(batch, p50, marker="o", label=name)
        axis.fill_between(batch, p50, p90, color=line.get_color(), alpha=0.15)
    axis.set_xscale("log", base=2)
    batches = sorted({r["batch"] for r in rows})
    axis.set_xticks(batches, [str(b) for b in batches])
    axis.minorticks_off()
    axis.set_yscale("log")
    axis.set_xlabel("batch size")
    axis.set_ylabel("p50 latency per image (ms); band to p90")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    return _save(figure, path)


def plot_teacher_vs_student(
    teacher: list[dict[str, Any]], student: list[dict[str, Any]], batch: int, path: str | Path, title: str
) -> Path:
    """Grouped bars of p50 at `batch`, teacher next to student for every variant both have, each pair
    labelled with the speed-up (teacher p50 / student p50)."""
    by_variant = {_variant(r): r for r in teacher if r["batch"] == batch}
    pairs = [
        (name, by_variant[name], r)
        for r in student
        if r["batch"] == batch
        if (name := _variant(r)) in by_variant
    ]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(pairs) + 2), 4.5), dpi=120)
    positions = range(len(pairs))
    axis.bar([p - 0.2 for p in positions], [t["p50"] for _, t, _ in pairs], width=0.4, label="teacher")
    bars = axis.bar([p + 0.2 for p in positions], [s["p50"] for _, _, s in pairs], width=0.4, label="student")
    for bar, (_, t, s) in zip(bars, pairs):
        axis.annotate(
            f"{t['p50'] / s['p50']:.1f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axis.set_xticks(list(positions), [name for name, _, _ in pairs], rotation=30, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel(f"p50 latency at batch {batch} (ms)")
    axis.set_title(title)
    axis.legend()
    axis.grid(True, axis="y", which="both", alpha=0.3)
    return _save(figure, path)


def _save(figure: Any, path: str | Path) -> Path:
    from kdforge.compress.atomic import atomic_path

    path = Path(path)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path
