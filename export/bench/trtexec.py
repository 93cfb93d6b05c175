"""Latency rows from trtexec's `--exportTimes` JSON, for devices that time TensorRT without Python.

trtexec writes one record per timed inference (warm-up excluded): `startInMs`, `endInMs`, `startComputeMs`,
`endComputeMs`, `startOutMs`, `endOutMs`, `inMs`, `computeMs`, `outMs`, `latencyMs` (in + compute + out) and
`endToEndMs` (older releases name the copies `h2dMs`/`d2hMs` and add enqueue times). The row is computed
from `computeMs`: the GPU time of one inference by CUDA events, host-device copies excluded, as
kdforge-runner and the Python profiler time TensorRT; only a file without it falls back to `latencyMs`,
which includes the copies (the row says so in `copies_included`)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.export.bench.timing import summarize

TIME_FIELDS = ("computeMs", "latencyMs")  # preferred first
MAX_RECORDS = 2_000_000


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a time")


def trtexec_samples(text: str, source: str) -> tuple[list[float], str]:
    """(per-inference milliseconds, the field they come from) of an `--exportTimes` file's text; a file
    that is not such a list of finite, non-negative times is one UserError line naming `source`."""
    try:
        records = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{source} is not trtexec --exportTimes JSON ({str(exc)[:80]})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise UserError(f"{source} is not trtexec --exportTimes JSON (a list of per-inference records)")
    records = [r for r in records if set(r) != {"count"}]  # a header some exporters write
    if not records:
        raise UserError(f"{source} holds no timed inference; run measure.sh again")
    if len(records) > MAX_RECORDS:
        raise UserError(f"{source} holds over {MAX_RECORDS} records; time fewer iterations")
    field = next((f for f in TIME_FIELDS if all(f in r for r in records)), None)
    if field is None:
        raise UserError(
            f"{source}: its records lack {' and '.join(TIME_FIELDS)}; export with trtexec 10 or 11"
        )
    samples = [r[field] for r in records]
    for index, value in enumerate(samples):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise UserError(f"{source}: record {index} has {field} {str(value)[:40]!r}, not a time in ms")
    return [float(v) for v in samples], field


def trtexec_row(samples: list[float], batch: int, field: str) -> dict[str, Any]:
    """A latency row (the profiler's fields) of trtexec's per-inference times taken from `field`. The
    memory figures are those of the process that ran trtexec, which its file does not give: 0."""
    stats = summarize(samples, batch, page_faults=0).as_dict()
    return {
        "backend": "trtexec",
        "copies_included": field != "computeMs",
        "clock": f"trtexec {field}",
        **stats,
        "peak_rss_mb": 0.0,
        "page_faults_per_run": 0.0,
    }


def trtexec_version(log: str) -> str:
    """'trtexec TensorRT v100300' from the first line trtexec prints ('trtexec' when not found)."""
    found = re.search(r"\[TensorRT v(\d{1,9})\]", log[:65536])
    return f"trtexec TensorRT v{found.group(1)}" if found else "trtexec"
