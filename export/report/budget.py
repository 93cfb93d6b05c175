"""The report of `kdforge run --budget`: the candidates the search proposed, timed and distilled, the one
sentence the report and the terminal lead with, the Markdown section, and candidates.csv / .json.
Accuracies are top-1 in percent (0-100), latencies in milliseconds on the target."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kdforge.export.report.markdown import text
from kdforge.export.report.ticks import format_ms

# How the user may state an absolute budget ("0.4ms", "400 us"): the sentence then shows it as format_ms
# does; anything else ("25% of the teacher (0.31 ms)") is shown as stated.
_PLAIN_BUDGET = re.compile(r"\s*\d+(\.\d*)?\s*(ms|s|us|µs)?\s*", re.IGNORECASE)
# Cells a spreadsheet would read as a formula (OWASP's list): written with a leading apostrophe.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class CandidateRow:
    """One proposed student: where it came from, its size, its measured latency and what it reached."""

    name: str  # unique id, e.g. "zoo:cnn_2_16", "pruned:w0.50", "user:resnet8"
    source: str  # "zoo" | "pruned" | "user" | "hand-picked"
    arch: str
    params: int
    macs: int
    p50_ms: float | None  # measured on the target (None: not timed, e.g. dropped before timing)
    p90_ms: float | None
    fits: bool | None  # p<percentile> <= budget; None when not timed
    status: str  # "winner", "top-K", "short run", "over budget", "dropped: ...", "filtered by proxy"
    pruned_val_top1: float | None = None  # pruned: validation top-1 after pruning + BN recalibration
    short_val_top1: float | None = None  # after the short distillation (validation split)
    long_val_top1: float | None = None  # top-K: after the longer distillation
    test_top1: float | None = None  # the winner (and a hand-picked reference): test split, once


@dataclass
class BudgetSummary:
    """What the search was asked for and what it chose, against the teacher and the CE-only student."""

    target_label: str  # "onnxruntime int8-u8, batch 1, 2 threads"
    percentile: str  # "p50" | "p90" | "p99"
    budget_ms: float
    budget_text: str  # as the user stated it: "0.4ms" or "25% of the teacher (0.31 ms)"
    teacher_arch: str
    teacher_ms: float | None  # the teacher's measured latency on the target (same percentile)
    teacher_test_top1: float
    winner: CandidateRow
    winner_ms_deployed: float | None  # the winner re-measured by deploy (None if deploy off)
    winner_ce_test_top1: float | None  # the same student trained alone with CE
    timed: int  # how many candidates were timed (fresh + cached)
    method: str  # the distillation method, e.g. "kd"


_COLUMNS = [field.name for field in dataclasses.fields(CandidateRow)]
# Best accuracy known per candidate, most trusted first: (field, what it is, for legends and labels).
ACCURACY_KINDS: tuple[tuple[str, str], ...] = (
    ("test_top1", "test (full distillation)"),
    ("long_val_top1", "validation (long run)"),
    ("short_val_top1", "validation (short run)"),
    ("pruned_val_top1", "validation (pruned, no training)"),
)


def best_accuracy(row: CandidateRow) -> tuple[float, str] | None:
    """The most trusted top-1 known for `row` and which it is (a key of `ACCURACY_KINDS`); None if none."""
    for field, _ in ACCURACY_KINDS:
        value = getattr(row, field)
        if value is not None:
            return float(value), field
    return None


def latency_at(row: CandidateRow, percentile: str) -> float | None:
    """`row`'s measured latency at `percentile` (p50 or p90; rows carry no other), None if not timed."""
    return {"p50": row.p50_ms, "p90": row.p90_ms}.get(percentile)


def budget_sentence(summary: BudgetSummary) -> str:
    """The one plain-text sentence that opens report.md and ends the run on the terminal: what was chosen,
    how fast against the budget, how accurate against the teacher and the CE-only student."""
    winner = summary.winner
    searched = latency_at(winner, summary.percentile)
    if searched is not None:
        speed = f"{format_ms(searched, 3)} {summary.percentile}"
        if summary.winner_ms_deployed is not None:
            speed += f" ({format_ms(summary.winner_ms_deployed, 3)} re-measured by deploy)"
    elif summary.winner_ms_deployed is not None:
        speed = f"{format_ms(summary.winner_ms_deployed, 3)} {summary.percentile} (measured by deploy)"
    else:
        speed = "latency not measured"
    budget = (
        format_ms(summary.budget_ms, 3)
        if _PLAIN_BUDGET.fullmatch(summary.budget_text)
        else " ".join(summary.budget_text.split())
    )
    accuracy = f"test top-1 {_percent(winner.test_top1)}" if winner.test_top1 is not None else "no test top-1"
    teacher = f"teacher {summary.teacher_arch} {_percent(summary.teacher_test_top1)}"
    if summary.teacher_ms is not None:
        teacher += f" at {format_ms(summary.teacher_ms, 3)}"
    others = [teacher]
    if summary.winner_ce_test_top1 is not None:
        others.append(f"the same student trained alone with CE {_percent(summary.winner_ce_test_top1)}")
    timed = f"{summary.timed} candidate{'' if summary.timed == 1 else 's'} timed"
    sentence = (
        f"Chosen: {candidate_label(winner)}, {speed} on {summary.target_label} against a budget of {budget}; "
        f"{accuracy} ({', '.join(others)}); {timed}."
    )
    return " ".join(sentence.split())  # one line, whatever the names hold


