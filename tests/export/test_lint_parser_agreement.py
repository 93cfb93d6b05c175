"""Issue 25 part 5: the TensorRT lint's verdict on ONNX backend node-test models (onnx v1.16.0) equals the
verdict read off the onnx-tensorrt parser source (release/10.1-GA, 96e7811; tensor Slice / Pad axes from the
10.3 / 10.4 changelog at 0137504e), recorded per model with its file:function in
`tests/data/onnx_node_tests/verdicts.json` - written from the parser source, not from the lint's output.

`python -m tests.export.test_lint_parser_agreement` prints the agreement table `docs/deploy.md` carries.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from kdforge.export.lint import Problem, is_ready, lint_onnx
from kdforge.export.lint.rules import TRT10_TENSOR_AXES_SINCE

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "onnx_node_tests"
DOC = ROOT / "docs" / "deploy.md"
BEGIN, END = "<!-- node-test-agreement:begin -->", "<!-- node-test-agreement:end -->"
LATER = "accepted from "


@cache
def verdicts() -> dict[str, Any]:
    """The parser-derived verdicts file: its `parser` provenance and one entry per model."""
    return json.loads((DATA / "verdicts.json").read_text())


def _lint(name: str) -> list[Problem]:
    return lint_onnx(DATA / f"{name}.onnx", "tensorrt", 10)


def lint_verdict(problems: list[Problem]) -> str:
    """'accepted', 'accepted from 10.x' (ready; earlier 10.x want constant axes) or 'rejected: <rules>'."""
    if not is_ready(problems):
        return "rejected: " + ", ".join(sorted({p.rule for p in problems if p.severity == "error"}))
    later = sorted({TRT10_TENSOR_AXES_SINCE[p.op_type] for p in problems if p.rule == "trt-tensor-axes"})
    return LATER + later[-1] if later else "accepted"


def _agrees(expected: dict[str, str], found: str) -> bool:
    if expected["verdict"] == "rejected":
        return found.startswith("rejected: ") and expected["lint_rule"] in found.removeprefix("rejected: ")
    return found == expected["verdict"]


def agreement_rows() -> list[tuple[str, str, str, bool]]:
    """(model, parser-derived verdict, lint verdict, agree) for every committed node-test model."""
    rows = []
    for name, expected in verdicts()["verdicts"].items():
        parser = expected["verdict"] + (f": {expected['why']}" if expected["verdict"] != "accepted" else "")
        found = lint_verdict(_lint(name))
        rows.append((name, parser, found, _agrees(expected, found)))
    return rows


def markdown_table() -> str:
    """The agreement table as markdown, one row per model, and a count line."""
    rows = agreement_rows()
    lines = ["| model | parser-derived verdict | lint verdict (TensorRT 10) | agree? |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {p} | {f} | {'yes' if a else '**no**'} |" for n, p, f, a in rows]
    lines.append("")
    lines.append(f"{len(rows)} models, {sum(a for *_, a in rows)} agree.")
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(verdicts()["verdicts"]))
def test_lint_verdict_equals_the_parser_derived_verdict(name: str) -> None:
    expected = verdicts()["verdicts"][name]
    found = lint_verdict(_lint(name))
    assert _agrees(expected, found), (name, expected, found)


def test_every_verdict_cites_the_parser_source_and_the_selection_is_small() -> None:
    entries = verdicts()["verdicts"]
    files = sorted(DATA.glob("*.onnx"))
    assert {f.stem for f in files} == set(entries)  # every committed model has a verdict, and only those
    assert 40 <= len(entries) <= 80 and sum(f.stat().st_size for f in files) < 1_000_000
    for name, entry in entries.items():
        assert entry["verdict"] in ("accepted", "rejected") or entry["verdict"].startswith(LATER), name
        assert ".cpp" in entry["cite"] or "Changelog" in entry["cite"], name
        if entry["verdict"] != "accepted":
            assert entry["lint_rule"] and entry["why"], name
    assert "96e7811" in verdicts()["parser"]["read_at"] and "0137504e" in verdicts()["parser"]["later"]
    kinds = {e["verdict"].split(" from ")[0] for e in entries.values()}
    assert kinds == {"accepted", "rejected"}  # both outcomes are exercised


def test_the_deploy_doc_carries_this_table() -> None:
    text = DOC.read_text()
    assert BEGIN in text and END in text
    table = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table()


if __name__ == "__main__":
    print(markdown_table())
