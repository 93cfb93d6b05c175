"""PNG plots of latency rows (dicts with backend, precision, batch, p50, p90): latency against batch size
per backend and precision, and teacher against student per backend and precision at one batch size; and of
a budget search: each candidate's accuracy against its measured latency. Latency axes are log scales
labelled in plain milliseconds (`ticks.plain_log_axis`)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
from kdforge.export.report.budget import (
    ACCURACY_KINDS,
    BudgetSummary,
    CandidateRow,
    best_accuracy,
    candidate_label,
    latency_at,
)
from kdforge.export.report.ticks import format_ms, plain_log_axis
from matplotlib.figure import Figure


def _variant(row: dict[str, Any]) -> str:
    return f"{row['backend']} {row['precision']}"


def plot_latency_vs_batch(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """p50 latency per image (line) and the p50..p90 band against batch size, one line per variant."""
    return _save(latency_vs_batch_figure(rows, title), path)


def latency_vs_batch_figure(rows: list[dict[str, Any]], title: str) -> Figure:
    """The figure `plot_latency_vs_batch` saves (apart so tests can read its rendered tick labels)."""
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
    plain_log_axis(axis, "y")
    axis.set_xlabel("batch size")
    axis.set_ylabel("p50 latency per image (ms); band to p90")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    return figure


def plot_teacher_vs_student(
    teacher: list[dict[str, Any]], student: list[dict[str, Any]], batch: int, path: str | Path, title: str
) -> Path:
    """Grouped bars of p50 at `batch`, teacher next to student for every variant both have, each pair
    labelled with the speed-up (teacher p50 / student p50)."""
    return _save(teacher_vs_student_figure(teacher, student, batch, title), path)


def teacher_vs_student_figure(
    teacher: list[dict[str, Any]], student: list[dict[str, Any]], batch: int, title: str
) -> Figure:
    """The figure `plot_teacher_vs_student` saves (apart so tests can read its rendered tick labels)."""
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
    plain_log_axis(axis, "y")
    axis.set_ylabel(f"p50 latency at batch {batch} (ms)")
    axis.set_title(title)
    axis.legend()
    axis.grid(True, axis="y", which="both", alpha=0.3)
    return figure


# Marker per kind of accuracy (see budget.ACCURACY_KINDS); colour per budget verdict.
_ACCURACY_MARKERS = {"test_top1": "D", "long_val_top1": "s", "short_val_top1": "o", "pruned_val_top1": "v"}
_FITS_COLOURS = {True: "tab:green", False: "tab:red", None: "tab:gray"}
_FITS_NAMES = {True: "fits the budget", False: "over budget", None: "not judged"}


def plot_pareto(rows: list[CandidateRow], summary: BudgetSummary, path: str | Path) -> Path:
    """Each timed candidate's best known top-1 against its measured latency on the target (log x), fits
    and over budget apart, the Pareto front, the budget line, the winner and the teacher."""
    return _save(pareto_figure(rows, summary), path)


def pareto_figure(rows: list[CandidateRow], summary: BudgetSummary) -> Figure:
    """The figure `plot_pareto` saves. Candidates timed but never trained (no accuracy) sit as ticks on
    the bottom edge, so the plot still shows where the budget cut."""
    from matplotlib.lines import Line2D

    which = summary.percentile if summary.percentile in ("p50", "p90") else "p90"
    figure, axis = plt.subplots(figsize=(9.5, 5.2), dpi=120)
    xs: list[float] = [summary.budget_ms]
    points: list[tuple[float, float, CandidateRow]] = []  # (latency, accuracy, row)
    kinds: set[str] = set()
    verdicts: set[bool | None] = set()
    for row in rows:
        latency = latency_at(row, which)
        best = best_accuracy(row)
        if latency is None or latency <= 0:
            continue
        xs.append(latency)
        verdicts.add(row.fits)
        if best is None:
            axis.plot(
                latency,
                0.015,
                marker="|",
                markersize=14,
                markeredgewidth=2,
                color=_FITS_COLOURS[row.fits],
                transform=axis.get_xaxis_transform(),
                clip_on=False,
            )
            continue
        accuracy, kind = best
        kinds.add(kind)
        points.append((latency, accuracy, row))
        axis.scatter(
            latency,
            accuracy,
            marker=_ACCURACY_MARKERS[kind],
            color=_FITS_COLOURS[row.fits],
            s=36,
            alpha=0.85,
            zorder=3,
        )
    front = _pareto_front([(x, y) for x, y, _ in points])
    if front:
        axis.step(
            [x for x, _ in front],
            [y for _, y in front],
            where="post",
            color="tab:blue",
            linewidth=1.2,
            alpha=0.7,
            zorder=2,
            label="Pareto front (timed candidates)",
        )
    budget_label = f"budget {format_ms(summary.budget_ms, 3)} ({summary.percentile})"
    axis.axvline(summary.budget_ms, color="black", linestyle="--", linewidth=1.2, label=budget_label)
    axis.annotate(
        budget_label,
        (summary.budget_ms, 1.0),
        xycoords=axis.get_xaxis_transform(),
        xytext=(-3, -4),
        textcoords="offset points",
        rotation=90,
        ha="right",
        va="top",
        fontsize=8,
    )
    winner = next((p for p in points if p[2].name == summary.winner.name), None)
    if winner is not None:
        axis.scatter(
            winner[0], winner[1], s=260, facecolors="none", edgecolors="black", linewidths=1.8, zorder=4
        )
        axis.annotate(
            _literal(f"winner: {candidate_label(winner[2])}"),
            (winner[0], winner[1]),
            xytext=(10, -16),
            textcoords="offset points",
            fontsize=9,
            fontweight="bold",
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            zorder=5,
        )
    if summary.teacher_ms is not None and summary.teacher_ms > 0:
        xs.append(summary.teacher_ms)
        axis.scatter(
            summary.teacher_ms,
            summary.teacher_test_top1,
            marker="*",
            s=220,
            color="gold",
            edgecolors="black",
            zorder=4,
            label=_literal(f"teacher {summary.teacher_arch} (test top-1)"),
        )
    plain_log_axis(axis, "x")
    axis.set_xlim(min(xs) / 1.4, max(xs) * 1.4)
    axis.set_xlabel(f"measured {which} latency on the target (log scale)")
    axis.set_ylabel("top-1 (%), best known per candidate (marker: which)")
    axis.set_title(_literal(f"Candidates on {summary.target_label}"))
    axis.grid(True, which="both", alpha=0.3)
    handles = list(axis.get_legend_handles_labels()[0])
    handles += [
        Line2D([], [], marker=_ACCURACY_MARKERS[key], color="dimgray", linestyle="none", label=name)
        for key, name in ACCURACY_KINDS
        if key in kinds
    ]
    handles += [
        Line2D([], [], marker="s", color=_FITS_COLOURS[verdict], linestyle="none", label=_FITS_NAMES[verdict])
        for verdict in (True, False, None)
        if verdict in verdicts
    ]
    if any(best_accuracy(row) is None and latency_at(row, which) for row in rows):
        handles.append(
            Line2D([], [], marker="|", color="dimgray", linestyle="none", label="timed, not trained")
        )
    axis.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def _pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats on both latency (lower) and accuracy (higher), fastest first."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _literal(value: str) -> str:
    """`value` drawn as written: one line, and a `$` never starts matplotlib's math mode."""
    return " ".join(value.split()).replace("$", r"\$")


def _save(figure: Figure, path: str | Path) -> Path:
    from kdforge.compress.atomic import atomic_path

    path = Path(path)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return path
