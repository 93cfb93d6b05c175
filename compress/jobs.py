"""Training jobs from a validated recipe: build data, networks and the method, then run the Trainer.

`train_teacher` and `distill_student` are what `kdforge teacher` / `kdforge compress` call; each
writes a self-contained run directory (`compress.layout.RunLayout`: config.yaml, checkpoints/,
metrics.jsonl, result.json). Loading teachers is `compress.teachers`, evaluation `compress.evaluation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from kdforge.compress.config import MethodConfig, NetworkConfig, RunConfig, TrainConfig, teacher_data
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.device import resolve_device
from kdforge.compress.errors import UserError
from kdforge.compress.layout import RunLayout, prepare_run_dir
from kdforge.compress.methods import (
    TEACHER_STRATEGIES,
    MethodContext,
    NetworkSpec,
    build_method,
    method_class,
)
from kdforge.compress.networks import network_spec, start_network
from kdforge.compress.runlock import run_lock
from kdforge.compress.teachers import load_teacher
from kdforge.compress.train.checkpoint import read_checkpoint
from kdforge.compress.train.distributed import DistContext
from kdforge.compress.train.meta import network_meta
from kdforge.compress.train.progress import announce
from kdforge.compress.train.trainer import Trainer, TrainResult
from kdforge.compress.weights import EXPORTED_ONLY, ExportedTeacher, Provenance
from torch import nn


@dataclass(frozen=True)
class Session:
    """How this process runs its jobs: resume or start fresh, progress bars, its rank in a process group."""

    resume: bool = False
    progress: bool = True
    context: DistContext = field(default_factory=DistContext)


@dataclass(frozen=True)
class TrainingJob:
    """One network to train: what it is, how it trains, with which method and (optional) teacher."""

    role: str  # "teacher" or "student": recorded in the checkpoint metadata
    network: NetworkConfig
    train: TrainConfig
    method: MethodConfig
    teacher: tuple[nn.Module, NetworkSpec | None] | None  # spec None: a torch.export program
    title: str  # the progress line's label
    registry: dict[str, Any] | None = None  # where `method.name` is looked up (None: student methods)
    teacher_source: Provenance | None = None  # recorded in the checkpoints' metadata


def _train(
    config: RunConfig, data: DataBundle, job: TrainingJob, out_dir: Path, session: Session
) -> TrainResult:
    context = session.context
    device = resolve_device(config.device, context)
    torch.manual_seed(config.seed)  # the network's initial weights are a function of the seed
    layout = RunLayout(out_dir)
    resuming = session.resume and layout.last.is_file()  # the weights come from `last`: keep its record
    student, init = start_network(job.network, data.num_classes, job.role, load=not resuming)
    if resuming:
        recorded = read_checkpoint(layout.last).meta.get("init")
        init = Provenance.from_meta(recorded) if isinstance(recorded, dict) else None
    elif init is not None:
        announce(init.line(job.role, job.network.arch), context)
    method_context = MethodContext(
        num_classes=data.num_classes,
        student=network_spec(job.network),
        teacher=job.teacher[1] if job.teacher else None,
    )
    teacher = job.teacher[0] if job.teacher else None
    distiller = _build_method(job, student, teacher, method_context)
    with run_lock(out_dir, enabled=context.is_main):  # one run per directory
        # only now, with every option and network validated, may the run directory's config.yaml change
        prepare_run_dir(layout, config, session.resume, context.is_main)
        trainer = Trainer(
            distiller,
            data,
            job.train,
            out_dir,
            seed=config.seed,
            device=device,
            meta=network_meta(job.network, data, job.role, job.method.name, config, init, job.teacher_source),
            context=context,
            resume=session.resume,
            progress=session.progress,
            title=job.title,
        )
        return trainer.fit()


def train_teacher(
    config: RunConfig,
    out_dir: str | Path,
    session: Session | None = None,
    *,
    data: DataBundle | None = None,
    standard_checkpoint: str | Path | None = None,
) -> TrainResult:
    """Train `config.teacher` with its strategy: cross-entropy ('standard') or the Generous Teacher.

    The generous strategy needs a standard teacher of the same architecture and class count:
    `standard_checkpoint`, else `teacher_strategy.standard_checkpoint`.
    """
    data = data or build_data(teacher_data(config.data))
    network = replace(config.teacher, checkpoint=None)
    strategy = config.teacher_strategy
    method, standard, registry = MethodConfig(name="ce"), None, None
    if strategy.name != "standard":
        path = standard_checkpoint or strategy.standard_checkpoint
        if not path:
            raise UserError(
                f"teacher_strategy {strategy.name!r} needs a standard teacher: pass --standard PATH "
                "or set teacher_strategy.standard_checkpoint"
            )
        loaded = load_teacher(path, data, arch=network.arch, network=config.teacher, exported=False)
        standard = (loaded.model, loaded.spec)
        options = network_spec(network).options
        if loaded.spec is None or loaded.spec.options != options:
            raise UserError(
                f"checkpoint {str(path)!r} was built with options {loaded.spec and loaded.spec.options}, "
                f"not {options}; the generous teacher must match the standard teacher"
            )
        method = MethodConfig(name=strategy.name, options=dict(strategy.options))
        registry = TEACHER_STRATEGIES
    title = f"teacher {network.arch}" + (f" ({strategy.name})" if standard else "")
    job = TrainingJob("teacher", network, config.teacher_train, method, standard, title, registry)
    return _train(config, data, job, Path(out_dir), session or Session())


def distill_student(
    config: RunConfig,
    out_dir: str | Path,
    session: Session | None = None,
    *,
    teacher_path: str | Path | None = None,
    method: MethodConfig | None = None,
    data: DataBundle | None = None,
) -> TrainResult:
    """Train `config.student` with `method` (default: the recipe's), from the teacher checkpoint."""
    data = data or build_data(config.data)
    method = method or config.method
    teacher, source = None, None
    if method_class(method.name).wants_teacher(method.options):
        path = teacher_path or config.teacher.checkpoint
        if not path:
            raise UserError(
                f"method {method.name!r} needs a teacher: pass --teacher PATH or set teacher.checkpoint"
            )
        model, spec, source = load_teacher(path, data, network=config.teacher)
        teacher = (model, spec)
        if source.format != "kdforge":
            arch = spec.arch if spec else "(torch.export)"
            announce(source.line("teacher", arch, "weights"), (session or Session()).context)
    title = f"student {config.student.arch} ({method.name})"
    job = TrainingJob(
        "student", config.student, config.student_train, method, teacher, title, teacher_source=source
    )
    return _train(config, data, job, Path(out_dir), session or Session())


def _build_method(
    job: TrainingJob, student: nn.Module, teacher: nn.Module | None, context: MethodContext
) -> Any:
    """The job's method around its networks; a torch.export teacher serves logits only (one line if the
    method wants more of it)."""
    if not isinstance(teacher, ExportedTeacher):
        return build_method(job.method, student, teacher, context, registry=job.registry)
    method_class(job.method.name, job.registry).validate_options(job.method.options, "method.options")
    try:
        distiller = build_method(job.method, student, teacher, context, registry=job.registry)
    except UserError as exc:
        if str(exc).startswith(f"teacher {teacher.path!r}"):
            raise
        raise UserError(
            f"method {job.method.name!r}: teacher {teacher.path!r} {EXPORTED_ONLY} ({exc})"
        ) from None
    if distiller.teacher is teacher and distiller.trains_teacher():
        raise UserError(
            f"method {job.method.name!r} trains its teacher: teacher {teacher.path!r} {EXPORTED_ONLY}"
        )
    return distiller
