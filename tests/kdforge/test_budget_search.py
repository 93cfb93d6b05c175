"""`kdforge run --budget` end to end on a tiny digits setting (8 px images, teacher cnn_4_16): the decision
is made on the timed shipped files, the report and its tables say so, the measurement cache spares a
second search every timing, a killed search resumes without re-timing or re-training, bad requests are one
line before any work, and the remote loop (bundle -> the bundle's script on this machine as the device ->
--measured) decides on the device's rows."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "data.image_size=8",
    "teacher.arch=cnn_4_16",
    "teacher_train.epochs=2",
    "student.arch=cnn_2_8",
    "student_train.epochs=2",
    "budget.families=[cnn]",
    "budget.max_timed=5",
    "budget.prune_ratios=[0.5]",
    "budget.screen_epochs=1",
    "budget.max_screened=3",
    "budget.top_k=2",
    "budget.long_epochs=1",
    "budget.min_duration_s=0.05",
    "deploy.backends=[onnxruntime]",
    "deploy.precisions=[int8-u8]",
    "deploy.batches=[1]",
    "deploy.native=never",
    "deploy.min_duration_s=0.1",
]


def kdforge(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m kdforge run recipes/digits.yaml ARGS` with the tiny settings and its own KDFORGE_HOME."""
    sets = [arg for item in TINY for arg in ("--set", item)]
    command = [sys.executable, "-m", "kdforge", "run", "recipes/digits.yaml", "--no-progress", *sets, *args]
    env = {**os.environ, "KDFORGE_HOME": str(home)}
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=900
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def cache_lines(home: Path) -> int:
    path = home / "measurements.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One search under a budget of twice the hand-picked student's latency (p50, onnxruntime int8-u8)."""
    root = tmp_path_factory.mktemp("budget")
    home, out = root / "home", root / "run"
    done = kdforge("--budget", "student", "--target", "onnxruntime:int8-u8", "--out", str(out), home=home)
    return {"home": home, "out": out, "stdout": done.stdout, "timed": cache_lines(home)}


def test_the_report_opens_with_the_decision(searched: dict[str, object]) -> None:
    out = Path(str(searched["out"]))
    report = (out / "report.md").read_text().splitlines()
    body = [line for line in report[1:] if line.strip() and not line.startswith("#")]
    assert body[0].startswith("**Chosen:") or body[0].startswith("Chosen:")
    assert "onnxruntime int8-u8, batch 1" in body[0] and "candidates timed" in body[0]
    assert "Spearman" in "\n".join(report) and "(pareto.png)" in "\n".join(report)
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(searched["stdout"]).strip().splitlines()[-1].startswith("Chosen:")


