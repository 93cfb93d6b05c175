"""Fault study: what kdforge survives. One row per fault kind: trials, survived (a clean one-line exit 2
or an exact resume), and checkpoint files lost or torn. Writes benchmarks/results/faults.{json,md}.

Kill-and-resume trials SIGKILL a tiny deterministic CPU run (resnet8 on 16x16 digits, 3 epochs, a step
checkpoint every 3 steps) at random moments, resume it, and compare `last` and `best` bitwise with an
uninterrupted run; after each kill every checkpoint on disk must still load.

    python benchmarks/faults.py [--kills 20] [--recipes 500] [--command-lines 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from common import machine, write_results
from hypothesis import HealthCheck, given, settings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kdforge.compress.config import load_recipe  # noqa: E402
from kdforge.compress.errors import UserError  # noqa: E402
from kdforge.compress.runlock import LOCK_NAME, run_lock  # noqa: E402
from kdforge.compress.train.checkpoint import load_train_state, read_checkpoint  # noqa: E402

from kdforge.cli import main as kdforge_main  # noqa: E402
from tests.compress.conftest import TINY  # noqa: E402
from tests.fault_harness import cli, launch_ranks, same_tensors  # noqa: E402
from tests.fuzz_inputs import command_lines, recipes  # noqa: E402

DIGITS = str(REPO / "recipes" / "digits.yaml")
SETS = [*TINY, "teacher.arch=resnet8", "teacher_train.checkpoint_every_steps=3"]


def train_argv(out: Path, *extra: str) -> list[str]:
    return [
        "teacher",
        DIGITS,
        "--out",
        str(out),
        "--no-progress",
        *[a for s in SETS for a in ("--set", s)],
        *extra,
    ]


def run_quietly(argv: list[str]) -> tuple[int, str]:
    """kdforge's main in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = kdforge_main(argv)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, err.getvalue()


