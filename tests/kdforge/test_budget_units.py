"""The budget search's parts on their own: budgets as users write them, the proxy filter, the decisions
(fits, screening picks, top K, winner), shortened schedules, and a candidate whose export does not match
PyTorch dropped with its reason."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from kdforge.compress.config import BudgetConfig, NetworkConfig, TrainConfig
from kdforge.compress.errors import UserError
from kdforge.compress.latency_budget import parse_budget
from kdforge.export.bench.target import parse_target
from torch import nn

from kdforge.budget import select
from kdforge.budget.candidates import Candidate, listed_candidates, proxy_filter, zoo_candidates
from kdforge.budget.pruned import default_divisor, variants
from kdforge.budget.search import shortened


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [("0.4ms", "time", 0.4), ("400us", "time", 0.4), ("2 s", "time", 2000.0), (".5ms", "time", 0.5),
     ("25%", "teacher-share", 0.25), ("150 %", "teacher-share", 1.5), ("student", "student", 1.0)],
)  # fmt: skip
def test_budgets_as_users_write_them(text: str, kind: str, value: float) -> None:
    budget = parse_budget(text)
    assert budget.kind == kind and budget.value == pytest.approx(value)
    assert budget.resolve(teacher_ms=4.0, student_ms=0.8) == pytest.approx(
        {"time": value, "teacher-share": value * 4.0, "student": 0.8}[kind]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.4", "has no unit"), (0.4, "has no unit"), ("3 parsecs", "not a latency budget"),
     ("0ms", "above zero"), ("0%", "above 0%"), ("", "not a latency budget"), ("1e3ms", "not a latency")],
)  # fmt: skip
def test_budgets_that_are_not_one_line(text: object, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        parse_budget(text)  # type: ignore[arg-type]


def test_a_share_budget_needs_the_teacher_timed() -> None:
    with pytest.raises(UserError, match="teacher's latency"):
        parse_budget("25%").resolve(teacher_ms=None)


def _candidate(name: str, source: str, macs: int, params: int = 10) -> Candidate:
    return Candidate(name, source, name, params=params, macs=macs)


def test_the_proxy_filter_keeps_the_fixed_ones_and_spreads_the_zoo_over_log_macs() -> None:
    zoo = [_candidate(f"zoo-{m}", "zoo", m) for m in (10, 20, 40, 80, 160, 320, 640, 1280)]
    fixed = [_candidate("pruned-a", "pruned", 500), _candidate("hand", "hand-picked", 5000, params=10**9)]
    big = _candidate("zoo-big", "zoo", 10**6)
    kept = proxy_filter([*fixed, *zoo, big], teacher_params=10**6, teacher_macs=10**5, max_timed=6)
    names = [c.name for c in kept]
    assert names[:2] == ["pruned-a", "hand"]  # the hand-picked one is timed even when not smaller
    assert big.status.startswith("filtered by proxy: not smaller")
    spread = [c.macs for c in kept[2:]]
    assert len(spread) == 4 and spread[0] == 10 and spread[-1] == 1280  # both ends of the range
    gaps = [math.log(b / a) for a, b in itertools.pairwise(spread)]
    assert max(gaps) <= 2 * math.log(1280 / 10) / 3  # evenly spaced in log(MACs), up to the grid
    assert sum(c.status.startswith("filtered by proxy: 6 timed") for c in zoo) == 4


def test_duplicates_of_the_hand_picked_student_are_dropped_from_the_zoo() -> None:
    spec = BudgetConfig(latency="1ms", families=["cnn"])
    found = listed_candidates(spec, NetworkConfig(arch="cnn_2_16")) + zoo_candidates(spec, "cnn_6_32", 16)
    for candidate in found:
        candidate.params, candidate.macs = 1, 1
    proxy_filter(found, 10, 10, max_timed=100)
    duplicate = next(c for c in found if c.name == "zoo-cnn_2_16")
    assert duplicate.status == "duplicate of another candidate"
    assert next(c for c in found if c.source == "hand-picked").status == "proposed"


def test_torchvision_models_join_the_zoo_from_32_px() -> None:
    spec = BudgetConfig(latency="1ms")
    assert not any(c.arch.startswith("tv:") for c in zoo_candidates(spec, "resnet56", 16))
    assert any(c.arch.startswith("tv:") for c in zoo_candidates(spec, "resnet56", 32))
    with pytest.raises(UserError, match="unknown family 'vit'"):
        zoo_candidates(BudgetConfig(latency="1ms", families=["vit"]), "resnet56", 32)


def test_the_decisions() -> None:
    sources = (("a", "zoo"), ("b", "zoo"), ("c", "pruned"), ("d", "hand-picked"), ("e", "zoo"))
    candidates = [_candidate(name, source, 1) for name, source in sources]
    timings = {"a": {"p50": 1.0}, "b": {"p50": 2.0}, "c": {"p50": 2.5}, "d": {"p50": 3.0}, "e": {"p50": 9.0}}
    fits = select.fitting(candidates, timings, "p50", 3.0)
    assert [c.name for c in fits] == ["a", "b", "c", "d"]  # fastest first; equal to the budget fits
    picks = select.screen_picks(fits, timings, "p50", 3)
    # the hand-picked one, then each source's slowest in turn (pruned c at 2.5 ms before zoo b at 2.0)
    assert [c.name for c in picks] == ["d", "c", "b"]
    assert select.top_k({"a": 50.0, "b": 70.0, "c": 70.0}, 2) == ["b", "c"]
    assert select.winner({"a": 90.0, "b": 90.0}, {"a": 2.0, "b": 1.0}) == "b"  # a tie goes to the faster
    error = select.no_fit_error(candidates, timings, "p50", "0.5ms", 0.5, "onnxruntime int8-u8, batch 1")
    assert "the fastest is a (zoo) at 1 ms" in str(error) and "\n" not in str(error)


def test_shortened_schedules_scale_milestones_and_clamp_warmup() -> None:
    train = TrainConfig(epochs=240, milestones=[150, 180, 210], warmup_epochs=20)
    short = shortened(train, 16)
    assert (short.epochs, short.milestones, short.warmup_epochs) == (16, [10, 12, 14], 16)
    assert shortened(TrainConfig(epochs=10, milestones=[9]), 1).milestones == [1]


def test_pruning_variants_and_divisors() -> None:
    names = [name for name, _, _ in variants([0.25, 0.5], depth=True)]
    assert names == ["w25", "w50", "d50", "d50-w50", "d0", "d0-w50"]  # names become file names: no dots
    assert [name for name, _, _ in variants([0.375], depth=False)] == ["w37_5"]
    assert default_divisor(parse_target("tensorrt:int8")) == 32
    assert default_divisor(parse_target("tensorrt:fp16")) == 8
    assert default_divisor(parse_target("onnxruntime:int8-u8")) == 8


class _ExportsSomethingElse(nn.Module):
    """A network whose exported graph differs from its eager forward: ONNX parity must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.conv(x).mean((2, 3)))
        return y + 1.0 if torch.compiler.is_exporting() else y


def test_a_candidate_failing_onnx_parity_is_dropped_with_its_reason(tmp_path: Path) -> None:
    from kdforge.budget.shipped import ShippingData, ship

    torch.manual_seed(0)
    images = torch.randn(16, 3, 8, 8)
    data = ShippingData(images, [(images, torch.zeros(16, dtype=torch.long))], {"classes": []}, (1, 3, 8, 8))
    lines: list[str] = []
    target = parse_target("onnxruntime:fp32")
    liar = _ExportsSomethingElse().eval()
    shipped = ship(liar, "liar", "liar", target, data, tmp_path / "liar", lines.append)
    assert shipped.path is None and shipped.reason is not None
    assert shipped.reason.startswith("dropped: ONNX parity failed") and "\n" not in shipped.reason
    honest = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    honest(images)
    kept = ship(honest.eval(), "honest", "honest", target, data, tmp_path / "honest", lines.append)
    assert kept.path is not None and kept.path.is_file() and kept.reason is None
