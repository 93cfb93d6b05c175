"""Training jobs from a validated recipe: build data, networks and the method, then run the Trainer.

`train_teacher` and `distill_student` are what `kdforge teacher` / `kdforge compress` call; each
writes a self-contained run directory (config.yaml, checkpoints/, metrics.jsonl, result.json).
"""

from __future__ import annotations

import os
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
from kdforge.compress.train.checkpoint import check_fits, load_model, read_checkpoint, save_checkpoint
from kdforge.compress.train.distributed import DistContext
from kdforge.compress.train.trainer import Trainer, TrainResult
from kdforge.compress.weights import (
    EXPORTED_ONLY,
    ExportedTeacher,
    Provenance,
    fit_weights,
    load_exported,
    read_state_dict,
    sha256_file,
    sniff,
    split_options,
    start_weights,
)
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
    network: NetworkConfig,
    data: DataBundle,
    role: str,
    method: str,
    config: RunConfig,
    init: Provenance | None = None,
    teacher: Provenance | None = None,
) -> dict[str, Any]:
    """Metadata stored with every checkpoint: enough to rebuild, evaluate and deploy the network, and
    where its starting weights (`init`) and its teacher came from (source, format, SHA-256)."""
    options = split_options(network.options)[0]  # `weights`/`pretrained` name starting weights, not the arch
    return {
        "role": role,
        "method": method,
        "seed": config.seed,
        **({"init": init.as_meta()} if init else {}),
        **({"teacher": teacher.as_meta()} if teacher else {}),
        "model": {"arch": network.arch, "options": options, "num_classes": data.num_classes},
        "data": {
            "name": config.data.name,
            "classes": list(data.classes),
            "mean": list(data.mean),
            "std": list(data.std),
            "input_shape": list(data.input_shape),
        },
        "config": to_dict(config),
    }


def network_spec(network: NetworkConfig) -> NetworkSpec:
    """How the network is built: its arch and builder options (without the starting-weight options)."""
    return NetworkSpec(network.arch, split_options(network.options)[0])


def starting_point(network: NetworkConfig, role: str = "network") -> tuple[str, Any] | None:
    """(recipe key, value) of the network's starting weights: `init`, `checkpoint` (a start point for a
    network that trains), or a `weights`/`pretrained` option; None: fresh weights. Two at once is an error."""
    named = split_options(network.options)[1]
    given = [
        (f"{role}.{key}", value)
        for key, value in (("init", network.init), ("checkpoint", network.checkpoint))
        if value
    ] + [(f"{role}.options.{key}", value) for key, value in named.items()]
    if len(given) > 1:
        raise UserError(
            f"{given[0][0]} and {given[1][0]} both give the {role}'s starting weights; keep one "
            f"(e.g. --set {given[1][0]}=null" + (f", or --set {role}.options={{}})" if named else ")")
        )
    return given[0] if given else None


def start_network(
    network: NetworkConfig, num_classes: int, role: str = "network", *, load: bool = True
) -> tuple[nn.Module, Provenance | None]:
    """Build from the registry and start from the network's starting weights when it has some (any format
    of kdforge.compress.weights; a head for another class count is re-initialised: fine-tuning).
    `load=False` builds the bare network (a resumed run takes its weights from `last`)."""
    start = starting_point(network, role)
    spec = network_spec(network)
    model = build(spec.arch, num_classes, **spec.options)
    if start is None or not load:
        return model, None
    key, value = start
    if key.startswith(f"{role}.options."):
        named = split_options(network.options)[1]
        return model, start_weights(model, network.arch, num_classes, named=named, role=role)
    return model, start_weights(model, network.arch, num_classes, path=value, role=role)


def build_network(network: NetworkConfig, num_classes: int) -> nn.Module:
    """Build from the registry and start from `network.init` / `network.checkpoint` / pretrained weights."""
    return start_network(network, num_classes)[0]


def load_teacher(
    path: str | Path,
    data: DataBundle,
    arch: str | None = None,
    network: NetworkConfig | None = None,
    *,
    exported: bool = True,
) -> tuple[nn.Module, NetworkSpec | None]:
    """A trained teacher and how it was built (None for a torch.export program), checked against the data's
    class count (and `arch` if given).

    `path`: a kdforge checkpoint; a state dict or safetensors file of `network` (the recipe's teacher:
    arch and options); or, when `exported`, a torch.export program (.pt2) run for its forward pass only."""
    return load_teacher_with_source(path, data, arch, network, exported=exported)[:2]


