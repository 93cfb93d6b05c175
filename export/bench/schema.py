"""The fields every latency row carries, whoever measured it (the Python profiler, deploy, or the native
runner): reports and `kdforge bench --native` rely on them, and rows read back from another process's JSON
are checked against them (`read_rows`)."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.export.bench.timing import LatencyStats

ROW_ONLY_FIELDS: dict[str, type | tuple[type, ...]] = {"backend": str, "copies_included": bool}


def _json_kind(hint: Any) -> type | tuple[type, ...]:
    """The JSON value types a row may hold for a LatencyStats field of type `hint` (an int is a float)."""
    if hint is float:
        return (int, float)
    return typing.get_origin(hint) or hint  # list[float] -> list


_STATS_HINTS = typing.get_type_hints(LatencyStats)
ROW_FIELDS: dict[str, type | tuple[type, ...]] = {
    **ROW_ONLY_FIELDS,
    **{f.name: _json_kind(_STATS_HINTS[f.name]) for f in dataclasses.fields(LatencyStats)},
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
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in row["samples_ms"]
    ):
        problems.append("samples_ms does not hold `iterations` non-negative numbers")
    if not row["p50"] <= row["p90"] <= row["p95"] <= row["p99"]:
        problems.append("percentiles are not ordered")
    if row["batch"] < 1:
        problems.append("batch < 1")
    return problems


def read_rows(text: str, source: str, hint: str = "") -> list[dict[str, Any]]:
    """The checked latency rows of a JSON report `{"latency": [row, ...]}` that `source` wrote; a report or
    row that does not conform is one UserError line naming the row and the field (then `hint`)."""
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source} wrote invalid JSON ({exc.msg}, line {exc.lineno}){hint}") from None
    rows = report.get("latency") if isinstance(report, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UserError(f"{source}'s JSON has no list of latency rows under 'latency'{hint}")
    for index, row in enumerate(rows):
        problems = row_problems(row)
        if problems:
            raise UserError(
                f"{source}'s latency row {index} (backend {row.get('backend', '?')!s}, batch "
                f"{row.get('batch', '?')!s}) does not conform: {'; '.join(problems)}{hint}"
            )
    return rows
