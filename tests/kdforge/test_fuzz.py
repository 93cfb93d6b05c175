"""Fuzzed recipes and command lines only ever end in exit 0 or exit 2 with one line: never a traceback,
never exit 1. Training itself is replaced by a stub (a valid recipe counts as accepted once every check
that runs before training has passed)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from kdforge.compress.config import RunConfig, load_recipe
from kdforge.compress.errors import UserError

from kdforge.cli import main
from tests.fuzz_inputs import command_lines, recipes


class _WouldTrain(Exception):
    """Raised instead of training: every check before it passed."""


def _no_training(*args, **kwargs):
    raise _WouldTrain


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=recipes())
def test_fuzzed_recipes_validate_or_fail_with_one_user_error(tree: dict) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "recipe.yaml"
        path.write_text(yaml.safe_dump(tree, allow_unicode=True))
        try:
            assert isinstance(load_recipe(path), RunConfig)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=recipes())
def test_fuzzed_recipes_through_the_cli_exit_0_or_2_with_one_line(tree: dict) -> None:
    with tempfile.TemporaryDirectory() as work, pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdforge.compress.train.trainer.Trainer.fit", _no_training)
        path = Path(work) / "recipe.yaml"
        path.write_text(yaml.safe_dump(tree, allow_unicode=True))
        _exit_0_or_2(["teacher", str(path), "--out", str(Path(work) / "run"), "--no-progress"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=command_lines)
def test_fuzzed_command_lines_exit_0_or_2_with_one_line(argv: list[str]) -> None:
    if argv[:1] == ["build-native"]:
        return
    with tempfile.TemporaryDirectory() as work, pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdforge.compress.train.trainer.Trainer.fit", _no_training)
        patch.chdir(Path(__file__).resolve().parents[2])
        _exit_0_or_2(
            [*argv, "--out", str(Path(work) / "run")] if argv[:1] in (["teacher"], ["run"]) else argv
        )


def _exit_0_or_2(argv: list[str]) -> None:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except _WouldTrain:
            return
        except SystemExit as exc:  # argparse --help prints and exits 0
            code = exc.code
    assert code in (0, 2), (argv, code, err.getvalue()[-500:])
    if code == 2:
        lines = [line for line in err.getvalue().strip().splitlines() if line.startswith("kdforge: error: ")]
        assert len(lines) == 1 and "Traceback" not in err.getvalue(), (argv, err.getvalue()[-500:])