def one_error_line(stderr: str) -> bool:
    lines = [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    return len(lines) == 1 and lines[0].startswith("kdforge: error: ")


def torn_checkpoints(folder: Path) -> int:
    """Checkpoint files on disk that do not load (weights, metadata, or the paired training state)."""
    torn = 0
    for weights in folder.glob("*.safetensors") if folder.is_dir() else []:
        try:
            checkpoint = read_checkpoint(weights)
            if checkpoint.meta.get("state_file"):
                load_train_state(checkpoint)
        except UserError:
            torn += 1
    return torn


def leftovers(folder: Path) -> int:
    """Temporary files of interrupted writes still present (a resume must have removed them)."""
    return len(list(folder.glob(".*.tmp"))) if folder.is_dir() else 0


class Row:
    """Counts for one fault kind."""

    def __init__(self, kind: str) -> None:
        self.kind, self.trials, self.survived, self.torn, self.notes = kind, 0, 0, 0, []

    def add(self, survived: bool, torn: int = 0, note: str | None = None) -> None:
        self.trials += 1
        self.survived += int(survived)
        self.torn += torn
        if note and not survived and len(self.notes) < 3:
            self.notes.append(note[:160])


def kill_and_resume(
    row: Row, work: Path, reference: Path, seconds: float, rng: random.Random, n: int
) -> None:
    for trial in range(n):
        out = work / f"kill{trial}"
        point = rng.uniform(0.25, 1.0) * seconds
        code, _ = cli(train_argv(out), kill_after=point)
        torn = torn_checkpoints(out / "checkpoints")
        resumed_from = _where(out)
        finished = code == 0 or cli([*train_argv(out), "--resume"])[0] == 0
        differ = ["(did not finish)"] if not finished else []
        for name in ("last", "best") if finished else ():
            expected, got = (folder / "checkpoints" / f"{name}.safetensors" for folder in (reference, out))
            if not same_tensors(expected, got):
                differ.append(name)
        left = leftovers(out / "checkpoints") + leftovers(out)
        note = f"kill at {point:.2f}s (exit {code}), resumed from {resumed_from}: {', '.join(differ)} differ"
        row.add(not differ and torn == 0 and left == 0, torn, f"{note}; {left} temporary files left")


def _where(out: Path) -> str:
    """Where a resume of `out` starts: the `last` checkpoint's epoch and step within the next epoch."""
    try:
        meta = json.loads((out / "checkpoints" / "last.json").read_text())
    except (OSError, ValueError):
        return "scratch"
    return f"epoch {meta.get('epoch')} + step {meta.get('batch_in_epoch', 0)}"


def kill_mid_epoch(row: Row, work: Path, reference: Path, n: int) -> None:
    for trial in range(n):
        out = work / f"mid{trial}"
        last = out / "checkpoints" / "last.json"
        wanted = 3 * (trial % 3 + 1)  # after the 1st, 2nd or 3rd step checkpoint of some epoch

        def reached(last: Path = last, wanted: int = wanted) -> bool:
            try:
                return json.loads(last.read_text()).get("batch_in_epoch", 0) >= wanted
            except (OSError, ValueError):
                return False

        cli(train_argv(out), kill_when=reached)
        torn = torn_checkpoints(out / "checkpoints")
        finished = cli([*train_argv(out), "--resume"])[0] == 0
        exact = finished and same_tensors(
            reference / "checkpoints" / "last.safetensors", out / "checkpoints" / "last.safetensors"
        )
        row.add(exact and torn == 0, torn, f"killed after step checkpoint {wanted}")


def storage_fault(row: Row, work: Path, code: int, n: int) -> None:
    """The disk fails (ENOSPC / EROFS) at the k-th checkpoint commit: one line, exit 2, last good kept."""
    for trial in range(n):
        out = work / f"storage{code}-{trial}"
        real_replace, commits = os.replace, []
        fail_at = trial + 2

        def failing(
            source: Any,
            target: Any,
            *args: Any,
            commits: list = commits,
            fail_at: int = fail_at,
            real_replace: Callable = real_replace,
            **kwargs: Any,
        ) -> None:
            if str(target).endswith(".safetensors"):
                commits.append(target)
                if len(commits) == fail_at:
                    raise OSError(code, os.strerror(code))
            real_replace(source, target, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "replace", failing)
            exit_code, stderr = run_quietly(train_argv(out))
        torn = torn_checkpoints(out / "checkpoints")
        resumed = run_quietly([*train_argv(out), "--resume"])[0] == 0
        row.add(exit_code == 2 and one_error_line(stderr) and torn == 0 and resumed, torn, stderr[-160:])


def busy_directory(row: Row, work: Path, n: int) -> None:
    for trial in range(n):
        out = work / f"busy{trial}"
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys,time\nfrom kdforge.compress.runlock import run_lock\n"
                "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
                str(out),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            holder.stdout.readline()
            code, stderr = run_quietly(train_argv(out))
            row.add(
                code == 2 and one_error_line(stderr) and f"process {holder.pid}" in stderr, 0, stderr[-160:]
            )
        finally:
            holder.kill()
            holder.wait()


def stale_lock(row: Row, work: Path, n: int) -> None:
    for trial in range(n):
        out = work / f"stale{trial}"
        out.mkdir()
        (out / LOCK_NAME).write_text('{"pid": 2147483646, "host": "gone", "started": "yesterday"}')
        try:
            with pytest.warns(UserWarning, match="no longer running"), run_lock(out):
                pass
            row.add(True)
        except Exception as exc:
            row.add(False, 0, repr(exc))


def nonfinite(row: Row, work: Path, policy: str) -> None:
    from kdforge.compress.methods.ce import CE

    original = CE.forward_train
    calls = {"n": 0}

    def poisoned(self: Any, images: torch.Tensor, labels: torch.Tensor) -> Any:
        logits, losses = original(self, images, labels)
        calls["n"] += 1
        if calls["n"] in (20, 30):
            losses = {k: v * float("nan") for k, v in losses.items()}
        return logits, losses

    out = work / f"nan-{policy}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CE, "forward_train", poisoned)
        code, stderr = run_quietly(train_argv(out, "--set", f"teacher_train.nonfinite={policy}"))
    last = out / "checkpoints" / "last.safetensors"
    weights_finite = last.is_file() and all(
        torch.isfinite(t).all() for t in read_checkpoint(last).tensors.values()
    )
    recorded = (out / "nonfinite.jsonl").is_file()
    ok = (code == 2 and one_error_line(stderr)) if policy == "stop" else code == 0
    row.add(ok and weights_finite and recorded, torn_checkpoints(out / "checkpoints"), stderr[-160:])


def hostile_files(row: Row, work: Path) -> None:
    """Files a user might be handed: each refused with one line (exit 2), nothing unpickled."""
    from safetensors.torch import save_file

    good_run = work / "hostile-source"
    assert run_quietly(train_argv(good_run, "--set", "teacher_train.epochs=1"))[0] == 0
    good = good_run / "checkpoints" / "last.safetensors"
    data = good.read_bytes()
    cases: dict[str, tuple[list[str], Callable[[Path], None]]] = {}

    def file_case(
        name: str, suffix: str, make: Callable[[Path], None], argv: Callable[[Path], list[str]]
    ) -> None:
        path = work / f"hostile-{name}{suffix}"
        make(path)
        cases[name] = (argv(path), make)

    evaluate = lambda p: ["eval", str(p)]  # noqa: E731
    file_case(
        "truncated checkpoint", ".safetensors", lambda p: p.write_bytes(data[: len(data) // 2]), evaluate
    )
    file_case("garbage checkpoint", ".safetensors", lambda p: p.write_bytes(os.urandom(4096)), evaluate)
    file_case(
        "foreign safetensors", ".safetensors", lambda p: save_file({"w": torch.zeros(3)}, str(p)), evaluate
    )
    file_case("empty file", ".safetensors", lambda p: p.write_bytes(b""), evaluate)
    file_case("garbage ONNX", ".onnx", lambda p: p.write_bytes(os.urandom(2048)), lambda p: ["bench", str(p)])
    file_case(
        "garbage engine", ".engine", lambda p: p.write_bytes(os.urandom(2048)), lambda p: ["bench", str(p)]
    )
    file_case("garbage .pt2", ".pt2", lambda p: p.write_bytes(os.urandom(2048)), lambda p: ["bench", str(p)])
    file_case(
        "not an image",
        ".png",
        lambda p: p.write_bytes(os.urandom(512)),
        lambda p: ["predict", str(good), str(p)],
    )
    for name, (argv, _) in cases.items():
        code, stderr = run_quietly(argv)
        row.add(code == 2 and one_error_line(stderr), 0, f"{name}: {stderr[-120:]}")

    # A training state file replaced by a pickle that would run code: refused, and the code never runs.
    victim = work / "hostile-pickle"
    assert run_quietly(train_argv(victim, "--set", "teacher_train.epochs=1"))[0] == 0
    marker = work / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    state = json.loads((victim / "checkpoints" / "last.json").read_text())["state_file"]
    torch.save({"x": Payload()}, victim / "checkpoints" / state)
    code, stderr = run_quietly([*train_argv(victim), "--resume"])
    row.add(code == 2 and one_error_line(stderr) and not marker.exists(), 0, stderr[-160:])


def dead_rank(row: Row, work: Path, n: int) -> None:
    for trial in range(n):
        out = work / f"ddp{trial}"
        ranks = launch_ranks(train_argv(out))
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline and ranks[0].poll() is None and not (out / "metrics.jsonl").is_file()
        ):
            time.sleep(0.05)
        ranks[1].send_signal(signal.SIGKILL)
        try:
            ranks[0].wait(timeout=60)
            stderr = ranks[0].stderr.read()
            row.add(ranks[0].returncode == 2 and one_error_line(stderr), 0, stderr[-160:])
        except subprocess.TimeoutExpired:
            row.add(False, 0, "rank 0 hung for 60 s")
        finally:
            for process in ranks:
                process.kill()
                process.wait()
                process.stderr.close()


def fuzz_recipes(row: Row, through_cli: Row, n: int, n_cli: int) -> None:
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(tree=recipes())
    def validate(tree: dict) -> None:
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "recipe.yaml"
            path.write_text(yaml.safe_dump(tree, allow_unicode=True))
            try:
                load_recipe(path)
                row.add(True)
            except UserError as exc:
                row.add("\n" not in str(exc), 0, str(exc))
            except Exception as exc:
                row.add(False, 0, f"{type(exc).__name__}: {exc}")

    @settings(max_examples=n_cli, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(tree=recipes())
    def through_main(tree: dict) -> None:
        with tempfile.TemporaryDirectory() as work:
            path = Path(work) / "recipe.yaml"
            path.write_text(yaml.safe_dump(tree, allow_unicode=True))
            record_cli(through_cli, ["teacher", str(path), "--out", str(Path(work) / "run"), "--no-progress"])

    validate()
    through_main()


class _WouldTrain(Exception):
    pass


def _no_training(*args: Any, **kwargs: Any) -> None:
    raise _WouldTrain


def record_cli(row: Row, argv: list[str]) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdforge.compress.train.trainer.Trainer.fit", _no_training)
        try:
            code, stderr = run_quietly(argv)
        except _WouldTrain:
            row.add(True)
            return
        except Exception as exc:
            row.add(False, 0, f"{argv}: {type(exc).__name__}: {exc}")
            return
    row.add(code == 0 or (code == 2 and one_error_line(stderr)), 0, f"{argv}: exit {code} {stderr[-120:]}")


def fuzz_command_lines(row: Row, n: int) -> None:
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(argv=command_lines)
    def check(argv: list[str]) -> None:
        if argv[:1] == ["build-native"]:
            return
        with tempfile.TemporaryDirectory() as work:
            extra = ["--out", str(Path(work) / "run")] if argv[:1] in (["teacher"], ["run"]) else []
            record_cli(row, [*argv, *extra])

    check()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--recipes", type=int, default=500)
    parser.add_argument("--command-lines", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.chdir(REPO)
    started = time.perf_counter()
    rng = random.Random(args.seed)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        reference = work / "reference"
        code, seconds = cli(train_argv(reference))
        assert code == 0, "the reference run failed"
        studies: list[tuple[str, Callable[[Row], None]]] = [
            (
                f"SIGKILL at a random moment (of {seconds:.1f} s runs), then --resume",
                lambda r: kill_and_resume(r, work, reference, seconds, rng, args.kills),
            ),
            (
                "SIGKILL right after a mid-epoch step checkpoint, then --resume",
                lambda r: kill_mid_epoch(r, work, reference, 3),
            ),
            ("disk full (ENOSPC) at a checkpoint commit", lambda r: storage_fault(r, work, errno.ENOSPC, 3)),
            (
                "read-only file system (EROFS) at a checkpoint commit",
                lambda r: storage_fault(r, work, errno.EROFS, 2),
            ),
            ("second run on a directory in use", lambda r: busy_directory(r, work, 3)),
            ("lock left by a killed run", lambda r: stale_lock(r, work, 3)),
            ("NaN loss, policy stop", lambda r: nonfinite(r, work, "stop")),
            ("NaN loss, policy skip", lambda r: nonfinite(r, work, "skip")),
            (
                "hostile or broken files (checkpoint, ONNX, engine, .pt2, image, pickle)",
                lambda r: hostile_files(r, work),
            ),
            ("one rank of a 2-process gloo run killed", lambda r: dead_rank(r, work, 2)),
        ]
        for kind, study in studies:
            row = Row(kind)
            tick = time.perf_counter()
            study(row)
            print(
                f"{kind}: {row.survived}/{row.trials} survived ({time.perf_counter() - tick:.0f} s)",
                flush=True,
            )
            rows.append(row)
        recipe_row, cli_row = (
            Row("fuzzed recipes, validated"),
            Row("fuzzed recipes through `kdforge teacher`"),
        )
        fuzz_recipes(recipe_row, cli_row, args.recipes, max(100, args.recipes // 5))
        command_row = Row("fuzzed command lines")
        fuzz_command_lines(command_row, args.command_lines)
        rows += [recipe_row, cli_row, command_row]
        for row in rows[-3:]:
            print(f"{row.kind}: {row.survived}/{row.trials} survived", flush=True)
    info = machine()
    minutes = (time.perf_counter() - started) / 60
    lines = [
        "# Fault study",
        "",
        f"{info['date']}, {info['device']} ({info['cores']} cores), torch {info['torch']}; "
        f"`python benchmarks/faults.py --kills {args.kills} --recipes {args.recipes} --command-lines "
        f"{args.command_lines} --seed {args.seed}` ({minutes:.1f} min).",
        "",
        "Survived: a clean one-line exit 2 (or exit 0), and where the run continues, an exact resume "
        "(`last` and `best` bitwise equal to an uninterrupted run) that leaves no temporary file of an "
        "interrupted write behind. Torn: checkpoint files on disk that do not load, counted right after "
        "each fault.",
        "",
        "| fault | trials | survived | files lost or torn |",
        "|---|---:|---:|---:|",
        *[f"| {r.kind} | {r.trials} | {r.survived} | {r.torn} |" for r in rows],
    ]
    failures = [(r.kind, note) for r in rows for note in r.notes if r.survived < r.trials]
    if failures:
        lines += ["", "## Failures", "", *[f"- {kind}: {note}" for kind, note in failures]]
    print("\n".join(lines))
    payload = {
        "benchmark": "faults",
        "machine": info,
        "rows": [
            {"kind": r.kind, "trials": r.trials, "survived": r.survived, "torn": r.torn, "notes": r.notes}
            for r in rows
        ],
    }
    write_results("faults", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
