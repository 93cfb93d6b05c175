"""The fields every latency row carries, whoever measured it (the Python profiler, deploy, or the native
runner): reports and `kdforge bench --native` rely on them."""

from __future__ import annotations

from typing import Any

ROW_FIELDS: dict[str, type | tuple[type, ...]] = {
    "backend": str,
    "copies_included": bool,
    "batch": int,
    "iterations": int,
    "p50": (int, float),
    "p90": (int, float),
    "p95": (int, float),
    "p99": (int, float),
    "mean": (int, float),
    "std": (int, float),
    "cov": (int, float),
    "throughput": (int, float),
    "peak_rss_mb": (int, float),
    "page_faults_per_run": (int, float),
    "samples_ms": list,
}


def row_problems(row: dict[str, Any]) -> list[str]:
    """What is wrong with a latency row (empty when it conforms): missing fields, wrong types, sample
    counts or percentile order that do not add up."""
    problems = []
    for name, kind in ROW_FIELDS.items():
        if name not in row:
            problems.append(f"missing {name}")
        elif isinstance(row[name], bool) and kind is not bool:
            problems.append(f"{name} is a boolean")
        elif not isinstance(row[name], kind):
            problems.append(f"{name} is {type(row[name]).__name__}")
    if problems:
        return problems
    if len(row["samples_ms"]) != row["iterations"] or not all(
        isinstance(v, int | float) and v >= 0 for v in row["samples_ms"]
    ):
        problems.append("samples_ms does not hold `iterations` non-negative numbers")
    if not row["p50"] <= row["p90"] <= row["p95"] <= row["p99"]:
        problems.append("percentiles are not ordered")
    if row["batch"] < 1:
        problems.append("batch < 1")
    return problems
