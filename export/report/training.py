"""The training table of `kdforge run`: one record per stage (`StageRow`, the rows of results.json), and
the Markdown that results.md and report.md both build from those records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kdforge.export.report.markdown import text

SELECTION_NOTE = (
    "Test top-1 is the checkpoint selected on the validation split; the test split is never used for "
    "selection."
)


@dataclass
class StageRow:
    """One line of the results table."""

    stage: str
    arch: str
    method: str
    params_m: float
    test_top1: float  # best-on-val checkpoint, on the test split
    last_test_top1: float
    best_epoch: int
    train_seconds: float
    checkpoint: str


def training_table(rows: Iterable[StageRow]) -> list[str]:
    """The Markdown lines of the training table and what its top-1 means."""
    lines = [
        "| stage | arch | method | params (M) | test top-1 | last-epoch top-1 | best epoch "
        "| train time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {text(r.stage)} | {text(r.arch)} | {text(r.method)} | {r.params_m:.3f} | {r.test_top1:.2f} "
        f"| {r.last_test_top1:.2f} | {r.best_epoch} | {r.train_seconds:.1f} |"
        for r in rows
    ]
    return [*lines, "", SELECTION_NOTE]


def results_markdown(title: str, rows: Iterable[StageRow]) -> str:
    """results.md: `title` (Markdown already, its user strings escaped) over the training table."""
    return "\n".join([f"# {title}", "", *training_table(rows)]) + "\n"
