"""A latency budget as a user states it: an absolute time (`0.4ms`, `400us`, `2 s`), a share of the
teacher's latency measured in the same run (`25%`), or `student` (the recipe's own student.arch, measured in
the same run). Torch-free, so a recipe's budget is checked before anything loads."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from kdforge.compress.errors import UserError

UNITS_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1000.0}
_TIME = re.compile(r"\s*(\d{1,9}(?:\.\d{1,9})?|\.\d{1,9})\s*(ms|us|µs|s)\s*")
_SHARE = re.compile(r"\s*(\d{1,9}(?:\.\d{1,9})?)\s*%\s*")
EXAMPLES = "e.g. 0.4ms, 400us, 25% (of the teacher's measured latency) or student (the recipe's student's)"


@dataclass(frozen=True)
class LatencyBudget:
    """What the user asked for; `resolve` turns it into milliseconds once the reference is measured."""

    kind: Literal["time", "teacher-share", "student"]
    value: float  # milliseconds (time), a fraction of the teacher's latency (teacher-share), 1.0 (student)
    text: str  # as the user wrote it

    def resolve(self, teacher_ms: float | None, student_ms: float | None = None) -> float:
        """The budget in milliseconds, given the references measured on the target in this run."""
        if self.kind == "time":
            return self.value
        reference = teacher_ms if self.kind == "teacher-share" else student_ms
        if reference is None:
            what = "teacher" if self.kind == "teacher-share" else "hand-picked student"
            raise UserError(
                f"budget {self.text!r} needs the {what}'s latency on the target, which was not timed"
            )
        return self.value * reference

    def describe(self, budget_ms: float) -> str:
        """How the report states the budget: '0.4ms', '25% of the teacher (0.31 ms)'."""
        if self.kind == "time":
            return self.text.strip()
        if self.kind == "student":
            return f"the hand-picked student's latency ({budget_ms:.3g} ms)"
        return f"{100 * self.value:g}% of the teacher ({budget_ms:.3g} ms)"


def parse_budget(text: str | float | int, where: str = "budget.latency") -> LatencyBudget:
    """A budget from its text; one line naming the accepted forms for anything else (a bare number has no
    unit and is refused: 0.4 could be ms or s)."""
    bare = isinstance(text, str) and re.fullmatch(r"\s*[0-9.]{1,20}\s*", text)
    if isinstance(text, bool) or not isinstance(text, str) or bare:
        raise UserError(f"{where}: {str(text)[:30]!r} has no unit; write it with one, {EXAMPLES}")
    if text.strip().lower() == "student":
        return LatencyBudget("student", 1.0, text)
    share = _SHARE.fullmatch(text)
    if share:
        value = float(share[1]) / 100
        if not 0 < value <= 10:
            raise UserError(f"{where}: {text!r} must be a share above 0% and at most 1000% of the teacher")
        return LatencyBudget("teacher-share", value, text)
    timed = _TIME.fullmatch(text)
    if timed:
        value = float(timed[1]) * UNITS_MS[timed[2]]
        if not (0 < value <= 3_600_000 and math.isfinite(value)):
            raise UserError(f"{where}: {text!r} must be above zero and at most an hour")
        return LatencyBudget("time", value, text)
    raise UserError(f"{where}: {text[:60]!r} is not a latency budget; {EXAMPLES}")
