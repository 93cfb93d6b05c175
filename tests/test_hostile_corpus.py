"""The hostile-file corpus covers every finding of the attack review (items 1-13), and each area's probes
run in its own test file (tests/*/test_hostile_*.py); this checks the corpus itself."""

from __future__ import annotations

from tests.hostile.corpus import all_probes


def test_every_finding_has_a_probe() -> None:
    covered = {probe.item for probe in all_probes()}
    assert covered >= set(range(1, 14)), f"no probe for items {sorted(set(range(1, 14)) - covered)}"


def test_probes_are_described() -> None:
    for probe in all_probes():
        assert probe.what and len(probe.what) < 120, probe.name
        assert probe.name.replace("-", "").isalnum(), probe.name
