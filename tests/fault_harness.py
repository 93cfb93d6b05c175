"""Kill-and-resume harness shared by the fault tests and benchmarks/faults.py: run the `kdforge` CLI in a
subprocess, SIGKILL it after a given time, resume it, and compare the final weights bitwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def cli(
    argv: list[str],
    kill_after: float | None = None,
    timeout: float = 600,
    kill_when: Callable[[], bool] | None = None,
) -> tuple[int, float]:
    """Run `python -m kdforge argv`; SIGKILL it after `kill_after` seconds, or as soon as `kill_when()`
    holds (polled every 10 ms), if it is still running. Returns (exit code, -9 when killed; seconds)."""
    began = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "kdforge", *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while kill_when is not None and process.poll() is None:
        if kill_when():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    try:
        process.wait(timeout=kill_after if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            process.kill()
            raise
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.returncode, time.perf_counter() - began


def kill_and_resume(argv: list[str], kill_points: list[float], max_resumes: int = 10) -> dict[str, int]:
    """Start a run, kill it at each of `kill_points` (seconds into each attempt, first without and then
    with --resume), then resume until it finishes. Returns counts of kills that landed and resumes."""
    landed = 0
    resume: list[str] = []
    for point in kill_points:
        code, _ = cli([*argv, *resume], kill_after=point)
        if code == -signal.SIGKILL:
            landed += 1
        elif code != 0:
            raise AssertionError(f"run exited {code} before its kill point {point:.2f}s")
        resume = ["--resume"]
    for resumes in range(1, max_resumes + 1):
        code, _ = cli([*argv, "--resume"])
        if code == 0:
            return {"kills": landed, "resumes": resumes}
    raise AssertionError("the run did not finish after resuming")


def same_tensors(first: Path, second: Path) -> bool:
    """Bitwise equality of two safetensors files' tensors (same keys, dtypes, shapes and bytes)."""
    a, b = load_file(str(first)), load_file(str(second))
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and bool((a[k] == b[k]).all()) for k in a
    )


def launch_ranks(argv: list[str], world_size: int = 2) -> list[subprocess.Popen]:
    """`python -m kdforge argv` as the ranks of one gloo run on this machine (what torchrun would set up),
    stdout discarded, stderr piped."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        command = [sys.executable, "-m", "kdforge", *argv]
        ranks.append(
            subprocess.Popen(
                command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        )
    return ranks
