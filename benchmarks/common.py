"""Shared by the benchmark scripts: the machine description and writing results as JSON + Markdown."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def slug(text: str) -> str:
    """A file-name-safe form of a device name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def write_results(
    name: str, payload: dict[str, Any], markdown: str, out_dir: Path = RESULTS
) -> tuple[Path, Path]:
    """<out_dir>/<name>.json and <name>.md (benchmarks/results by default)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    """A right-aligned Markdown table of string cells."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---:|" * len(header),
        *["| " + " | ".join(line) + " |" for line in lines],
    ]


def print_table(console: Any, title: str, header: list[str], lines: list[list[str]]) -> None:
    """The same table on the terminal (rich), right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="right")
    for line in lines:
        table.add_row(*line)
    console.print(table)


def check_lines(checks: dict[str, bool]) -> list[str]:
    """One Markdown bullet per check: its name and PASS or FAIL."""
    return [f"- {name}: **{'PASS' if ok else 'FAIL'}**" for name, ok in checks.items()]
