"""The candidate students of a budget search: zoo sweeps over depth and width, the teacher pruned with
Torch-Pruning (weights inherited), the user's own list and the recipe's hand-picked student; each with its
proxies (parameters, MACs), which only order and thin the list before anything is timed."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdforge.compress.config import BudgetConfig, NetworkConfig
from kdforge.compress.errors import UserError, first_line
from kdforge.compress.models import build
from kdforge.compress.proxy import cost

# The zoo swept per family. cnn_<convs>_<width> covers depth and width on a fine grid (it is the family of
# the embedded demo); the CIFAR families are the papers' students; torchvision's small models need 32 px.
CNN_GRID = tuple(f"cnn_{c}_{w}" for c in (1, 2, 3, 4, 6) for w in (4, 8, 12, 16, 24, 32, 48))
ZOO_FAMILIES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "cnn": tuple((name, {}) for name in CNN_GRID),
    "resnet": tuple(
        (name, {}) for name in ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet8x4")
    ),
    "wrn": tuple((f"wrn_{d}_{w}", {}) for d in (16, 40) for w in (1, 2)),
    "mobilenetv2": tuple(("mobilenetv2", {"width_mult": m}) for m in (0.25, 0.5, 0.75, 1.0)),
    "shufflenetv1": (("shufflenetv1", {}),),
    "shufflenetv2": tuple(("shufflenetv2", {"net_size": size}) for size in (0.5, 1, 1.5)),
    "tv": tuple(
        (f"tv:{name}", {})
        for name in ("resnet18", "mobilenet_v3_small", "mobilenet_v2", "shufflenet_v2_x0_5", "squeezenet1_1")
    ),
}
CIFAR_FAMILIES = ("cnn", "resnet", "wrn", "mobilenetv2", "shufflenetv1", "shufflenetv2")
TV_MIN_SIZE = 32  # torchvision's ImageNet models downsample 32x: smaller inputs vanish
_SAFE = re.compile(r"[^A-Za-z0-9_+-]")  # no dots: names become file names in a bundle


@dataclass
class Candidate:
    """One student the search may choose: how to build it, where it came from, and what it measured."""

    name: str  # unique and a safe folder name: zoo-cnn_2_16, pruned-w0.50, user-tv_resnet18
    source: str  # zoo | pruned | user | hand-picked
    arch: str
    options: dict[str, Any] = field(default_factory=dict)
    shape: dict[str, Any] | None = None  # a pruned network's recorded widths and dropped blocks
    init: str | None = None  # a pruned network's starting weights (the teacher's, pruned)
    params: int = 0
    macs: int = 0
    status: str = "proposed"
    pruned_val_top1: float | None = None

    def network(self) -> NetworkConfig:
        """The recipe's network section that builds (and starts) this candidate."""
        return NetworkConfig(arch=self.arch, options=dict(self.options), shape=self.shape, init=self.init)

    def label(self) -> str:
        """The architecture as the report names it: 'cnn_6_32 pruned w0.50' for a pruned teacher."""
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        base = f"{self.arch}({options})" if options else self.arch
        return f"{base} {self.name.removeprefix('pruned-')}" if self.source == "pruned" else base


def folder_name(source: str, arch: str, options: dict[str, Any]) -> str:
    """A safe, unique folder name for a candidate (an arch name may hold ':' or '/')."""
    suffix = "".join(f"_{k}{v}" for k, v in sorted(options.items()))
    return _SAFE.sub("_", f"{source}-{arch}{suffix}")[:120]


def family_of(arch: str) -> str:
    """The zoo family an architecture belongs to (its name's stem)."""
    if arch.startswith("tv:"):
        return "tv"
    for family in CIFAR_FAMILIES:
        if arch.startswith(family):
            return family
    return arch


def default_families(teacher_arch: str, image_size: int) -> list[str]:
    """The teacher's own family, the CIFAR students and, from 32 px up, torchvision's small models."""
    families = [family_of(teacher_arch)] if family_of(teacher_arch) in ZOO_FAMILIES else []
    families += [f for f in CIFAR_FAMILIES if f not in families]
    if image_size >= TV_MIN_SIZE:
        families.append("tv")
    return families