def test_the_winner_fits_and_every_candidate_has_a_row(searched: dict[str, object]) -> None:
    out = Path(str(searched["out"]))
    document = json.loads((out / "candidates.json").read_text())
    summary, rows = document["summary"], document["candidates"]
    with open(out / "candidates.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    winner = next(r for r in rows if r["name"] == summary["winner"])
    assert winner["status"] == "winner" and winner["fits"] is True
    assert winner["p50_ms"] <= summary["budget_ms"]
    hand = next(r for r in rows if r["source"] == "hand-picked")
    assert summary["budget_ms"] == pytest.approx(hand["p50_ms"])  # --budget student
    sources = {r["source"] for r in rows}
    assert {"zoo", "pruned", "hand-picked"} <= sources
    timed = [r for r in rows if r["p50_ms"] is not None]
    assert summary["timed"] == len(timed) and all(
        r["fits"] == (r["p50_ms"] <= summary["budget_ms"]) for r in timed
    )
    # selection used the validation split only: the test split is reported once, for the winner
    assert winner["long_val_top1"] is not None and winner["test_top1"] is not None
    assert all(r["test_top1"] is None for r in rows if r["name"] != winner["name"])
    # deploy re-measured the winner on the target
    assert summary["winner_ms_deployed"] is not None


def test_pruned_networks_are_first_class(searched: dict[str, object], tmp_path: Path) -> None:
    """A pruned candidate's checkpoint records its shape and rebuilds from it alone: `kdforge eval` scores
    it and `kdforge compress --init` trains it, with no teacher in sight (the teacher file is moved away)."""
    from kdforge.compress.train.checkpoint import load_model

    from kdforge.cli import main

    out = Path(str(searched["out"]))
    pruned = sorted((out / "search" / "candidates").glob("pruned-*/pruned.safetensors"))[0]
    copy = tmp_path / "pruned.safetensors"
    shutil.copy(pruned, copy)
    model, checkpoint = load_model(copy)
    shape = checkpoint.meta["model"]["shape"]
    assert (
        shape["layers"] and sum(p.numel() for p in model.parameters()) == checkpoint.meta["pruned"]["params"]
    )
    assert main(["eval", str(copy), "--split", "val"]) == 0
    trained = tmp_path / "trained"
    sets = [
        arg for item in [*TINY, "student.arch=cnn_4_16", "student_train.epochs=1"] for arg in ("--set", item)
    ]
    done = subprocess.run(
        [sys.executable, "-m", "kdforge", "compress", "recipes/digits.yaml", "--method", "ce", "--init",
         str(copy), "--out", str(trained), "--no-progress", *sets],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    again, meta = load_model(trained / "checkpoints" / "best.safetensors")
    assert meta.meta["model"]["shape"] == shape
    assert [p.shape for p in again.parameters()] == [p.shape for p in model.parameters()]


def test_a_second_search_with_another_budget_times_nothing_again(
    searched: dict[str, object], tmp_path: Path
) -> None:
    """Same files, same target, same machine: every timing comes from the cache (the teacher is given,
    so the candidates' files are the same bytes)."""
    home, out = Path(str(searched["home"])), Path(str(searched["out"]))
    before = cache_lines(home)
    assert before == searched["timed"] and before > 3
    teacher = out / "teacher" / "checkpoints" / "best.safetensors"
    again = tmp_path / "again"
    done = kdforge(
        "--budget", "300%", "--target", "onnxruntime:int8-u8", "--out", str(again),
        "--set", f"teacher.checkpoint={teacher}", "--set", "deploy.enabled=false", home=home,
    )  # fmt: skip
    assert cache_lines(home) == before, done.stdout
    assert "(0 cached)" not in done.stdout


def test_a_budget_nothing_meets_is_one_line_before_any_training(
    searched: dict[str, object], tmp_path: Path
) -> None:
    out = Path(str(searched["out"]))
    teacher = out / "teacher" / "checkpoints" / "best.safetensors"
    run = tmp_path / "none"
    done = kdforge(
        "--budget", "1us", "--out", str(run), "--set", f"teacher.checkpoint={teacher}",
        home=Path(str(searched["home"])), check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "no candidate meets the budget 1us" in lines[0] and "the fastest is" in lines[0]
    )
    assert "Traceback" not in done.stderr
    assert not (run / "search" / "screen").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--budget", "3 parsecs"], "is not a latency budget"),
        (["--budget", "0.4"], "has no unit"),
        (["--budget", "1ms", "--target", "tensorrt:fp16"], "not available here"),
        (["--budget", "1ms", "--target", "aoti:int8"], "int8"),
        (["--budget", "1ms", "--target", "onnxruntime"], "BACKEND:PRECISION"),
        (["--bundle", "somewhere"], "--budget"),
    ],
)
def test_bad_requests_are_one_line_and_write_nothing(args: list[str], expected: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = kdforge(*args, "--out", str(run), home=tmp_path / "home", check=False)
    assert done.returncode == 2, done.stdout[-500:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not run.exists()


def test_a_killed_search_resumes_without_retiming_or_retraining(tmp_path: Path) -> None:
    """Kill the search once its first short distillation finished; --resume re-times nothing (no new
    cache line, no timing round) and reuses the finished stages (their result.json untouched)."""
    home, run = tmp_path / "home", tmp_path / "run"
    sets = [arg for item in TINY for arg in ("--set", item)]
    command = [sys.executable, "-m", "kdforge", "run", "recipes/digits.yaml", "--no-progress", *sets,
               "--budget", "student", "--out", str(run), "--set", "deploy.enabled=false"]  # fmt: skip
    env = {**os.environ, "KDFORGE_HOME": str(home)}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    screen = run / "search" / "screen"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if len(list(screen.glob("*/result.json"))) >= 1:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the search ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    finished = {p: p.stat().st_mtime_ns for p in screen.glob("*/result.json")}
    timed = cache_lines(home)
    assert finished and timed > 3
    done = kdforge(
        "--budget", "student", "--out", str(run), "--resume", "--set", "deploy.enabled=false", home=home
    )
    assert cache_lines(home) == timed
    assert "timing " not in done.stdout  # nothing left to time: the journal holds every row
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())
    assert (run / "report.md").is_file()


@pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler"
)
def test_the_remote_loop_decides_on_the_devices_rows(tmp_path: Path) -> None:
    """--bundle writes the shipped files (AOTInductor packages for aoti:fp32) and measure.sh; the script,
    run here as the device with kdforge-runner, writes rows; --measured imports them and the search
    decides on them (no timing of its own)."""
    from kdforge.export.native import build_native

    runner = build_native().binary
    home, run, bundle = tmp_path / "home", tmp_path / "run", tmp_path / "bundle"
    remote = [
        "--budget", "200%", "--target", "aoti:fp32", "--out", str(run), "--set", "budget.sources=[user]",
        "--set", "budget.candidates=[cnn_1_4]", "--set", "deploy.enabled=false",
    ]  # fmt: skip
    done = kdforge(*remote, "--bundle", str(bundle), home=home)
    assert "measure.sh" in done.stdout and not (run / "search" / "screen").exists()
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = {c["name"] for c in manifest["candidates"]}
    assert names == {"teacher", "hand-picked-cnn_2_8", "user-cnn_1_4"}
    measured = subprocess.run(
        ["sh", str(bundle / "measure.sh")], env={**os.environ, "KDFORGE_RUNNER": str(runner)},
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert measured.returncode == 0, measured.stderr[-2000:]
    done = kdforge(*remote, "--measured", str(bundle), "--resume", home=home)
    assert "imported 3 timings" in done.stdout and "timing " not in done.stdout
    assert cache_lines(home) == 0  # nothing was timed on this side
    from kdforge.export.bench.bundle import import_rows

    rows = json.loads((run / "candidates.json").read_text())["candidates"]
    timed = {r["name"]: r["p50_ms"] for r in rows if r["p50_ms"] is not None}
    device = import_rows(bundle / "results", bundle)  # the rows as the device wrote them
    assert timed == {name: pytest.approx(device[name]["p50"]) for name in names if name != "teacher"}
