"""The hostile-file corpus: each probe builds, in a fresh folder, the files an attacker would hand a
kdforge user, and names the `kdforge` command the user would run on them. The tests run every probe in
this process (`run_in_process`); `benchmarks/hostile.py` runs each one in a bounded subprocess and
measures time and peak memory. A probe passes when the exit code is the expected one, an error is one
`kdforge: error:` line with no traceback, nothing appeared or changed under `outside/` (where every
payload aims its marker), and its own check, if any, finds nothing wrong.

Layout of a probe's folder: `work/` is the current directory of the command (runs go to `work/runs/`),
`outside/` is a folder the command must never write to, `files/` holds what the attacker hands over.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    """What one run of a probe's command did."""

    code: int
    stdout: str
    stderr: str
    root: Path

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def outside(self) -> Path:
        return self.root / "outside"


@dataclass
class Attack:
    """The command to run on the attacker's files, and what a safe kdforge does with it."""

    argv: list[str]
    expect_exit: int = 2
    # Extra verdict: returns what went wrong, or None. Runs after the generic checks.
    check: Callable[[Outcome], str | None] | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    """One hostile input: `build(root)` writes the files under root/files (root/work and root/outside
    exist already) and returns the Attack."""

    name: str
    item: int  # the item of issue 22 it covers
    what: str  # one line: what the attacker does
    build: Callable[[Path], Attack]


def mentions(*words: str) -> Callable[[Outcome], str | None]:
    """A check: the error line names every one of `words`."""

    def check(outcome: Outcome) -> str | None:
        missing = [w for w in words if w not in outcome.stderr]
        return f"the error does not name {missing}: {outcome.stderr[-300:]!r}" if missing else None

    return check


def prepare(root: Path) -> None:
    for sub in ("work", "outside", "files"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and mtime (links not followed)."""
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = path.lstat()
            found[str(path.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return found


def verdict(probe: Probe, attack: Attack, outcome: Outcome, before: dict[str, tuple[int, int]]) -> list[str]:
    """Everything wrong with one run of a probe (empty when it was handled safely)."""
    problems = []
    if outcome.code != attack.expect_exit:
        problems.append(f"exit {outcome.code}, expected {attack.expect_exit}")
    if "Traceback" in outcome.stderr or "Traceback" in outcome.stdout:
        problems.append("a traceback was printed")
    if attack.expect_exit == 2:
        errors = [line for line in outcome.stderr.splitlines() if line.strip()]
        if len(errors) != 1 or not errors[0].startswith("kdforge: error: "):
            problems.append(f"stderr is not one 'kdforge: error:' line: {outcome.stderr[-300:]!r}")
        elif len(errors[0]) > 600:
            problems.append(f"the error line is {len(errors[0])} characters long")
    after = snapshot(outcome.outside)
    if after != before:
        changed = sorted(set(after) ^ set(before) | {k for k in after if before.get(k) != after[k]})
        problems.append(f"written outside the run: {changed[:5]}")
    if attack.check is not None:
        extra = attack.check(outcome)
        if extra:
            problems.append(extra)
    return problems


def run_in_process(probe: Probe, root: Path) -> tuple[Attack, Outcome, list[str]]:
    """Build the probe under `root` and run its command through kdforge's `main` in this process, from
    root/work. Returns the attack, what happened and the problems found."""
    from kdforge.cli import main

    prepare(root)
    attack = probe.build(root)
    before = snapshot(root / "outside")
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    saved = {key: os.environ.get(key) for key in attack.env}
    os.environ.update(attack.env)
    os.chdir(root / "work")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(attack.argv)
            except SystemExit as exc:
                code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
            except BaseException as exc:  # a crash is a finding, not a test error
                import traceback

                traceback.print_exc(file=err)
                code = -1 if not isinstance(exc, KeyboardInterrupt) else 130
    finally:
        os.chdir(previous)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    outcome = Outcome(code, out.getvalue(), err.getvalue(), root)
    return attack, outcome, verdict(probe, attack, outcome, before)
