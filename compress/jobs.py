"""Training jobs from a validated recipe: build data, networks and the method, then run the Trainer.

`train_teacher` and `distill_student` are what `kdforge teacher` / `kdforge compress` call; each
writes a self-contained run directory (config.yaml, checkpoints/, metrics.jsonl, result.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from kdforge.compress.atomic import atomic_write_text, remove_stale_temporaries
from kdforge.compress.config import (
    MethodConfig,
    NetworkConfig,
    RunConfig,
    TrainConfig,
    teacher_data,
    to_dict,
)
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.errors import UserError
from kdforge.compress.methods import (
    TEACHER_STRATEGIES,
    MethodContext,
    NetworkSpec,
    build_method,
    method_class,
)
from kdforge.compress.models import build
from kdforge.compress.runlock import run_lock
from kdforge.compress.train.checkpoint import check_fits, load_model, load_weights, read_checkpoint
from kdforge.compress.train.distributed import DistContext
from kdforge.compress.train.trainer import Trainer, TrainResult
from torch import nn


def resolve_device(name: str, context: DistContext | None = None) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is a user error."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError(
                "device cuda: no CUDA device is visible; use cpu (--set device=cpu, --device cpu)"
            )
        return torch.device("cuda", context.local_rank if context else 0)
    return torch.device("cpu")


def prepare_run_dir(out_dir: Path, config: RunConfig, resume: bool, is_main: bool = True) -> None:
    """Refuse to overwrite an earlier run unless resuming; record the resolved recipe."""
    if not resume and (out_dir / "checkpoints" / "last.safetensors").exists():
        raise UserError(
            f"{str(out_dir)!r} already holds a run; pass --resume to continue it or choose another --out"
        )
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        for folder in (out_dir, out_dir / "checkpoints"):  # debris of a killed run's unfinished writes
            remove_stale_temporaries(folder)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))


def network_meta(
    network: NetworkConfig, data: DataBundle, role: str, method: str, config: RunConfig
) -> dict[str, Any]:
    """Metadata stored with every checkpoint: enough to rebuild, evaluate and deploy the network."""
    return {
        "role": role,
        "method": method,
        "seed": config.seed,
        "model": {"arch": network.arch, "options": network.options, "num_classes": data.num_classes},
        "data": {
            "name": config.data.name,
            "classes": list(data.classes),
            "mean": list(data.mean),
            "std": list(data.std),
            "input_shape": list(data.input_shape),
        },
        "config": to_dict(config),
    }


def build_network(network: NetworkConfig, num_classes: int) -> nn.Module:
    """Build from the registry and, if `network.checkpoint` is set, start from those weights."""
    model = build(network.arch, num_classes, **network.options)
    if network.checkpoint:
        checkpoint = read_checkpoint(network.checkpoint)
        check_fits(checkpoint, num_classes=num_classes, arch=network.arch)
        load_weights(model, checkpoint)
    return model


def load_teacher(
    path: str | Path, data: DataBundle, arch: str | None = None
) -> tuple[nn.Module, NetworkSpec]:
    """A trained teacher and how it was built, checked against the class count (and `arch` if given)."""
    checkpoint = read_checkpoint(path)
    check_fits(checkpoint, num_classes=data.num_classes, arch=arch)
    model, checkpoint = load_model(path, num_classes=data.num_classes)
    model_meta = checkpoint.meta["model"]
    return model, NetworkSpec(model_meta["arch"], dict(model_meta.get("options") or {}))


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
    teacher: tuple[nn.Module, NetworkSpec] | None
    title: str  # the progress line's label
    registry: dict[str, Any] | None = None  # where `method.name` is looked up (None: student methods)


def _train(
    config: RunConfig, data: DataBundle, job: TrainingJob, out_dir: Path, session: Session
) -> TrainResult:
    context = session.context
    device = resolve_device(config.device, context)
    torch.manual_seed(config.seed)  # the network's initial weights are a function of the seed
    student = build_network(job.network, data.num_classes)
    method_context = MethodContext(
        num_classes=data.num_classes,
        student=NetworkSpec(job.network.arch, dict(job.network.options)),
        teacher=job.teacher[1] if job.teacher else None,
    )
    teacher = job.teacher[0] if job.teacher else None
    distiller = build_method(job.method, student, teacher, method_context, registry=job.registry)
    with run_lock(out_dir, enabled=context.is_main):  # one run per directory
        # only now, with every option and network validated, may the run directory's config.yaml change
        prepare_run_dir(out_dir, config, session.resume, context.is_main)
        trainer = Trainer(
            distiller,
            data,
            job.train,
            out_dir,
            seed=config.seed,
            device=device,
            meta=network_meta(job.network, data, job.role, job.method.name, config),
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
        standard = load_teacher(path, data, arch=network.arch)
        if standard[1].options != dict(network.options):
            raise UserError(
                f"checkpoint {str(path)!r} was built with options {standard[1].options}, not "
                f"{dict(network.options)}; the generous teacher must match the standard teacher"
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
    teacher = None
    if method_class(method.name).wants_teacher(method.options):
        path = teacher_path or config.teacher.checkpoint
        if not path:
            raise UserError(
                f"method {method.name!r} needs a teacher: pass --teacher PATH or set teacher.checkpoint"
            )
        teacher = load_teacher(path, data)
    title = f"student {config.student.arch} ({method.name})"
    job = TrainingJob("student", config.student, config.student_train, method, teacher, title)
    return _train(config, data, job, Path(out_dir), session or Session())


def evaluate_model(
    model: nn.Module, config: RunConfig, split: str = "test", data: DataBundle | None = None
) -> dict[str, float]:
    """Top-1/top-5 of a network on a split of the recipe's data set."""
    from kdforge.compress.train.metrics import evaluate

    data = data or build_data(config.data)
    device = resolve_device(config.device)
    model.to(device).eval()
    return evaluate(model, data.loader(split, seed=config.seed, device=device), device)


def evaluate_checkpoint(path: str | Path, config: RunConfig, split: str = "test") -> dict[str, float]:
    """Top-1/top-5 of a checkpoint on a split of the recipe's data set (its class count checked)."""
    data = build_data(config.data)
    model, _ = load_model(path, num_classes=data.num_classes)
    return evaluate_model(model, config, split, data)