def candidate_label(row: CandidateRow) -> str:
    """ "cnn_2_16 (zoo)" when the name says no more than source and architecture, else "cnn_6_32
    (pruned:w0.50)"."""
    return f"{row.arch} ({row.source if row.name == f'{row.source}:{row.arch}' else row.name})"


def rank_correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho: the Pearson correlation of the two samples' ranks, tied values sharing their
    average rank. None for fewer than 3 pairs, or when either sample is constant (undefined)."""
    if len(xs) != len(ys):
        raise ValueError(f"rank_correlation needs pairs: {len(xs)} x values, {len(ys)} y values")
    if len(xs) < 3:
        return None
    rx, ry = _average_ranks(xs), _average_ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return None
    return cov / math.sqrt(vx * vy)


def _average_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of `values`; a run of equal values shares the mean of the ranks it spans."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def macs_latency_correlation(rows: Sequence[CandidateRow]) -> float | None:
    """Spearman's rho between MACs and measured p50 over the timed candidates: how well counting MACs
    (what a proxy filter ranks by) predicts the order the target's clock puts them in."""
    timed = [row for row in rows if row.p50_ms is not None]
    return rank_correlation(
        [row.macs for row in timed], [row.p50_ms for row in timed if row.p50_ms is not None]
    )


def sorted_rows(rows: Sequence[CandidateRow]) -> list[CandidateRow]:
    """Rows by measured p50, fastest first; untimed rows last, by name."""
    return sorted(rows, key=lambda r: (r.p50_ms is None, r.p50_ms or 0.0, r.name))


def budget_markdown(
    summary: BudgetSummary,
    rows: Sequence[CandidateRow],
    plot_name: str | None,
    correlation: float | None,
) -> str:
    """The budget section of report.md: the sentence, how well MACs ranked latency, the Pareto plot
    (`plot_name`, a file next to the report) and every candidate in one table, fastest first."""
    timed = sum(row.p50_ms is not None for row in rows)
    if correlation is not None:
        rho = f"Spearman ρ = {correlation:.2f}"
    else:
        rho = (
            "Spearman ρ undefined ("
            + ("fewer than 3 timed" if timed < 3 else "no spread in MACs or latency")
            + ")"
        )
    lines = [
        "## Latency budget",
        "",
        text(budget_sentence(summary)),
        "",
        f"Rank correlation between MACs and measured latency over the {timed} timed candidates: {rho} "
        "(1 = MACs order them exactly as the clock does). MACs are what a proxy ranks students by; the "
        "further ρ falls below 1, the more that order is wrong on this target, which is why every "
        "candidate's shipped file is timed.",
        "",
    ]
    if plot_name is not None:
        lines += [f"![accuracy against measured latency]({quote(plot_name)})", ""]
    lines += [
        "| candidate | source | architecture | parameters | MACs | p50 | p90 | fits | pruned val top-1 "
        "| short-run val top-1 | long-run val top-1 | test top-1 | status |",
        "|---|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|---|",
    ]
    for row in sorted_rows(rows):
        cells = [
            text(row.name),
            text(row.source),
            text(row.arch),
            human_count(row.params),
            human_count(row.macs),
            _ms(row.p50_ms),
            _ms(row.p90_ms),
            "—" if row.fits is None else ("yes" if row.fits else "no"),
            _percent(row.pruned_val_top1),
            _percent(row.short_val_top1),
            _percent(row.long_val_top1),
            _percent(row.test_top1),
            text(row.status),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def human_count(value: int) -> str:
    """A count with three significant digits and a unit: 950, 12.3k, 289k, 4.5M, 1.2G."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            shown = f"{value / scale:.3g}"
            if "e" not in shown:
                return f"{shown}{unit}"
    return str(value)


def write_candidates(
    out_dir: Path, rows: Sequence[CandidateRow], summary: BudgetSummary
) -> tuple[Path, Path]:
    """candidates.csv (one row per candidate, the table's order, raw numbers) and candidates.json (the
    same rows and the summary), each written atomically. CSV text cells that a spreadsheet would run as
    a formula (starting with = + - @) get a leading apostrophe; the JSON keeps them as they are."""
    from kdforge.compress.atomic import atomic_write_text

    ordered = sorted_rows(rows)
    table = io.StringIO()
    writer = csv.DictWriter(table, _COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in ordered:
        writer.writerow({key: _csv_cell(value) for key, value in dataclasses.asdict(row).items()})
    csv_path, json_path = Path(out_dir) / "candidates.csv", Path(out_dir) / "candidates.json"
    atomic_write_text(csv_path, table.getvalue())
    head = dataclasses.asdict(summary) | {"winner": summary.winner.name}
    document = {"summary": head, "candidates": [dataclasses.asdict(row) for row in ordered]}
    atomic_write_text(json_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return csv_path, json_path


def _csv_cell(value: Any) -> Any:
    """A CSV cell: None empty, booleans true/false, numbers raw, text safe from formula injection."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _ms(value: float | None) -> str:
    return "—" if value is None else format_ms(value, digits=3)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}%"
