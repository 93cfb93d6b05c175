"""Every probe of the hostile-file corpus, in one list (the tests parametrize per area; the benchmark and
the coverage test take them all)."""

from __future__ import annotations

import importlib

from tests.hostile import Probe

AREAS = ("code", "runs", "inputs", "lint")  # tests/hostile/<area>.py, each with PROBES


def all_probes() -> list[Probe]:
    """The probes of every area, in issue-item order; names are unique."""
    probes: list[Probe] = []
    for area in AREAS:
        probes += importlib.import_module(f"tests.hostile.{area}").PROBES
    names = [probe.name for probe in probes]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"probe names must be unique: {duplicated}")
    return sorted(probes, key=lambda probe: probe.item)
