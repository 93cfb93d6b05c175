"""The report of a latency-budget search (export/report/budget.py, plots.pareto_figure) and the plain
millisecond tick labels every latency plot uses (export/report/ticks.py)."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from kdforge.export.report.budget import (
    BudgetSummary,
    CandidateRow,
    budget_markdown,
    budget_sentence,
    macs_latency_correlation,
    rank_correlation,
    write_candidates,
)
from kdforge.export.report.markdown import text
from kdforge.export.report.plots import (
    latency_vs_batch_figure,
    pareto_figure,
    plot_pareto,
    teacher_vs_student_figure,
)
from kdforge.export.report.ticks import format_ms, plain_log_axis
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D

PLAIN_LABEL = re.compile(r"\d+(\.\d+)? (ms|s)")
COLUMNS = 13  # of the candidates table


def _row(name: str, macs: int, p50: float | None, fits: bool | None, status: str, **kw: Any) -> CandidateRow:
    source, arch = name.split(":", 1)
    return CandidateRow(
        name=name,
        source=source,
        arch=kw.pop("arch", arch),
        params=macs // 20,
        macs=macs,
        p50_ms=p50,
        p90_ms=None if p50 is None else p50 * 1.2,
        fits=fits,
        status=status,
        **kw,
    )


@pytest.fixture
def rows() -> list[CandidateRow]:
    """Eight candidates: winner, top-K, short runs, a pruned one over budget, untimed ones."""
    return [
        _row("zoo:cnn_2_16", 120_000, 0.041, True, "winner", short_val_top1=90.1, long_val_top1=93.0,
             test_top1=94.2),
        _row("zoo:cnn_2_8", 60_000, 0.030, True, "top-K", short_val_top1=85.0, long_val_top1=88.25),
        _row("zoo:cnn_4_16", 300_000, 0.043, True, "short run", short_val_top1=89.0),
        _row("pruned:w0.50", 1_200_000, 0.040, True, "short run", arch="cnn_6_32", pruned_val_top1=80.5,
             short_val_top1=91.0),
        _row("pruned:w0.75", 2_500_000, 0.090, False, "over budget", arch="cnn_6_32", pruned_val_top1=95.0),
        _row("zoo:cnn_6_16", 4_500_000, 0.120, False, "over budget"),
        _row("user:resnet8", 12_300_000, None, None, "dropped: ONNX parity 3e-2 > 1e-3"),
        _row("zoo:cnn_3_8", 80_000, None, None, "filtered by proxy"),
    ]  # fmt: skip


@pytest.fixture
def summary(rows: list[CandidateRow]) -> BudgetSummary:
    return BudgetSummary(
        target_label="onnxruntime int8-u8, batch 1, 2 threads",
        percentile="p50",
        budget_ms=0.045,
        budget_text="0.045ms",
        teacher_arch="cnn_6_32",
        teacher_ms=0.31,
        teacher_test_top1=99.7,
        winner=rows[0],
        winner_ms_deployed=0.043,
        winner_ce_test_top1=86.6,
        timed=6,
        method="kd",
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.0123, "0.012 ms"),
        (0.041, "0.041 ms"),
        (0.2, "0.2 ms"),
        (0.31, "0.31 ms"),
        (1.0, "1 ms"),
        (2.345, "2.3 ms"),
        (9.96, "10 ms"),
        (15, "15 ms"),
        (123.4, "123 ms"),
        (999.6, "1 s"),
        (1500, "1.5 s"),
        (0.0001234, "0.00012 ms"),
        (0, "0 ms"),
        (float("nan"), "—"),
    ],
)
def test_format_ms(value: float, shown: str) -> None:
    assert format_ms(value) == shown


def _tick_labels(axis: Any, which: str) -> list[str]:
    """The labels drawn inside the view on `which` axis, major and minor; they must not overlap."""
    axis.figure.canvas.draw()
    renderer = axis.figure.canvas.get_renderer()  # pyright: ignore[reportAttributeAccessIssue]
    side = axis.xaxis if which == "x" else axis.yaxis
    low, high = sorted(side.get_view_interval())
    drawn = [
        label
        for label in [*side.get_ticklabels(), *side.get_ticklabels(minor=True)]
        if label.get_text() and low <= label.get_position()[0 if which == "x" else 1] <= high
    ]
    boxes = [label.get_window_extent(renderer) for label in drawn]
    overlaps = [
        (drawn[i].get_text(), drawn[j].get_text())
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]
    assert not overlaps, overlaps
    return [label.get_text() for label in drawn]


def _assert_plain(labels: list[str]) -> None:
    assert labels, "some tick carries a label"
    for label in labels:
        assert not any(bad in label for bad in ("10^", "×", "$", "e-", "e+")), label
        assert PLAIN_LABEL.fullmatch(label), label


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("span", [(0.01, 100), (0.02, 0.2), (0.03, 0.09), (0.031, 0.039), (0.001, 1e5)])
def test_log_axis_labels_are_plain_and_apart(which: str, span: tuple[float, float]) -> None:
    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    plain_log_axis(axis, which)  # pyright: ignore[reportArgumentType]
    (axis.set_xlim if which == "x" else axis.set_ylim)(*span)
    labels = _tick_labels(axis, which)
    plt.close(figure)
    _assert_plain(labels)
    if span == (0.01, 100):
        assert {"0.01 ms", "1 ms", "100 ms"} <= set(labels)


def _latency_rows() -> list[dict[str, Any]]:
    """Per-image latency (p50 / batch) from 100 ms (fp32 at batch 1) to 0.01 ms (fp16 at batch 64)."""
    return [
        {"backend": "onnxruntime", "precision": precision, "batch": batch, "p50": p50, "p90": p50 * 1.1}
        for precision, p50 in (("fp32", 100.0), ("fp16", 0.64))
        for batch in (1, 4, 16, 64)
    ]


def test_existing_latency_plots_have_plain_tick_labels() -> None:
    rows = _latency_rows()
    teacher = [dict(r, p50=r["p50"] * 50) for r in rows]
    for figure in (
        latency_vs_batch_figure(rows, "latency"),
        teacher_vs_student_figure(teacher, rows, 1, "pair"),
    ):
        _assert_plain(_tick_labels(figure.axes[0], "y"))
        plt.close(figure)


def test_pareto_plot(rows: list[CandidateRow], summary: BudgetSummary, tmp_path: Path) -> None:
    figure = pareto_figure(rows, summary)
    axis = figure.axes[0]
    _assert_plain(_tick_labels(axis, "x"))
    lines = {line.get_label(): line for line in axis.get_lines()}
    budget = [line for label, line in lines.items() if str(label).startswith("budget")]
    assert len(budget) == 1 and budget[0].get_label() == "budget 0.045 ms (p50)"
    assert budget[0].get_xdata()[0] == pytest.approx(0.045)  # pyright: ignore[reportIndexIssue]
    stars = [c for c in axis.collections if isinstance(c, PathCollection) and "teacher" in str(c.get_label())]
    assert len(stars) == 1 and stars[0].get_offsets().tolist() == [[0.31, 99.7]]  # pyright: ignore[reportAttributeAccessIssue]
    front = [line for label, line in lines.items() if "Pareto" in str(label)]
    assert len(front) == 1 and front[0].get_drawstyle() == "steps-post"
    assert any("winner: cnn_2_16 (zoo)" in t.get_text() for t in axis.texts)
    assert "onnxruntime int8-u8" in axis.get_title()
    legend = axis.get_legend()
    assert legend is not None and {"over budget", "fits the budget", "test (full distillation)"} <= {
        t.get_text() for t in legend.get_texts()
    }
    assert all(isinstance(h, Line2D | PathCollection) for h in legend.legend_handles)
    plt.close(figure)

    path = plot_pareto(rows, summary, tmp_path / "pareto.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"], "no temp files left"


def test_pareto_plot_draws_hostile_names(
    rows: list[CandidateRow], summary: BudgetSummary, tmp_path: Path
) -> None:
    """`$...$` would start matplotlib's math mode (a parse error at draw time); names are drawn literally."""
    winner = dataclasses.replace(rows[0], arch=r"$\frac{$", name=r"zoo:$\frac{$")
    hostile = dataclasses.replace(summary, winner=winner, target_label="a $x^$ b\nc", teacher_arch="$$")
    plot_pareto([winner, *rows[1:]], hostile, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_rank_correlation_by_hand_with_ties() -> None:
    # x ranks 1, 2.5, 2.5, 4, 5; y ranks 1, 3, 2, 4.5, 4.5: covariance 9, both variances 9.5
    assert rank_correlation([1, 2, 2, 3, 4], [10, 30, 20, 40, 40]) == pytest.approx(18 / 19)
    assert rank_correlation([1, 2, 3], [5, 50, 500]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_rank_correlation_is_pearson_of_average_ranks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        xs, ys = rng.integers(0, 6, size=25), rng.normal(size=25).round(1)

        def ranks(values: np.ndarray) -> np.ndarray:
            ordered = np.sort(values)
            return (
                np.searchsorted(ordered, values, "left") + np.searchsorted(ordered, values, "right") + 1
            ) / 2

        expected = np.corrcoef(ranks(xs), ranks(ys))[0, 1]
        assert rank_correlation(xs.tolist(), ys.tolist()) == pytest.approx(expected)


def test_rank_correlation_undefined() -> None:
    assert rank_correlation([], []) is None
    assert rank_correlation([1, 2], [2, 1]) is None
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError, match="pairs"):
        rank_correlation([1, 2, 3], [1, 2])


def test_budget_sentence(summary: BudgetSummary) -> None:
    assert budget_sentence(summary) == (
        "Chosen: cnn_2_16 (zoo), 0.041 ms p50 (0.043 ms re-measured by deploy) on onnxruntime int8-u8, "
        "batch 1, 2 threads against a budget of 0.045 ms; test top-1 94.2% (teacher cnn_6_32 99.7% at "
        "0.31 ms, the same student trained alone with CE 86.6%); 6 candidates timed."
    )
    relative = dataclasses.replace(
        summary, budget_text="25% of the teacher (0.31 ms)", winner_ms_deployed=None, winner_ce_test_top1=None
    )
    assert budget_sentence(relative) == (
        "Chosen: cnn_2_16 (zoo), 0.041 ms p50 on onnxruntime int8-u8, batch 1, 2 threads against a budget "
        "of 25% of the teacher (0.31 ms); test top-1 94.2% (teacher cnn_6_32 99.7% at 0.31 ms); "
        "6 candidates timed."
    )


def _table(markdown: str) -> list[str]:
    return [
        line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| candidate")
    ]


def test_budget_markdown(rows: list[CandidateRow], summary: BudgetSummary) -> None:
    rho = macs_latency_correlation(rows)
    assert rho == pytest.approx(
        rank_correlation([r.macs for r in rows[:6]], [r.p50_ms or 0 for r in rows[:6]])
    )
    markdown = budget_markdown(summary, rows, "pareto.png", rho)
    body = [line for line in markdown.splitlines() if line.strip() and not line.startswith("#")]
    assert body[0] == text(budget_sentence(summary))
    assert f"over the 6 timed candidates: Spearman ρ = {rho:.2f}" in markdown
    assert "![accuracy against measured latency](pareto.png)" in markdown
    table = _table(markdown)
    names = [line.split(" | ")[0].removeprefix("| ") for line in table]
    assert names == [
        "zoo:cnn_2_8",
        "pruned:w0.50",
        "zoo:cnn_2_16",
        "zoo:cnn_4_16",
        "pruned:w0.75",
        "zoo:cnn_6_16",
        "user:resnet8",
        "zoo:cnn_3_8",
    ], "every candidate once, fastest first, untimed last"
    winner = next(line for line in table if line.startswith("| zoo:cnn_2_16 "))
    assert winner.split(" | ")[1:] == [
        "zoo", "cnn_2_16", "6k", "120k", "0.041 ms", "0.0492 ms", "yes", "—", "90.1%", "93.0%", "94.2%",
        "winner |",
    ]  # fmt: skip
    assert "| 1.2M |" in markdown and "| 12.3M |" in markdown and "| — | — | — |" in markdown
    assert "Spearman ρ undefined (fewer than 3 timed)" in budget_markdown(summary, rows[:2], None, None)


def test_hostile_names_cannot_break_the_table(rows: list[CandidateRow], summary: BudgetSummary) -> None:
    evil = dataclasses.replace(
        rows[2],
        name="user:evil|`x`\n| injected | row |",
        source="user",
        arch="<script>alert(1)</script>|``a`` _b_",
        status="dropped:\n# heading\n| x |",
    )
    hostile = [*rows[:2], evil, *rows[3:]]
    markdown = budget_markdown(dataclasses.replace(summary, target_label="t|\n# h <b>"), hostile, None, None)
    assert "<script>" not in markdown and "\n# heading" not in markdown and "\n# h" not in markdown
    assert "\n| injected" not in markdown and "\n| x |" not in markdown
    table = _table(markdown)
    assert len(table) == len(hostile)
    assert all(line.replace("\\|", "").count("|") == COLUMNS + 1 for line in table)


def test_write_candidates(rows: list[CandidateRow], summary: BudgetSummary, tmp_path: Path) -> None:
    formula = dataclasses.replace(rows[7], name='=HYPERLINK("http://x")', status="@SUM(A1)", arch="-2+3")
    csv_path, json_path = write_candidates(tmp_path, [*rows[:7], formula], summary)
    assert {p.name for p in tmp_path.iterdir()} == {"candidates.csv", "candidates.json"}
    document = json.loads(json_path.read_text())
    assert document["summary"]["winner"] == "zoo:cnn_2_16" and document["summary"]["budget_ms"] == 0.045
    with csv_path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(document["candidates"]) == 8
    for line, record in zip(table, document["candidates"], strict=True):
        for key, value in record.items():
            if value is None:
                assert line[key] == "", key
            elif isinstance(value, bool):
                assert line[key] == str(value).lower()
            elif isinstance(value, int | float):
                assert float(line[key]) == value, key
            elif record["arch"] != "-2+3":
                assert line[key] == value
    neutral = next(line for line in table if line["name"].startswith("'="))
    assert neutral["name"] == '\'=HYPERLINK("http://x")' and neutral["status"] == "'@SUM(A1)"
    assert neutral["arch"] == "'-2+3"
    assert {r["name"] for r in document["candidates"]} >= {'=HYPERLINK("http://x")'}, "JSON keeps them raw"
