"""`kdforge run`: teacher [-> generous teacher] -> CE student -> distilled student [-> merged] -> deploy
teacher and student (ONNX, fp16 / int8, AOTInductor, TensorRT where present; accuracy and latency per
backend) -> results table and report.md.

Each stage has its own directory under the pipeline's; with `--resume` a finished stage is reused and an
interrupted training stage continues from its `last` checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdforge.compress.atomic import atomic_write_text
from kdforge.compress.config import (
    DeployConfig,
    MethodConfig,
    RunConfig,
    TeacherStrategyConfig,
    teacher_data,
)
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.errors import UserError
from kdforge.compress.evaluation import evaluate_checkpoint
from kdforge.compress.jobs import Session, distill_student, train_teacher
from kdforge.compress.layout import RunLayout
from kdforge.compress.runlock import run_lock
from kdforge.compress.train.checkpoint import load_model
from kdforge.compress.train.trainer import TrainResult
from kdforge.export.report.training import StageRow, results_markdown

if TYPE_CHECKING:  # the report code (matplotlib) loads only when a run reports
    from kdforge.export.report.headline import Outcome


def merge_and_evaluate(result: TrainResult, config: RunConfig) -> tuple[str, float] | None:
    """For a multi-branch (RSD) student: write its `best` merged into the plain architecture (the stage's
    `RunLayout.merged`, by compress.reparam.save_merged) and return its path and test top-1; None (and
    nothing written) for a plain network."""
    from kdforge.compress.reparam import network_form, save_merged
    from kdforge.compress.train.checkpoint import read_checkpoint

    if network_form(read_checkpoint(result.best_path).meta) != "multi-branch":
        return None
    merged = save_merged(result.best_path)
    return str(merged), evaluate_checkpoint(merged, config)["top1"]


EVAL_TAKES = (
    "kdforge eval takes a kdforge checkpoint (.safetensors, or the folder of best.safetensors), or with "
    "--recipe a state dict (torch.save: .pth/.pt/.bin) or safetensors file of the recipe's network, a "
    "torch.export program (.pt2) or an ONNX file kdforge exported (.onnx)"
)


def eval_kind(path: str | Path) -> str:
    """What `kdforge eval` reads `path` as: 'kdforge' (a checkpoint), 'weights' (a state dict or
    safetensors file), 'torch.export' or 'onnx'; any other file is one line saying what eval takes."""
    from kdforge.compress.weights import sniff

    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    where = repr(str(path))
    if not path.is_file():
        raise UserError(f"{where} not found; {EVAL_TAKES}")
    if path.suffix.lower() == ".onnx":  # protobuf has no magic bytes; the name is all there is
        return "onnx"
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"
    try:
        kind = sniff(path)
    except UserError:
        if zipped:  # a damaged archive: sniff's line says what is wrong with it
            raise
        raise UserError(f"{where} is not a file kdforge eval reads; {EVAL_TAKES}") from None
    if kind == "aoti":
        raise UserError(
            f"{where} is a compiled AOTInductor package (time it with kdforge bench); {EVAL_TAKES}"
        )
    return {"state_dict": "weights", "safetensors": "weights"}.get(kind, kind)


def evaluate_any(
    path: str | Path, config: RunConfig, split: str = "test", role: str = "student"
) -> dict[str, float]:
    """Top-1/top-5/loss of any file `eval_kind` takes on a split of `config`'s data set: a kdforge
    checkpoint (plain, multi-branch or merged), a state dict or safetensors file of the recipe's `role`
    network, a torch.export program, or an ONNX file in ONNX Runtime with its stored preprocessing."""
    kind = eval_kind(path)
    if kind == "onnx":
        from kdforge.export.onnx.evaluate import evaluate_onnx

        return evaluate_onnx(path, config, split)
    if kind == "torch.export":
        from kdforge.compress.evaluation import evaluate_exported

        return evaluate_exported(path, config, split)[0]
    return evaluate_checkpoint(path, config, split, role)


def reused_stage(stage_dir: Path, resume: bool) -> TrainResult | None:
    """With `resume`, a finished stage's result.json, its checkpoint paths checked to lie in the stage
    folder (a run's files are data, never a pointer elsewhere); None: train the stage."""
    stage = RunLayout(stage_dir)
    found = stage.result_json
    if not (resume and found.is_file()):
        return None
    where = repr(str(found)[:200])
    try:
        result = TrainResult(**json.loads(found.read_text(encoding="utf-8")))
    except (ValueError, TypeError, RecursionError):
        raise UserError(
            f"{where} is not a result kdforge wrote; delete it to train that stage again"
        ) from None
    for path in (result.best_path, result.last_path):
        if not isinstance(path, str) or not inside(path, stage.checkpoints):
            raise UserError(
                f"{where} names a checkpoint outside its stage folder; delete it to train that stage again"
            )
    return result


def inside(path: str | Path, folder: Path) -> bool:
    """Whether `path` (links followed) lies in `folder`."""
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def _row(stage: str, method: str, result: TrainResult) -> StageRow:
    model, checkpoint = load_model(result.best_path)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return StageRow(
        stage,
        checkpoint.meta["model"]["arch"],
        method,
        round(params, 3),
        result.test_top1,
        result.last_test_top1,
        result.best_epoch,
        round(result.train_seconds, 1),
        result.best_path,
    )


def run_pipeline(
    config: RunConfig,
    out_dir: str | Path,
    session: Session | None = None,
    *,
    console: Console | None = None,
    recipe_path: str | None = None,
) -> list[StageRow]:
    """Train (or reuse) the teacher (and, with teacher_strategy generous, the generous teacher from it),
    a CE student and a student distilled from the last teacher with the recipe's method; then deploy the
    last teacher and the distilled student and write report.md (unless deploy.enabled is false)."""
    out_dir = Path(out_dir)
    session = session or Session()
    console = console or Console()
    with run_lock(out_dir, enabled=session.context.is_main):  # one pipeline per directory
        deploy_options = None
        if config.deploy.enabled:  # a backend missing here fails now, not after the training
            from kdforge.export.deploy import recorded_options

            recorded_options(config.deploy)
            deploy_options = config.deploy
        data = build_data(config.data)
        own = teacher_data(config.data)  # the teacher may train on more of the training split
        teacher_path, rows = train_teachers(config, out_dir, session, data if own == config.data else None)
        rows += train_students(config, out_dir, session, data, teacher_path)
        if session.context.is_main:
            write_results(out_dir, config, rows)
            console.print(results_table(config, rows))
            from kdforge.export.report.headline import headline

            sentence = headline(outcome_of(rows))
            if deploy_options is not None:
                student_path = rows[-1].checkpoint  # the distilled student, merged when it had branches
                report, sentence = deploy_and_report(
                    config, out_dir, rows, teacher_path, student_path, deploy_options, session.resume,
                    console, recipe_path, outcome_of(rows),
                )  # fmt: skip
                console.print(f"wrote {report}", markup=False, highlight=False)
            console.print(sentence, markup=False, highlight=False)  # what the run bought, last
        return rows


def outcome_of(rows: list[StageRow]) -> Outcome:
    """Teacher, CE baseline and distilled student of a pipeline's rows (the last of each kind)."""
    from kdforge.export.report.headline import Outcome

    teacher = [r for r in rows if r.stage.startswith("teacher")][-1]
    student = rows[-1]  # the distilled student (its merged form when it had branches)
    baseline = [r for r in rows if r.stage == "student" and r.method == "ce"]
    has_baseline = bool(baseline) and student.method != "ce"
    return Outcome(
        teacher.arch,
        teacher.test_top1,
        student.arch,
        student.test_top1,
        student.method,
        baseline[-1].test_top1 if has_baseline else None,
        _size_ratio(teacher.checkpoint, student.checkpoint),
    )


def _size_ratio(teacher: str, student: str) -> float | None:
    """Teacher parameters / student parameters; None when the teacher is no kdforge checkpoint (a .pt2)."""
    try:
        return _parameters(teacher) / _parameters(student)
    except UserError:
        return None


def _parameters(checkpoint: str) -> int:
    """Parameter count of the network in a kdforge checkpoint (a merged one included)."""
    return sum(p.numel() for p in load_model(checkpoint)[0].parameters())


def train_teachers(
    config: RunConfig, out_dir: Path, session: Session, data: DataBundle | None
) -> tuple[str, list[StageRow]]:
    """The teacher the students learn from (given, or trained; then made generous when asked) and its rows."""
    rows: list[StageRow] = []
    layout = RunLayout(out_dir)
    standard = config.teacher_strategy.standard_checkpoint or config.teacher.checkpoint
    if standard:
        from kdforge.compress.evaluation import evaluate_exported
        from kdforge.compress.teachers import given_teacher

        # a state dict or safetensors teacher becomes a kdforge checkpoint there, so eval and deploy read it
        given_dir = layout.teacher_given.root
        teacher_path, kind = given_teacher(config, standard, given_dir, data, session.context)
        if kind == "torch.export":  # a frozen program: forward pass only
            if config.deploy.enabled:
                raise UserError(
                    f"teacher {teacher_path!r} is a torch.export program: kdforge can distill from it but "
                    "not deploy it; pass --set deploy.enabled=false (then `kdforge deploy` the student)"
                )
            metrics, params = evaluate_exported(teacher_path, config)
            top1 = metrics["top1"]
            row = StageRow("teacher (given)", "torch.export", "-", params, top1, top1, -1, 0.0, teacher_path)
            rows.append(row)
        else:
            metrics = evaluate_checkpoint(teacher_path, config)
            top1, top5 = metrics["top1"], metrics["top5"]
            given = TrainResult(-1, float("nan"), top1, top5, top1, 0, 0.0, teacher_path, teacher_path)
            rows.append(_row("teacher (given)", "-", given))
    else:
        stage = layout.teacher.root
        standard_config = replace(config, teacher_strategy=TeacherStrategyConfig())
        result = reused_stage(stage, session.resume) or train_teacher(
            standard_config, stage, session, data=data
        )
        teacher_path = result.best_path
        rows.append(_row("teacher", "ce", result))

    strategy = config.teacher_strategy.name
    if strategy != "standard":  # standard teacher -> generous teacher -> students
        stage = layout.teacher_strategy(strategy).root
        result = reused_stage(stage, session.resume) or train_teacher(
            config, stage, session, data=data, standard_checkpoint=teacher_path
        )
        teacher_path = result.best_path
        rows.append(_row(f"teacher ({strategy})", strategy, result))
    return teacher_path, rows


def train_students(
    config: RunConfig, out_dir: Path, session: Session, data: DataBundle, teacher_path: str
) -> list[StageRow]:
    """The CE baseline and the distilled student (plus its merged form when it has branches)."""
    rows: list[StageRow] = []
    methods = [MethodConfig(name="ce")] + ([config.method] if config.method.name != "ce" else [])
    for method in methods:
        stage = RunLayout(out_dir).student(method.name).root
        result = reused_stage(stage, session.resume) or distill_student(
            config, stage, session, teacher_path=teacher_path, method=method, data=data
        )
        rows.append(_row("student", method.name, result))
        merged = merge_and_evaluate(result, config) if session.context.is_main else None
        if merged is not None:
            path, top1 = merged
            row = rows[-1]
            rows.append(
                StageRow(
                    "student (merged)",
                    row.arch,
                    method.name,
                    row.params_m,
                    top1,
                    float("nan"),
                    result.best_epoch,
                    0.0,
                    path,
                )
            )
    return rows


def _deployed(stage: Path, checkpoint: str, options: DeployConfig, resume: bool) -> dict[str, Any] | None:
    """When resuming, the finished deploy stage's record if every input of it is unchanged: the checkpoint's
    bytes (SHA-256) and all its recorded options (export.deploy.recorded_options); else None (redo it)."""
    from kdforge.export.deploy import recorded_options
    from kdforge.export.sidecar import sha256

    found = stage / "deploy.json"
    if not (resume and found.is_file()):
        return None
    try:
        result = json.loads(found.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # not a record deploy finished writing: redo the stage
    same = (
        isinstance(result, dict)
        and isinstance(result.get("checkpoint"), str)
        and Path(result["checkpoint"]).resolve() == Path(checkpoint).resolve()  # what it names is read
        and result.get("checkpoint_sha256") == sha256(checkpoint)
        and result.get("options") == recorded_options(options)
    )
    return result if same else None


def deploy_roles(
    out_dir: Path, teacher_path: str, student_path: str, options: DeployConfig, resume: bool, console: Console
) -> dict[str, dict[str, Any]]:
    """Deploy the teacher and the student into the run's deploy folders (each reused when resuming and
    nothing it depends on changed); their deploy records by role."""
    from kdforge.export.deploy import deploy

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    results = {}
    for role, path in (("teacher", teacher_path), ("student", student_path)):
        stage = RunLayout(out_dir).deploy(role).root
        reused = _deployed(stage, path, options, resume)
        if reused is not None:
            log(f"{stage.name}: reused (same checkpoint bytes and deploy options)")
        results[role] = reused or deploy(path, stage, options, log=log)
    return results


def deploy_and_report(
    config: RunConfig,
    out_dir: Path,
    rows: list[StageRow],
    teacher_path: str,
    student_path: str,
    options: DeployConfig,
    resume: bool,
    console: Console,
    recipe_path: str | None = None,
    outcome: Outcome | None = None,
) -> tuple[Path, str]:
    """Deploy the teacher and the student (each reused when resuming and nothing it depends on changed),
    then write report.md from the stage `rows` and the deploy records, led by the run's one-sentence
    outcome; returns the report and that sentence."""
    from kdforge.export.deploy import deploy_flag_words
    from kdforge.export.report import markdown, write_report
    from kdforge.export.report.headline import fastest_variant, headline

    results = deploy_roles(out_dir, teacher_path, student_path, options, resume, console)
    commands = reproduce_commands(
        recipe_path,
        out_dir,
        teacher_path,
        student_path,
        deploy_flag_words(results["student"]["options"]),
        results["student"]["files"].get("fp32", "STUDENT.onnx"),
        options.batches,
    )
    sentence = headline(outcome, fastest_variant(results["teacher"], results["student"])) if outcome else ""
    report = write_report(
        out_dir,
        f"kdforge run {markdown.code(config.name)} on {markdown.text(config.data.name)}: compress and deploy",
        rows,
        results["teacher"],
        results["student"],
        commands,
        headline=sentence,
    )
    return report, sentence


def reproduce_commands(
    recipe_path: str | None,
    out_dir: Path,
    teacher_path: str,
    student_path: str,
    flags: list[str],
    student_onnx: str,
    batches: list[int],
) -> list[str]:
    """The report's "Reproduce" commands, every path shell-quoted (`shlex.split` gives each back)."""
    from kdforge.export.report.markdown import command

    recipe = recipe_path or "RECIPE"
    layout = RunLayout(out_dir)
    return [
        command("kdforge", "run", recipe, "--out", out_dir, "--resume")
        + "   # everything below, finished stages reused",
        command("kdforge", "deploy", teacher_path, "--out", layout.deploy("teacher").root, *flags),
        command("kdforge", "deploy", student_path, "--out", layout.deploy("student").root, *flags),
        command("kdforge", "bench", student_onnx, "--batches", ",".join(map(str, batches))),
        command("kdforge", "predict", student_onnx, "IMAGE.png"),
    ]


def results_table(config: RunConfig, rows: list[StageRow]) -> Table:
    """The rich table printed at the end of `kdforge run`."""
    table = Table(title=escape(f"kdforge run '{config.name}' on {config.data.name} (test split, top-1 %)"))
    for column in ("stage", "arch", "method", "params M", "top-1 %", "last %", "best ep", "time s"):
        table.add_column(column, justify="left" if column in ("stage", "arch", "method") else "right")
    for row in rows:
        table.add_row(
            escape(row.stage),
            escape(row.arch),
            escape(row.method),
            f"{row.params_m:.3f}",
            f"{row.test_top1:.2f}",
            f"{row.last_test_top1:.2f}",
            str(row.best_epoch),
            f"{row.train_seconds:.1f}",
        )
    table.caption = (
        "top-1: the checkpoint with the best validation accuracy, on the test split; "
        "last: the final epoch's weights"
    )
    return table


def write_results(out_dir: Path, config: RunConfig, rows: list[StageRow]) -> None:
    """results.json (machine-readable) and results.md (for humans), from the same stage records, next to
    the stage directories."""
    from kdforge.export.report.markdown import code, text

    layout = RunLayout(out_dir)
    atomic_write_text(
        layout.results_json,
        json.dumps({"recipe": config.name, "rows": [asdict(r) for r in rows]}, indent=2) + "\n",
    )
    title = f"kdforge run {code(config.name)} on {text(config.data.name)}"
    atomic_write_text(layout.results_md, results_markdown(title, rows))
