"""The decisions of a budget search, as pure functions of what was measured: which candidates fit, which
get the short distillation, which the longer one, and the winner."""

from __future__ import annotations

from typing import Any

from kdforge.compress.errors import UserError

from .candidates import Candidate


def latency_of(row: dict[str, Any] | None, percentile: str) -> float | None:
    """A timing row's latency at `percentile` (ms per call at the target's batch); None: not timed."""
    if row is None:
        return None
    value = row.get(percentile)
    return float(value) if isinstance(value, int | float) else None


def fitting(
    candidates: list[Candidate], timings: dict[str, dict[str, Any]], percentile: str, budget_ms: float
) -> list[Candidate]:
    """The timed candidates whose latency is within the budget, fastest first."""
    timed = [(latency_of(timings.get(c.name), percentile), c) for c in candidates]
    fits = [(ms, c) for ms, c in timed if ms is not None and ms <= budget_ms]
    return [c for _, c in sorted(fits, key=lambda pair: pair[0])]


def no_fit_error(
    candidates: list[Candidate],
    timings: dict[str, dict[str, Any]],
    percentile: str,
    budget_text: str,
    budget_ms: float,
    target_label: str,
) -> UserError:
    """One line naming the fastest candidate and its latency, when none meets the budget."""
    timed = [(latency_of(timings.get(c.name), percentile), c) for c in candidates]
    timed = [(ms, c) for ms, c in timed if ms is not None]
    if not timed:
        return UserError(
            f"no candidate could be timed on {target_label}; see the reasons in the search log and "
            "budget.sources / budget.candidates"
        )
    ms, fastest = min(timed, key=lambda pair: pair[0])
    return UserError(
        f"no candidate meets the budget {budget_text} ({budget_ms:.4g} ms {percentile}) on {target_label}: "
        f"the fastest is {fastest.label()} ({fastest.source}) at {ms:.4g} ms; raise the budget or add "
        "smaller architectures (budget.candidates)"
    )


def screen_picks(
    fits: list[Candidate], timings: dict[str, dict[str, Any]], percentile: str, count: int
) -> list[Candidate]:
    """At most `count` fitting candidates for the short distillation: taken in turn from each source
    (zoo, pruned, user, hand-picked), each source's slowest first (closest to the budget: the most
    compute it allows), so every source competes."""
    by_source: dict[str, list[Candidate]] = {}
    for candidate in sorted(fits, key=lambda c: -(latency_of(timings.get(c.name), percentile) or 0.0)):
        by_source.setdefault(candidate.source, []).append(candidate)
    picked: list[Candidate] = []
    hand = by_source.pop("hand-picked", [])
    picked += hand[:count]  # the hand-picked student always competes when it fits
    queues = list(by_source.values())
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def top_k(scores: dict[str, float], k: int) -> list[str]:
    """The `k` best-scoring names (validation top-1), ties broken by name for a repeatable order."""
    return [name for name, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]]


def winner(scores: dict[str, float], latency: dict[str, float]) -> str:
    """The best validation top-1 after the longer distillation; a tie goes to the faster candidate."""
    return min(scores, key=lambda name: (-scores[name], latency.get(name, float("inf")), name))
