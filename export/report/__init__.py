"""Reports of deploy results: PNG plots and the teacher-vs-student summary of `kdforge run`.

Names load on first use, so `kdforge.export.report.markdown` (escaping, used by deploy) does not import
matplotlib."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "plot_latency_vs_batch": "plots",
    "plot_teacher_vs_student": "plots",
    "comparison_rows": "summary",
    "write_report": "summary",
}
__all__ = ["comparison_rows", "plot_latency_vs_batch", "plot_teacher_vs_student", "write_report"]


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` when it is first asked for."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