def zoo_candidates(budget: BudgetConfig, teacher_arch: str, image_size: int) -> list[Candidate]:
    """The zoo sweep of the families asked for (default: `default_families`)."""
    families = budget.families or default_families(teacher_arch, image_size)
    unknown = [f for f in families if f not in ZOO_FAMILIES]
    if unknown:
        raise UserError(
            f"budget.families: unknown family {unknown[0]!r}; choose from {', '.join(ZOO_FAMILIES)} "
            "(or list architectures in budget.candidates)"
        )
    return [
        Candidate(folder_name("zoo", arch, options), "zoo", arch, dict(options))
        for family in families
        for arch, options in ZOO_FAMILIES[family]
    ]


def listed_candidates(budget: BudgetConfig, student: NetworkConfig) -> list[Candidate]:
    """The user's own architectures (budget.candidates) and the recipe's hand-picked student.arch."""
    found = [Candidate(folder_name("hand-picked", student.arch, {}), "hand-picked", student.arch)]
    if "user" in budget.sources:
        found += [Candidate(folder_name("user", arch, {}), "user", arch) for arch in budget.candidates]
    return found


def with_proxies(
    candidates: list[Candidate], num_classes: int, input_shape: tuple[int, ...], seed: int
) -> list[Candidate]:
    """Each candidate's parameters and MACs for one image; a candidate that cannot be built or does not
    run on the input is kept with the reason as its status (the report lists it)."""
    for candidate in candidates:
        if candidate.params:  # a pruned candidate measured its own when it was made
            continue
        try:
            model = build_candidate(candidate, num_classes, seed)
            candidate.params, candidate.macs = cost(model, input_shape)
        except (UserError, RuntimeError, ValueError, TypeError) as exc:
            candidate.status = f"dropped: does not build for input {input_shape} ({first_line(exc, 100)})"
    return candidates


def build_candidate(candidate: Candidate, num_classes: int, seed: int) -> nn.Module:
    """The candidate's network with fresh weights (a fixed seed, so its exported file is the same bytes
    on a resumed or repeated search); a pruned candidate is rebuilt from its recorded shape."""
    from kdforge.compress.networks import start_network

    torch.manual_seed(seed)
    if candidate.shape is not None or candidate.init is not None:
        return start_network(candidate.network(), num_classes, "student")[0]
    return build(candidate.arch, num_classes, **candidate.options)


def proxy_filter(
    candidates: list[Candidate], teacher_params: int, teacher_macs: int, max_timed: int
) -> list[Candidate]:
    """The candidates worth timing: built, distinct, smaller than the teacher (parameters and MACs), and
    at most `max_timed` of them, spread evenly over log(MACs) (every pruned, user and hand-picked one is
    kept; zoo ones are thinned). The rest get their reason as status."""
    seen: set[tuple[Any, ...]] = set()
    kept: list[Candidate] = []
    for candidate in candidates:
        if candidate.status != "proposed":
            continue
        key = (candidate.arch, repr(sorted(candidate.options.items())), repr(candidate.shape))
        if key in seen:
            candidate.status = "duplicate of another candidate"
            continue
        seen.add(key)
        if candidate.source != "hand-picked" and (
            candidate.macs >= teacher_macs or candidate.params >= teacher_params
        ):
            candidate.status = "filtered by proxy: not smaller than the teacher"
            continue
        kept.append(candidate)
    fixed = [c for c in kept if c.source != "zoo"]
    zoo = sorted((c for c in kept if c.source == "zoo"), key=lambda c: c.macs)
    room = max(max_timed - len(fixed), max_timed // 2)  # the zoo keeps at least half the timing slots
    chosen = _log_spread(zoo, room)
    for candidate in zoo:
        if candidate not in chosen:
            candidate.status = f"filtered by proxy: {max_timed} timed at most (spread over MACs)"
    return fixed + chosen


def _log_spread(ordered: list[Candidate], count: int) -> list[Candidate]:
    """`count` candidates of an MACs-ordered list, as evenly spaced in log(MACs) as the list allows."""
    if len(ordered) <= count:
        return list(ordered)
    if count <= 0:
        return []
    logs = [math.log(max(c.macs, 1)) for c in ordered]
    low, high = logs[0], logs[-1]
    picked: list[Candidate] = []
    for i in range(count):
        goal = low + (high - low) * i / max(count - 1, 1)
        best = min(
            (c for c in ordered if c not in picked), key=lambda c: abs(math.log(max(c.macs, 1)) - goal)
        )
        picked.append(best)
    return sorted(picked, key=lambda c: c.macs)
