"""The one place that names the files and folders of a run folder, and prepares one for training.

A run folder is a training stage (`kdforge teacher` / `kdforge compress`: config.yaml, checkpoints/,
metrics.jsonl, result.json) or a pipeline (`kdforge run`: one stage folder per stage, deploy folders,
results.md|json, report.md); `RunLayout(root)` names both, and `.stage(name)` / `.deploy(role)` the
folders inside a pipeline's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from kdforge.compress.atomic import atomic_write_text, remove_stale_temporaries
from kdforge.compress.errors import UserError

if TYPE_CHECKING:
    from kdforge.compress.config import RunConfig

RUNS = Path("runs")  # where a recipe's run goes without --out: runs/<recipe name>
LOCK_NAME = ".kdforge.lock"


@dataclass(frozen=True)
class RunLayout:
    """Every path of a run folder, by what it holds."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str root reads as its Path

    @classmethod
    def default(cls, recipe_name: str) -> RunLayout:
        """runs/<recipe name> (the name is one safe path component: config.check)."""
        return cls(RUNS / recipe_name)

    # the folders of a pipeline (`kdforge run`)
    def stage(self, name: str) -> RunLayout:
        """A training stage's folder inside this pipeline's."""
        return RunLayout(self.root / name)

    @property
    def teacher(self) -> RunLayout:
        """The standard (cross-entropy) teacher's stage."""
        return self.stage("teacher")

    @property
    def teacher_given(self) -> RunLayout:
        """Where a given state-dict teacher is written as a kdforge checkpoint."""
        return self.stage("teacher-given")

    def teacher_strategy(self, name: str) -> RunLayout:
        """The stage of the teacher trained with strategy `name` ('standard': the standard teacher's)."""
        return self.teacher if name == "standard" else self.stage(f"teacher-{name}")

    def student(self, method: str) -> RunLayout:
        """The stage of the student trained with `method`."""
        return self.stage(f"student-{method}")

    def deploy(self, role: str) -> RunLayout:
        """The deploy folder of the pipeline's 'teacher' or 'student'."""
        return RunLayout(self.root / f"deploy-{role}")

    @property
    def results_md(self) -> Path:
        """The pipeline's training table, for people."""
        return self.root / "results.md"

    @property
    def results_json(self) -> Path:
        """The pipeline's training rows, for programs."""
        return self.root / "results.json"

    @property
    def report_md(self) -> Path:
        """The pipeline's report: training, deployed accuracy x latency x size, reproduce commands."""
        return self.root / "report.md"

    # the files of a training stage
    @property
    def config_yaml(self) -> Path:
        """The resolved recipe the stage trained with."""
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        """The stage's checkpoint folder."""
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        """The checkpoint with the best validation accuracy."""
        return self.checkpoints / "best.safetensors"

    @property
    def last(self) -> Path:
        """The last epoch's checkpoint (what a resume continues from)."""
        return self.checkpoints / "last.safetensors"

    @property
    def merged(self) -> Path:
        """A multi-branch `best` merged into its plain architecture (compress.reparam.save_merged)."""
        return self.checkpoints / "merged.safetensors"

    @property
    def metrics(self) -> Path:
        """One JSON line per epoch."""
        return self.root / "metrics.jsonl"

    @property
    def nonfinite(self) -> Path:
        """One JSON line per step whose loss was not finite."""
        return self.root / "nonfinite.jsonl"

    @property
    def result_json(self) -> Path:
        """The finished stage's result (test top-1/top-5, checkpoint paths)."""
        return self.root / "result.json"

    @property
    def lock(self) -> Path:
        """The lock file that keeps one run per folder."""
        return self.root / LOCK_NAME

    # the files of a deploy folder
    @property
    def deploy_json(self) -> Path:
        """The deploy record: everything measured, the checkpoint's SHA-256 and the options."""
        return self.root / "deploy.json"

    @property
    def deploy_md(self) -> Path:
        """The deploy record, for people."""
        return self.root / "deploy.md"

    @property
    def deploy_csv(self) -> Path:
        """The deploy folder's latency rows."""
        return self.root / "deploy.csv"

    @property
    def latency_png(self) -> Path:
        """The deploy folder's latency-against-batch plot."""
        return self.root / "latency.png"


def prepare_run_dir(layout: RunLayout, config: RunConfig, resume: bool, is_main: bool = True) -> None:
    """Refuse to overwrite an earlier run unless resuming; record the resolved recipe."""
    from kdforge.compress.config import to_dict

    if not resume and layout.last.exists():
        raise UserError(
            f"{str(layout.root)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    if is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        for folder in (layout.root, layout.checkpoints):  # debris of a killed run's unfinished writes
            remove_stale_temporaries(folder)
        atomic_write_text(layout.config_yaml, yaml.safe_dump(to_dict(config), sort_keys=False))
