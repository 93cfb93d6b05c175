"""Where a network's starting weights came from (`Provenance`, recorded in checkpoints and report.md),
and the recipe options that name weights rather than architecture."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STARTING_OPTIONS = ("weights", "pretrained")  # recipe `options` that name starting weights, not architecture


@dataclass(frozen=True)
class Provenance:
    """Where a network's starting weights came from, and what of them was used."""

    source: str  # the file (or `torchvision <enum>` / `timm <repo>` and the cached file)
    format: str  # kdforge, state_dict, safetensors, torchvision, timm, torch.export
    sha256: str
    loaded: int = 0  # tensors taken from the file
    reinitialised: tuple[str, ...] = ()  # head tensors left at their fresh initialisation
    classes: tuple[int, int] | None = None  # (the file's class count, the run's) when the head changed

    def as_meta(self) -> dict[str, Any]:
        """The checkpoint's `meta["init"]` (JSON)."""
        return {
            "source": self.source,
            "format": self.format,
            "sha256": self.sha256,
            "loaded": self.loaded,
            "reinitialised": list(self.reinitialised),
            **({"classes": list(self.classes)} if self.classes else {}),
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Provenance:
        """The record `as_meta` wrote (a resumed run keeps its starting weights' record); missing or
        malformed fields read as unknown rather than failing the resume."""
        classes = meta.get("classes")
        pair = (
            isinstance(classes, (list, tuple))
            and len(classes) == 2
            and all(isinstance(c, int) for c in classes)
        )
        loaded = meta.get("loaded", 0)
        head = meta.get("reinitialised", ())
        return cls(
            str(meta.get("source", "?")),
            str(meta.get("format", "?")),
            str(meta.get("sha256", "")),
            loaded if isinstance(loaded, int) else 0,
            tuple(map(str, head)) if isinstance(head, (list, tuple)) else (),
            (classes[0], classes[1]) if pair else None,
        )

    def line(self, role: str, arch: str, what: str = "starting weights") -> str:
        """One line for the run's output."""
        start = f"{role} {arch}: {what} {self.source} ({self.format}, sha256 {self.sha256[:12]})"
        if self.format == "torch.export":
            return f"{start}: a frozen torch.export program, forward pass only"
        if not self.reinitialised:
            return f"{start}: loaded all {self.loaded} tensors"
        change = f", {self.classes[0]} -> {self.classes[1]} classes" if self.classes else ""
        return (
            f"{start}: loaded {self.loaded} tensors; re-initialised the classifier head "
            f"({', '.join(self.reinitialised)}{change}): fine-tuning"
        )


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(builder options, starting-weight options `weights`/`pretrained` that ask for weights)."""
    build = {k: v for k, v in options.items() if k not in STARTING_OPTIONS}
    named = {k: options[k] for k in STARTING_OPTIONS if k in options and options[k] not in (None, False)}
    return build, named
