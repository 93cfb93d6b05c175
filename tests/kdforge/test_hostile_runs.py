"""Issue 22 items 3, 4, 5, 7 and 12: run names and recorded paths stay in the run folder, --out never
replaces a user's files, YAML alias bombs are refused in one line, and reports escape what they quote."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import pytest
from kdforge.compress.config import MAX_YAML_NODES, load_recipe, parse_yaml
from kdforge.compress.errors import UserError
from kdforge.compress.runlock import check_run_dir, is_run_dir
from kdforge.compress.train.checkpoint import recorded_state_path
from kdforge.export.report.markdown import code, code_block, command, shown_command, text

from tests.hostile import run_in_process
from tests.hostile.runs import PROBES, USER_FILES, billion_laughs

HOSTILE = ["a`b`c", "x | y", "line\nbreak", "$(touch pwned)", "'quote\" `` ```", "*bold* _em_ [l](u) <b>"]


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_probe_is_handled_safely(probe, tmp_path: Path) -> None:
    began = time.perf_counter()
    _, outcome, problems = run_in_process(probe, tmp_path)
    assert problems == [], problems
    assert time.perf_counter() - began < 60, "refused before any training"
    mine = outcome.outside / "mine"
    if mine.exists():
        assert {p.name: p.read_text() for p in mine.iterdir()} == USER_FILES


def test_alias_bomb_is_refused_quickly_and_benign_aliases_still_work() -> None:
    began = time.perf_counter()
    with pytest.raises(UserError, match="aliases"):
        parse_yaml(billion_laughs(), "recipe")
    with pytest.raises(UserError, match="refers to a value that contains it"):
        parse_yaml("a: &a [1, *a]", "recipe")
    with pytest.raises(UserError, match="nested more than"):
        parse_yaml("[" * 100 + "]" * 100, "recipe")
    assert time.perf_counter() - began < 2
    assert parse_yaml("a: &x {k: 1}\nb: *x\n", "recipe") == {"a": {"k": 1}, "b": {"k": 1}}
    assert len(parse_yaml("[" + ", ".join(["1"] * (MAX_YAML_NODES // 2)) + "]", "r")) == MAX_YAML_NODES // 2


def test_set_alias_bomb_and_bad_name_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="aliases") as caught:
        load_recipe(None, [f"method.options.x={billion_laughs(flow=True)}"])
    assert len(str(caught.value)) < 300
    for name in ("/abs/path", "../../x", "a/b", "..", "", "x" * 101, "a b", "-x"):
        with pytest.raises(UserError, match="is not a run name"):
            load_recipe(None, [f"name={name}"] if name else ["name=''"])
    assert load_recipe(None, ["name=cifar100_wrn-40.2+kd"]).name == "cifar100_wrn-40.2+kd"


def test_error_messages_bound_the_values_they_show() -> None:
    with pytest.raises(UserError) as caught:
        load_recipe(None, ["seed=[" + ", ".join(["'" + "y" * 1000 + "'"] * 1000) + "]"])
    assert len(str(caught.value)) < 300


def test_out_folder_rules(tmp_path: Path) -> None:
    check_run_dir(tmp_path / "new")  # missing: fine
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty")
    legacy = tmp_path / "legacy"  # a stage of a kdforge before the lock file
    (legacy / "checkpoints").mkdir(parents=True)
    (legacy / "config.yaml").write_text("name: a\nseed: 0\ndata: {}\nteacher: {}\nstudent: {}\nmethod: {}\n")
    assert is_run_dir(legacy)
    pipeline = tmp_path / "pipeline"  # a pipeline folder holding only a stage `kdforge teacher` trained
    (pipeline / "teacher").mkdir(parents=True)
    (pipeline / "teacher" / ".kdforge.lock").write_text("")
    check_run_dir(pipeline)
    mine = tmp_path / "mine"  # a user's own training folder, config.yaml and checkpoints/ included
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "config.yaml").write_text("lr: 0.1\n")
    with pytest.raises(UserError, match="did not write"):
        check_run_dir(mine)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / ".kdforge.lock").write_text("")
    (linked / "checkpoints").symlink_to(tmp_path / "empty")
    with pytest.raises(UserError, match="symbolic link"):
        check_run_dir(linked)


def test_recorded_state_path_stays_next_to_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoints" / "last.safetensors"
    assert recorded_state_path(checkpoint, "last.state-0123456789ab.pt") == checkpoint.parent / (
        "last.state-0123456789ab.pt"
    )
    for bad in ("../x.pth", "/etc/passwd", "..", "a/b.pt", 3, ["x"]):
        with pytest.raises(UserError, match="not a file next to it"):
            recorded_state_path(checkpoint, bad)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "link.pt").symlink_to(tmp_path / "outside.pt")
    with pytest.raises(UserError, match="not a file next to it"):
        recorded_state_path(checkpoint, "link.pt")


@pytest.mark.parametrize("value", HOSTILE)
def test_markdown_text_and_code_cannot_break_out(value: str) -> None:
    escaped = text(value)
    assert "\n" not in escaped and "|" not in escaped.replace("\\|", "")
    assert "`" not in escaped.replace("\\`", "")
    span = code(value)
    fence = span[: len(span) - len(span.lstrip("`"))]
    inner = span[len(fence) : -len(fence)]
    assert fence not in inner and "\n" not in span
    block = code_block([command("kdforge", "deploy", value)])
    assert all(not line.startswith(block[0]) for line in "\n".join(block[1:-1]).splitlines())
    assert (
        text("cnn_2_16 resnet8x4 onnxruntime-cuda (generous)")
        == "cnn_2_16 resnet8x4 onnxruntime-cuda (generous)"
    )


@pytest.mark.parametrize("value", HOSTILE)
def test_shown_commands_give_back_the_path(value: str, tmp_path: Path) -> None:
    from kdforge.pipeline import reproduce_commands

    path = str(tmp_path / value / "best.safetensors")
    commands = reproduce_commands(value, tmp_path / value, path, path, ["--batches", "1"], path, [1])
    for line in commands:
        words = shlex.split(line, comments=True)
        assert path in words or str(tmp_path / value) in words or value in words, line
    assert shlex.split(commands[1])[2] == path
    shown = "\n".join(shown_command(["kdforge", "deploy", path], "Reproduce: "))
    body = shown.removeprefix("Reproduce: ").strip().strip("`").strip() if "\n" not in value else None
    if body is not None:
        assert shlex.split(body)[2] == path


def test_results_and_deploy_markdown_escape_names(tmp_path: Path) -> None:
    import dataclasses

    from kdforge.export.deploy import deploy_markdown

    from kdforge.pipeline import StageRow, write_results

    config = dataclasses.replace(load_recipe(None, ["device=cpu"]), name="evil`name|x\n# heading")
    row = StageRow("teacher", "arch|`x`\n| injected |", "kd", 1.0, 1.0, 1.0, 1, 1.0, "c")
    write_results(tmp_path, config, [row])
    results = (tmp_path / "results.md").read_text()
    assert "\n# heading" not in results and "\n| injected |" not in results
    assert json.loads((tmp_path / "results.json").read_text())["recipe"] == config.name
    table_rows = [line for line in results.splitlines() if line.startswith("| teacher")]
    assert len(table_rows) == 1 and table_rows[0].replace("\\|", "").count("|") == 9
    checkpoint = str(tmp_path / "$(touch pwned) `x`" / "best.safetensors")
    result = {
        "arch": "a|b",
        "checkpoint": checkpoint,
        "input_shape": [1, 3, 8, 8],
        "parity": [],
        "files": {},
        "readiness": {},
        "accuracy": {"torch fp32": 50.0},
        "latency": [],
        "options": {"precisions": ["fp32"], "backends": ["torch"], "batches": [1]},
    }
    markdown = deploy_markdown(result)
    line = next(line for line in markdown.splitlines() if line.startswith("Reproduce: "))
    span = line.removeprefix("Reproduce: ")
    fence = span[: len(span) - len(span.lstrip("`"))]
    assert shlex.split(span[len(fence) : -len(fence)].strip())[2] == checkpoint
