"""The `kdforge` command: teacher, compress, run, eval, deploy, bench, predict, check, build-native, doctor,
models.

Each subcommand's parser names its handler (`set_defaults(handler=...)`); `main` only dispatches.

User mistakes print one line `kdforge: error: ...` and exit 2; anything else is an internal error
(traceback, exit 1), which is a bug to report.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import sys
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from rich.console import Console

from kdforge.compress.config import BudgetConfig, DeployConfig, from_dict, parse_yaml
from kdforge.compress.errors import UserError
from kdforge.export.bench.available import LATENCY_BACKENDS
from kdforge.export.trt_versions import TRT_VERSIONS

if TYPE_CHECKING:
    from kdforge.compress.config import RunConfig
    from kdforge.compress.jobs import Session
    from kdforge.compress.layout import RunLayout

EXIT_USER_ERROR = 2
STORAGE_ERRORS = {  # the machine, not kdforge: one line and exit 2, like any other user-fixable problem
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the output directory is on a read-only file system",
    errno.EACCES: "permission denied",
}
DEPLOY_OPTIONS = tuple(f.name for f in dataclasses.fields(DeployConfig) if "flag" in f.metadata)
BENCH_OPTIONS = ("backends", "batches", "device", "native", "min_duration_s")  # bench times as deploy does
BACKEND_NOTES = {"backends": f"known: {', '.join(LATENCY_BACKENDS)}"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit 2 like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _overrides(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a recipe key, e.g. --set {example} (repeatable); the command line wins over the "
        "recipe, and two command-line values for one thing (--set teacher.init and --init) are an error",
    )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/digits.yaml")
    _overrides(parser, "student_train.epochs=5")
    parser.add_argument("--out", help="run directory (default: runs/<recipe name>[/<stage>])")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (epoch lines still print)"
    )


CODE_WARNING = (
    "A .pt2 package and an .engine file are programs: loading one runs its native code. kdforge loads those "
    "it built for you (it signs their sidecars with a key in $KDFORGE_HOME) and refuses others unless you "
    "pass --trust-code."
)


def _trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="load a .pt2 package or .engine kdforge did not build here: it runs native code, so only "
        "one from someone you trust",
    )


def _bare(hint: Any) -> Any:
    """A field's type without its limits (Annotated) and without `| None`."""
    while True:
        origin = typing.get_origin(hint)
        if origin is Annotated:
            hint = typing.get_args(hint)[0]
        elif origin in (typing.Union, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        else:
            return hint


def _items(text: str) -> list[str]:
    """The non-empty items of a comma list."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _flag_reader(hint: Any) -> Callable[[str], Any]:
    """Flag text -> the value the same text would be in a recipe (a comma list -> a list, numbers as YAML
    reads them). It never refuses: `_from_flags` validates, so a mistake reads as it would in a recipe."""

    def scalar(text: str, kind: Any) -> Any:
        if kind not in (int, float):
            return text
        try:
            return parse_yaml(text, "a flag's value")  # bounded like a recipe: no alias bombs
        except yaml.YAMLError:
            return text

    bare = _bare(hint)
    if typing.get_origin(bare) is list:
        inner = _bare(typing.get_args(bare)[0])
        return lambda text: [scalar(item, inner) for item in _items(text)]
    return lambda text: scalar(text, bare)


def _config_flags(
    parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...], notes: dict[str, str] | None = None
) -> None:
    """Add the flags of config fields `names` of `cls`: flag name, default and help from the field."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    for name in names:
        flag, default = fields[name].metadata["flag"], getattr(defaults, name)
        text = fields[name].metadata["help"] + (f"; {notes[name]}" if notes and name in notes else "")
        if hints[name] is bool:
            action = argparse.BooleanOptionalAction if default else "store_true"
            parser.add_argument(flag, dest=name, action=action, default=default, help=text)
            continue
        if default is not None:
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            text += f" (default: {shown})"
        bare = _bare(hints[name])
        metavar = flag.removeprefix("--").upper().replace("-", "_")
        if typing.get_origin(bare) is Literal:
            metavar = "{" + ",".join(typing.get_args(bare)) + "}"
        parser.add_argument(
            flag,
            dest=name,
            default=default,
            type=_flag_reader(hints[name]),
            metavar=metavar,
            help=text.replace("%", "%%"),
        )


def _from_flags(args: argparse.Namespace, cls: type, names: tuple[str, ...]) -> Any:
    """Config `cls` from the flags of fields `names`, each validated as the same recipe value is (from_dict,
    the fields' limits); a mistake is the recipe's one-line message with the flag in front."""
    flags = {f.name: f.metadata.get("flag") for f in dataclasses.fields(cls)}
    values = {}
    for name in names:
        try:
            values[name] = getattr(from_dict(cls, {name: getattr(args, name)}), name)
        except UserError as exc:
            message = str(exc)
            if not message.startswith(name):
                raise
            raise type(exc)(f"{flags[name]}{message[len(name) :]}") from None
    return cls(**values)


def build_parser() -> argparse.ArgumentParser:
    """The full command-line interface."""
    parser = _Parser(prog="kdforge", description="Distill, merge, export and profile vision models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    teacher = commands.add_parser(
        "teacher", help="train a teacher: cross-entropy, or a Generous Teacher from a standard one"
    )
    _common(teacher)
    teacher.set_defaults(handler=_training_command(_teacher_run))
    teacher.add_argument(
        "--strategy",
        help="teacher strategy: standard or generous (default: the recipe's teacher_strategy.name)",
    )
    teacher.add_argument(
        "--init",
        metavar="PATH",
        help="start training from these weights (teacher.init): a kdforge checkpoint, a state dict "
        "(.pth/.pt/.bin) or a safetensors file of the recipe's teacher.arch; a head for another class "
        "count is re-initialised (fine-tuning). It replaces the recipe's starting weights (teacher.options "
        "weights/pretrained) and teacher.checkpoint, with a warning",
    )
    _format_flag(teacher, "--init-format", "the --init file (teacher.weights_format)")
    teacher.add_argument(
        "--standard",
        metavar="PATH",
        help="generous: the standard teacher's checkpoint (default: teacher_strategy.standard_checkpoint, "
        "else runs/<recipe name>/teacher/checkpoints/best.safetensors)",
    )
    compress = commands.add_parser("compress", help="distill a student from a teacher checkpoint")
    _common(compress)
    compress.set_defaults(handler=_training_command(_compress_run))
    compress.add_argument(
        "--teacher",
        help="the trained teacher: a kdforge checkpoint, a state dict or safetensors file of the recipe's "
        "teacher.arch, or a torch.export program (.pt2, logit methods only) (default: teacher.checkpoint "
        "of the recipe, else runs/<recipe name>/teacher/checkpoints/best.safetensors). It replaces the "
        "recipe's teacher.checkpoint and teacher.init, with a warning",
    )
    compress.add_argument(
        "--init",
        metavar="PATH",
        help="start the student from these weights (student.init): a kdforge checkpoint, a state dict or "
        "a safetensors file of the recipe's student.arch; a head for another class count is re-initialised. "
        "It replaces the recipe's starting weights (student.options weights/pretrained), with a warning",
    )
    _format_flag(compress, "--init-format", "the --init file (student.weights_format)")
    _format_flag(compress, "--teacher-format", "the --teacher file (teacher.weights_format)")
    compress.add_argument("--method", help="distillation method (default: the recipe's method.name)")
    run = commands.add_parser(
        "run", help="teacher [-> generous teacher] -> CE student -> distilled student -> deploy -> report"
    )
    _common(run)
    run.set_defaults(handler=_training_command(_pipeline_run))
    _budget_flags(run)
    evaluate = commands.add_parser(
        "eval", help="top-1, top-5 and loss of a checkpoint, state dict, .pt2 or ONNX file on a data split"
    )
    evaluate.add_argument(
        "file",
        metavar="FILE",
        help="a kdforge checkpoint (.safetensors, plain, multi-branch or merged, or the folder of "
        "best.safetensors); with --recipe also a state dict (.pth/.pt/.bin, tensors only, nothing "
        "unpickled) or safetensors file of the recipe's --role network, a torch.export program (.pt2) or "
        "an ONNX file kdforge exported (run in ONNX Runtime with the input size, mean and std stored in it)",
    )
    evaluate.add_argument(
        "--recipe",
        help="the data set (and, for a state dict, the architecture) from this recipe instead of the "
        "checkpoint's own; required for a state dict, .pt2 or ONNX file",
    )
    evaluate.add_argument(
        "--role",
        choices=["student", "teacher"],
        default="student",
        help="which network of the recipe a state dict holds: its student.arch (default) or teacher.arch "
        "and options; other files know their network",
    )
    _format_flag(evaluate, "--format", "a state dict given with --recipe (<role>.weights_format)")
    _overrides(evaluate, "data.root=/data/cifar")
    evaluate.add_argument("--split", choices=["test", "val"], default="test")
    evaluate.set_defaults(handler=_cmd_eval)
    models = commands.add_parser("models", help="list the model architectures kdforge can build")
    models.set_defaults(handler=_cmd_models)
    deploy = commands.add_parser(
        "deploy", help="merge -> ONNX -> fp16/int8 -> accuracy per precision -> latency, for one checkpoint"
    )
    deploy.add_argument("checkpoint", help="a .safetensors checkpoint written by kdforge (merged or not)")
    deploy.add_argument("--out", help="output folder (default: <checkpoint folder>/../deploy)")
    _config_flags(deploy, DeployConfig, DEPLOY_OPTIONS, BACKEND_NOTES)
    deploy.set_defaults(handler=_cmd_deploy)
    doctor = commands.add_parser("doctor", help="which backends are usable on this machine")
    doctor.set_defaults(handler=_cmd_doctor)
    bench = commands.add_parser(
        "bench",
        help="latency of a checkpoint, .onnx, .pt2 or .engine per backend and batch",
        description="Time a model per backend and batch. " + CODE_WARNING,
    )
    bench.add_argument("model", help="a kdforge .safetensors checkpoint, .onnx, .pt2 or .engine file")
    _trust_flag(bench)
    _config_flags(bench, DeployConfig, BENCH_OPTIONS, BACKEND_NOTES)
    native_flag = next(action for action in bench._actions if action.dest == "native")
    native_flag.nargs, native_flag.const = "?", "always"  # `--native` alone, as before it took a value
    bench.add_argument("--input-shape", help="C,H,W the model must take (checked against the file)")
    bench.set_defaults(handler=_cmd_bench)
    native = commands.add_parser(
        "build-native", help="build kdforge-runner, the C++ latency runner, with CMake"
    )
    native.add_argument(
        "--build-dir", help="build directory (default: ~/.cache/kdforge/native/<env>, where deploy looks)"
    )
    native.add_argument("--tensorrt-root", help="TensorRT install prefix (headers + libnvinfer)")
    native.add_argument("--onnxruntime-root", help="an extracted ONNX Runtime release (include/ + lib/)")
    native.set_defaults(handler=_cmd_build_native)
    predict = commands.add_parser(
        "predict",
        help="top-k classes of image files with a deployed model",
        description="Top-k classes of image files. " + CODE_WARNING,
    )
    _trust_flag(predict)
    predict.add_argument(
        "model", help="a kdforge .safetensors checkpoint, or an .onnx, .pt2 or .engine from kdforge deploy"
    )
    predict.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    predict.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    predict.set_defaults(handler=_cmd_predict)
    check = commands.add_parser(
        "check", help="lint an ONNX file for TensorRT (without TensorRT) or ONNX Runtime's CPU provider"
    )
    check.add_argument("model", help="an .onnx file")
    check.add_argument("--target", choices=["tensorrt", "onnxruntime"], default="tensorrt")
    check.add_argument(
        "--trt-version",
        type=int,
        choices=TRT_VERSIONS,
        default=TRT_VERSIONS[0],
        help="tensorrt: its major version",
    )
    check.add_argument("--json", action="store_true", help="print the problems as one JSON document")
    check.set_defaults(handler=_cmd_check)
    return parser


def _budget_flags(run: argparse.ArgumentParser) -> None:
    """`kdforge run`'s compress-to-a-budget flags (each stands for a key of the recipe's budget section)."""
    group = run.add_argument_group(
        "compress to a budget", "choose the student by its latency measured on a target (docs/budget.md)"
    )
    fields = {f.name: f.metadata for f in dataclasses.fields(BudgetConfig)}
    for name, kind in (
        ("latency", str),
        ("target", str),
        ("percentile", str),
        ("batch", int),
        ("threads", int),
    ):
        flag = fields[name]["flag"]
        group.add_argument(
            flag, dest=flag[2:], type=kind, metavar=name.upper(), help=fields[name]["help"].replace("%", "%%")
        )
    group.add_argument(
        "--bundle",
        metavar="DIR",
        help="for a target this machine cannot run: write the candidates' files and a script that times them "
        "on the device into DIR, then stop",
    )
    group.add_argument(
        "--measured",
        metavar="DIR",
        help="decide on the timings the bundle's script wrote on the device (DIR/results)",
    )


def _out_dir(args: argparse.Namespace, default: RunLayout) -> Path:
    """--out, else the command's folder under runs/<recipe name> (`RunLayout.default`; the recipe's name is
    one safe path component: config.check)."""
    return Path(args.out) if args.out else default.root


def _teacher_run(args: argparse.Namespace, config: RunConfig, console: Console, session: Session) -> Any:
    """`kdforge teacher`: a standard (CE) teacher, or a Generous Teacher from a standard one."""
    from kdforge.compress.jobs import train_teacher
    from kdforge.compress.layout import RunLayout

    runs = RunLayout.default(config.name)
    strategy = config.teacher_strategy.name
    standard = config.teacher_strategy.standard_checkpoint  # --standard is in it (RECIPE_FLAGS)
    if strategy != "standard" and standard is None and runs.teacher.best.is_file():
        standard = str(runs.teacher.best)
        console.print(f"using standard teacher {standard}", markup=False, highlight=False)
    out = _out_dir(args, runs.teacher_strategy(strategy))
    return train_teacher(config, out, session, standard_checkpoint=standard)


def _compress_run(args: argparse.Namespace, config: RunConfig, console: Console, session: Session) -> Any:
    """`kdforge compress`: distill the student from a teacher checkpoint."""
    from kdforge.compress.jobs import distill_student
    from kdforge.compress.layout import RunLayout

    runs = RunLayout.default(config.name)
    method = config.method
    teacher = config.teacher.checkpoint  # --teacher is in it (RECIPE_FLAGS)
    default = runs.teacher_strategy(config.teacher_strategy.name).best
    if teacher is None and default.is_file():
        teacher = str(default)
        console.print(f"using teacher {teacher}", markup=False, highlight=False)
    out = _out_dir(args, runs.student(method.name))
    return distill_student(config, out, session, teacher_path=teacher, method=method)


def _pipeline_run(args: argparse.Namespace, config: RunConfig, console: Console, session: Session) -> None:
    """`kdforge run`: the whole pipeline; it prints its own summary."""
    from kdforge.compress.layout import RunLayout
    from kdforge.pipeline import run_pipeline

    out = _out_dir(args, RunLayout.default(config.name))
    if config.budget.latency is None:
        for flag in ("bundle", "measured"):
            if getattr(args, flag):
                raise UserError(f"--{flag} belongs to a budget search: give --budget (docs/budget.md)")
        run_pipeline(config, out, session, console=console, recipe_path=args.recipe)
        return
    from kdforge.budget.search import Remote, run_budget_search

    remote = Remote(
        Path(args.bundle) if args.bundle else None, Path(args.measured) if args.measured else None
    )
    run_budget_search(config, out, session, console=console, recipe_path=args.recipe, remote=remote)


def _print_result(result: Any, merged: tuple[str, float] | None, console: Console) -> None:
    """The trained network's test top-1 and checkpoint (and its merged form's, when it has one)."""
    console.print(
        f"test top-1 {result.test_top1:.2f}% (best val epoch {result.best_epoch}), "
        f"last epoch {result.last_test_top1:.2f}%; checkpoint {result.best_path}",
        markup=False,
        highlight=False,
    )
    if merged is not None:
        console.print(
            f"merged (deployable) network: test top-1 {merged[1]:.2f}%; checkpoint {merged[0]}",
            markup=False,
            highlight=False,
        )


# Flags that stand for a recipe key, per command. The command line (--set and these) wins over the recipe
# file, saying what it replaced; two command-line values for the same thing are an error (load_recipe).
RECIPE_FLAGS = {
    "teacher": (
        ("--init", "teacher.init"),
        ("--init-format", "teacher.weights_format"),
        ("--standard", "teacher_strategy.standard_checkpoint"),
    ),
    "compress": (
        ("--init", "student.init"),
        ("--init-format", "student.weights_format"),
        ("--teacher", "teacher.checkpoint"),
        ("--teacher-format", "teacher.weights_format"),
    ),
    "run": tuple(
        (f"--{name}", f"budget.{key}")
        for name, key in (
            ("budget", "latency"),
            ("target", "target"),
            ("percentile", "percentile"),
            ("batch", "batch"),
            ("threads", "threads"),
        )
    ),
}


def _training_command(
    run: Callable[[argparse.Namespace, RunConfig, Console, Session], Any],
) -> Callable[[argparse.Namespace, Console], int]:
    """Wrap a training command: load and check the whole recipe (command line included) before any work,
    join the process group, report, and leave it cleanly."""

    def handler(args: argparse.Namespace, console: Console) -> int:
        from kdforge.compress.config import flag_setting, load_recipe

        strategy = getattr(args, "strategy", None)  # --strategy NAME is teacher_strategy.name=NAME
        overrides = [*args.overrides, *([f"teacher_strategy.name={strategy}"] if strategy else [])]
        flags = [
            flag_setting(flag, key, getattr(args, flag[2:].replace("-", "_")))
            for flag, key in RECIPE_FLAGS.get(args.command, ())
            if getattr(args, flag[2:].replace("-", "_")) is not None
        ]
        config = load_recipe(args.recipe, overrides, getattr(args, "method", None), flags)
        from kdforge.compress.device import resolve_device  # torch: after the recipe is checked
        from kdforge.compress.jobs import Session
        from kdforge.compress.train.distributed import init_distributed, peer_failure, shutdown

        context = init_distributed(resolve_device(config.device).type)
        session = Session(resume=args.resume, progress=not args.no_progress, context=context)
        try:
            result = run(args, config, console, session)
            if result is not None and context.is_main:
                from kdforge.pipeline import merge_and_evaluate

                _print_result(result, merge_and_evaluate(result, config), console)
            return 0
        except (RuntimeError, OSError) as exc:
            line = peer_failure(exc, context)
            if line is None:
                raise
            raise UserError(line) from exc
        finally:
            shutdown(context)

    return handler


def _format_flag(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    """A flag naming what a weights file holds (compress/weights/reference_format.py)."""
    from kdforge.compress.config import WEIGHTS_FORMATS

    parser.add_argument(
        flag,
        choices=WEIGHTS_FORMATS,
        help=f"what {what} holds: auto (default: one network, kdforge's or the CIFAR reference code's, "
        "CRD / mdistiller; crd is the same), or one network of an mdistiller run checkpoint "
        "(mdistiller-student, mdistiller-teacher)",
    )


EVAL_NEEDS_RECIPE = {
    "weights": "a state dict names no architecture or data set: pass --recipe whose student.arch (or "
    "teacher.arch with --role teacher) it was saved from",
    "torch.export": "a torch.export program names no data set: pass --recipe for the data",
    "onnx": "an ONNX file carries its preprocessing but not its data set: pass --recipe for the data",
}


def _cmd_eval(args: argparse.Namespace, console: Console) -> int:
    from kdforge.compress.config import RunConfig, apply_overrides, check, from_dict, load_recipe
    from kdforge.compress.train.checkpoint import read_checkpoint
    from kdforge.pipeline import eval_kind, evaluate_any

    kind = eval_kind(args.file)  # a file eval does not take is one line before any recipe is read
    if args.recipe:
        formats = [f"{args.role}.weights_format={args.format}"] if args.format else []
        config = load_recipe(args.recipe, [*args.overrides, *formats])
    elif kind == "kdforge":
        meta = read_checkpoint(args.file).meta
        config = from_dict(RunConfig, apply_overrides(dict(meta.get("config") or {}), args.overrides))
        check(config)
    else:
        raise UserError(f"{args.file!r}: {EVAL_NEEDS_RECIPE[kind]}")
    metrics = evaluate_any(args.file, config, args.split, args.role)
    console.print(
        f"{args.file}: {config.data.name} {args.split} split, {metrics['count']} images: "
        f"top-1 {metrics['top1']:.2f}%  top-5 {metrics['top5']:.2f}%  loss {metrics['loss']:.4f}",
        markup=False,
        highlight=False,
    )
    return 0


def _cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    from kdforge.compress.layout import RunLayout
    from kdforge.export.deploy import deploy, deploy_markdown

    config = _from_flags(args, DeployConfig, DEPLOY_OPTIONS)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "deploy"
    result = deploy(
        args.checkpoint, out, config, log=lambda line: console.print(line, markup=False, highlight=False)
    )
    console.print(deploy_markdown(result), markup=False, highlight=False)  # from the record, as deploy.md
    console.print(
        f"wrote {RunLayout(out).deploy_md}, deploy.json, deploy.csv, latency.png and the deployed files",
        markup=False,
        highlight=False,
    )
    return 0


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from kdforge.export.bench import COV_WARNING, TimingPolicy
    from kdforge.export.bench.run import bench_artifact

    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3:
            raise UserError(f"--input-shape: expected C,H,W like 3,32,32, got {args.input_shape!r}")
    options = _from_flags(args, DeployConfig, BENCH_OPTIONS)
    policy = TimingPolicy(min_duration_s=options.min_duration_s)
    backends = tuple(options.backends) if options.backends is not None else None
    batches = tuple(options.batches)
    rows = bench_artifact(
        args.model, backends, batches, policy, shape, options.device, options.native, args.trust_code
    )
    console.print(
        "backend            batch    p50 ms    p90 ms    p99 ms   CoV     images/s  faults/run", markup=False
    )
    for row in rows:
        flag = "  (noisy)" if row["cov"] > COV_WARNING else ""
        console.print(
            f"{row['backend']:<17} {row['batch']:>6} {row['p50']:>9.3f} {row['p90']:>9.3f} "
            f"{row['p99']:>9.3f} {100 * row['cov']:>5.1f}% {row['throughput']:>10.0f} "
            f"{row['page_faults_per_run']:>10.1f}{flag}",
            markup=False,
        )
    return 0


def _cmd_predict(args: argparse.Namespace, console: Console) -> int:
    import numpy as np

    from kdforge.export.artifact import open_artifact, preprocess

    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    artifact = open_artifact(args.model)
    logits = artifact.run(preprocess([Path(p) for p in args.images], artifact), trust_code=args.trust_code)
    if logits.ndim != 2 or logits.shape[1] != len(artifact.classes):  # a sidecar naming too few classes
        raise UserError(f"{args.model}: outputs {logits.shape} but names {len(artifact.classes)} classes")
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    probabilities = shifted / shifted.sum(1, keepdims=True)
    for image, row in zip(args.images, probabilities, strict=True):
        best = np.argsort(-row)[: args.top]
        ranked = ", ".join(f"{artifact.classes[i]} {100 * row[i]:.1f}%" for i in best)
        console.print(f"{image}: {ranked}", markup=False, highlight=False)
    return 0


def _cmd_build_native(args: argparse.Namespace, console: Console) -> int:
    from kdforge.export.native import build_native
    from kdforge.export.native.build import DEFAULT_BUILD_DIR

    built = build_native(
        args.build_dir or DEFAULT_BUILD_DIR,
        tensorrt_root=args.tensorrt_root,
        onnxruntime_root=args.onnxruntime_root,
        log=lambda line: console.print(line, markup=False, highlight=False),
    )
    console.print(f"built {built.binary}; backends compiled in: {', '.join(built.backends) or 'none'}")
    return 0


def _cmd_check(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when the file has no error for the target, 1 when it has; an unreadable file is exit 2."""
    import json

    from kdforge.export.lint import format_lines, is_ready, lint_onnx, to_json, verdict

    problems = lint_onnx(args.model, args.target, args.trt_version)
    if args.json:
        document = to_json(args.model, problems, args.target, args.trt_version)
        console.print(json.dumps(document, indent=2), markup=False, highlight=False, soft_wrap=True)
    else:
        for line in format_lines(problems):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print(
            f"{args.model}: {verdict(problems, args.target, args.trt_version)}", markup=False, highlight=False
        )
    return 0 if is_ready(problems) else 1


def _cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from kdforge.doctor import doctor

    for name, usable, detail in doctor():
        console.print(f"{'ok ' if usable else '-- '} {name:<12} {detail}", markup=False, highlight=False)
    return 0


def _cmd_models(args: argparse.Namespace, console: Console) -> int:
    from kdforge.compress.models import available

    console.print("\n".join(available()))
    console.print(
        "also: tv:<torchvision name>, timm:<timm name> (when timm is installed), wrn_<depth>_<width>, "
        "cnn_<convs>_<width>"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    with warnings.catch_warnings():
        warnings.showwarning = _warning_printer(warnings.showwarning)
        return _main(argv)


def _warning_printer(default: Callable[..., None]) -> Callable[..., None]:
    """A value kdforge adjusted in the recipe (RecipeWarning) as one `kdforge: warning:` line on stderr;
    any other warning as Python shows it."""
    from kdforge.compress.config import RecipeWarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, RecipeWarning):
            return default(message, category, *args, **kwargs)
        line = f"kdforge: warning: {message}"
        Console(stderr=True, soft_wrap=True).print(line, highlight=False, markup=False)

    return show


def _main(argv: list[str] | None) -> int:
    console = Console(soft_wrap=True)
    errors = Console(stderr=True, soft_wrap=True)
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args, console)
    except UserError as exc:
        errors.print(f"kdforge: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        errors.print(
            f"kdforge: error: {STORAGE_ERRORS[exc.errno]}{where}; make room or fix the permissions, then "
            "rerun with --resume (the last complete checkpoint is kept, no partial file is left)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        errors.print(
            "kdforge: interrupted; continue with --resume (the last checkpoint is kept)", markup=False
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