def load_teacher_with_source(
    path: str | Path,
    data: DataBundle,
    arch: str | None = None,
    network: NetworkConfig | None = None,
    *,
    exported: bool = True,
) -> tuple[nn.Module, NetworkSpec | None, Provenance]:
    """`load_teacher`, and where the teacher came from (for the student's metadata)."""
    kind = sniff(path)
    if kind == "kdforge":
        checkpoint = read_checkpoint(path)
        check_fits(checkpoint, num_classes=data.num_classes, arch=arch)
        model, checkpoint = load_model(path, num_classes=data.num_classes)
        model_meta = checkpoint.meta["model"]
        spec = NetworkSpec(model_meta["arch"], dict(model_meta.get("options") or {}))
        return model, spec, Provenance(os.path.abspath(path), "kdforge", sha256_file(checkpoint.path))
    if kind in ("torch.export", "aoti"):
        if not exported:
            raise UserError(
                f"teacher {str(path)!r} is a torch.export program (.pt2); this needs the teacher's "
                "architecture: give a checkpoint or a state dict"
            )
        teacher, source = load_exported(path, data.input_shape, data.num_classes)
        return teacher, None, source
    if network is None or (arch is not None and network.arch != arch):
        raise UserError(
            f"teacher {str(path)!r} is a plain state dict: set teacher.arch (and teacher.options) to the "
            "architecture it was saved from"
        )
    spec = network_spec(network)
    model = build(spec.arch, data.num_classes, **spec.options)
    tensors, kind, _ = read_state_dict(path)
    loaded, _, _ = fit_weights(
        model,
        tensors,
        data.num_classes,
        where=f"teacher {str(path)!r}",
        arch=spec.arch,
        fine_tune=False,
        path=str(path),
    )
    return model, spec, Provenance(os.path.abspath(path), kind, sha256_file(path), loaded)


def given_teacher(
    config: RunConfig,
    path: str | Path,
    out_dir: str | Path,
    data: DataBundle | None = None,
    context: DistContext | None = None,
) -> tuple[str, str]:
    """A given teacher as something every later stage (eval, deploy) reads: a kdforge checkpoint or a
    torch.export program as they are; a state dict or safetensors file of `config.teacher` is checked and
    written as the kdforge checkpoint `<out_dir>/checkpoints/best.safetensors` (its source, format and
    SHA-256 in the metadata under `init`). Returns (the path to use, "kdforge" or "torch.export")."""
    kind = sniff(path)
    if kind == "kdforge":
        return str(path), kind
    if kind in ("torch.export", "aoti"):
        data = data or build_data(config.data)
        load_exported(path, data.input_shape, data.num_classes)  # fits the data set, or one line now
        return str(path), "torch.export"
    data = data or build_data(config.data)
    model, _, source = load_teacher_with_source(path, data, network=config.teacher)
    meta = network_meta(config.teacher, data, "teacher", "given", config, init=source)
    written = save_checkpoint(Path(out_dir) / "checkpoints", "best", model, meta)
    announce(f"{source.line('teacher', config.teacher.arch, 'weights')}; written as {written}", context)
    return str(written), "kdforge"


def evaluate_exported(
    path: str | Path, config: RunConfig, split: str = "test"
) -> tuple[dict[str, float], float]:
    """Top-1/top-5 of a torch.export teacher on a split of the recipe's data set, and its parameters (M)."""
    data = build_data(config.data)
    teacher, _ = load_exported(path, data.input_shape, data.num_classes)
    return evaluate_model(teacher, config, split, data), round(teacher.parameter_count() / 1e6, 3)


def announce(line: str, context: DistContext | None = None) -> None:
    """One line above the progress bars (stderr, like the epoch lines), on the main rank only."""
    if context is None or context.is_main:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(line, markup=False, highlight=False)


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
    last = out_dir / "checkpoints" / "last.safetensors"
    resuming = session.resume and last.is_file()  # the weights come from `last`: keep its record
    student, init = start_network(job.network, data.num_classes, job.role, load=not resuming)
    if resuming:
        init = _recorded_init(last)
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
        prepare_run_dir(out_dir, config, session.resume, context.is_main)
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
        standard = load_teacher(path, data, arch=network.arch, network=config.teacher, exported=False)
        options = network_spec(network).options
        if standard[1] is None or standard[1].options != options:
            raise UserError(
                f"checkpoint {str(path)!r} was built with options {standard[1] and standard[1].options}, "
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
        model, spec, source = load_teacher_with_source(path, data, network=config.teacher)
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


def _recorded_init(last: Path) -> Provenance | None:
    """The starting-weights record of a run's `last` checkpoint (a resumed run keeps it)."""
    init = read_checkpoint(last).meta.get("init")
    if not isinstance(init, dict):
        return None
    return Provenance(
        init.get("source", "?"),
        init.get("format", "?"),
        init.get("sha256", ""),
        int(init.get("loaded", 0)),
        tuple(init.get("reinitialised", ())),
    )


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
