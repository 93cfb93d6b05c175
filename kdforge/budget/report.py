"""A budget search's report: the sentence, the candidates table (and CSV/JSON), the Pareto plot, then the
run's usual training and deployment tables (export/report)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.layout import RunLayout
from kdforge.export.report.budget import (
    BudgetSummary,
    CandidateRow,
    budget_markdown,
    budget_sentence,
    macs_latency_correlation,
    write_candidates,
)
from kdforge.export.report.training import StageRow

from . import select
from .candidates import Candidate

if TYPE_CHECKING:
    from kdforge.export.report.headline import Outcome

    from .search import Search

PARETO_PNG = "pareto.png"


def candidate_rows(search: Search, winner: Candidate, winner_test: float | None) -> list[CandidateRow]:
    """One report row per candidate proposed, in the report's schema."""
    percentile = search.config.budget.percentile
    budget_ms = search.budget_ms()
    rows = []
    for candidate in search.candidates:
        timing = search.timings.get(candidate.name)
        latency = select.latency_of(timing, percentile)
        rows.append(
            CandidateRow(
                name=candidate.name,
                source=candidate.source,
                arch=candidate.label(),
                params=candidate.params,
                macs=candidate.macs,
                p50_ms=select.latency_of(timing, "p50"),
                p90_ms=select.latency_of(timing, "p90"),
                fits=None if latency is None else latency <= budget_ms,
                status=candidate.status,
                pruned_val_top1=candidate.pruned_val_top1,
                short_val_top1=search.screen.get(candidate.name),
                long_val_top1=search.long.get(candidate.name),
                test_top1=winner_test if candidate is winner else None,
            )
        )
    return rows


def deployed_latency(deployed: dict[str, Any] | None, search: Search) -> float | None:
    """The winner's latency on the target as deploy re-measured it (same backend, precision, batch)."""
    if deployed is None:
        return None
    target = search.target
    for row in deployed["student"]["latency"]:
        if (row["backend"], row["precision"], row["batch"]) == (
            target.backend,
            target.precision,
            target.batch,
        ):
            return float(row[search.config.budget.percentile])
    return None


def write_budget_report(
    search: Search,
    decided: dict[str, Any],
    rows: list[StageRow],
    outcome: Outcome,
    deployed: dict[str, Any] | None,
    recipe_path: str | None,
) -> tuple[Path, str]:
    """candidates.csv/json, pareto.png and report.md in the run folder; the report and its sentence."""
    from kdforge.export.report.plots import plot_pareto

    out = search.where.root
    winner: Candidate = decided["winner"]
    table = candidate_rows(search, winner, outcome.student_top1)
    chosen = next(row for row in table if row.name == winner.name)
    percentile = search.config.budget.percentile
    summary = BudgetSummary(
        target_label=search.target.label(),
        percentile=percentile,
        budget_ms=decided["budget_ms"],
        budget_text=search.budget.describe(decided["budget_ms"]),
        teacher_arch=outcome.teacher_arch,
        teacher_ms=select.latency_of(search.timings.get("teacher"), percentile),
        teacher_test_top1=outcome.teacher_top1,
        winner=chosen,
        winner_ms_deployed=deployed_latency(deployed, search),
        winner_ce_test_top1=outcome.baseline_top1,
        timed=sum(1 for row in table if row.p50_ms is not None),
        method=outcome.method,
    )
    write_candidates(out, table, summary)
    plot = plot_pareto(table, summary, out / PARETO_PNG)
    section = budget_markdown(summary, table, plot.name, macs_latency_correlation(table)).splitlines()
    sentence = budget_sentence(summary)
    if deployed is None:
        report = RunLayout(out).report_md
        atomic_write_text(
            report, "\n".join([f"# kdforge run {search.config.name}: budget search", "", *section]) + "\n"
        )
        return report, sentence
    from kdforge.export.deploy import deploy_flag_words
    from kdforge.export.report import markdown, write_report
    from kdforge.pipeline import reproduce_commands

    commands = reproduce_commands(
        recipe_path,
        out,
        search.teacher_path,
        rows[-1].checkpoint,
        deploy_flag_words(deployed["student"]["options"]),
        deployed["student"]["files"].get("fp32", "STUDENT.onnx"),
        deployed["student"]["options"]["batches"],
    )
    title = (
        f"kdforge run {markdown.code(search.config.name)} on {markdown.text(search.config.data.name)}: "
        "compress to a budget and deploy"
    )
    report = write_report(
        out, title, rows, deployed["teacher"], deployed["student"], commands, sections=_body(section)
    )
    return report, sentence


def _body(section: list[str]) -> list[str]:
    """The budget section without a title line of its own (the report has one)."""
    return [line for line in section if not line.startswith("# ")] + [""]
