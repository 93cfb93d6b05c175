"""DDP on CPU: two gloo processes under torchrun end with identical weights and exact reduced metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from kdforge.compress.data import build_data
from kdforge.compress.train.checkpoint import load_model
from kdforge.compress.train.metrics import evaluate
from safetensors.torch import load_file

from tests.compress.conftest import tiny_config

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


def test_two_gloo_ranks_end_with_identical_weights_and_exact_metrics(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]

    rank0, rank1 = (
        load_file(str(tmp_path / "rank0.safetensors")),
        load_file(str(tmp_path / "rank1.safetensors")),
    )
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ at {key}"

    # Only rank 0 writes the run directory; its checkpoint holds the same weights.
    model, _ = load_model(tmp_path / "checkpoints" / "last.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(value, rank0[key]), key

    # Validation accuracy reduced over the two shards equals a single-process evaluation of those weights.
    config = tiny_config()
    data = build_data(config.data)
    single = evaluate(model.eval(), data.loader("val", seed=0), torch.device("cpu"))
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 2
    assert logged[-1]["val_top1"] == single["top1"]


def _launch(out: Path, *extra: str) -> list[subprocess.Popen]:
    from tests.fault_harness import launch_ranks

    sets = ("data.image_size=16", "data.batch_size=32", "teacher.arch=resnet8", "teacher_train.epochs=4")
    argv = ["teacher", str(REPO / "recipes" / "digits.yaml"), "--out", str(out), "--no-progress"]
    return launch_ranks([*argv, *[arg for item in sets for arg in ("--set", item)], *extra])


def test_a_dead_rank_stops_the_others_with_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "run"
    rank0, rank1 = _launch(out, "--set", "device=cpu")
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip():
            assert time.monotonic() < deadline and rank0.poll() is None, "training never started"
            time.sleep(0.05)
        rank1.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        rank0.wait(timeout=60)  # bounded: no hang on a collective with a dead peer
        assert time.monotonic() - killed_at < 60
        errors = [line for line in rank0.stderr.read().splitlines() if "error" in line.lower()]
        assert rank0.returncode == 2 and len(errors) == 1, errors
        assert errors[0].startswith("kdforge: error: rank 0: lost another process of the 2-process run")
    finally:
        for process in (rank0, rank1):
            process.kill()
            process.wait()
            process.stderr.close()
    resumed = _launch(out, "--set", "device=cpu", "--resume")
    for process in resumed:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
        process.stderr.close()
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
