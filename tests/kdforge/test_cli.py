"""The `kdforge` command: bad input is one line and exit 2; the pipeline runs, resumes and evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdforge.cli import main
from tests.compress.conftest import TINY, foreign_checkpoint

REPO = Path(__file__).resolve().parents[2]
DIGITS = str(REPO / "recipes" / "digits.yaml")
EXAMPLE = str(REPO / "recipes" / "imagefolder_example.yaml")


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert "Traceback" not in err
    assert err.startswith("kdforge: error: ")
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["teacher", DIGITS, "--set", "teacher_train.epohcs=3"], "did you mean 'epochs'"),
        (["teacher", DIGITS, "--set", "data.name=cifar100", "--set", "data.root=/no/such/dir"], "CIFAR-100"),
        (["teacher", "/no/such/recipe.yaml"], "not found"),
        (["teacher", DIGITS, "--set", "teacher.arch=resnet9000"], "resnet"),
        (["compress", DIGITS, "--method", "dkdd", "--out", "/tmp/x"], "unknown method"),
        (["frobnicate"], "invalid choice"),
        (["eval", "/no/such/checkpoint.safetensors"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys, tmp_path: Path) -> None:
    if "--out" not in argv and argv[0] != "eval":
        argv = [*argv, "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert message in _error_line(capsys)


def test_teacher_checkpoint_with_other_classes_is_refused(tmp_path: Path, capsys) -> None:
    five = foreign_checkpoint(tmp_path / "ckpt", "resnet8", 5)
    code = main(["compress", DIGITS, "--teacher", str(five), "--out", str(tmp_path / "s"), *_sets(*TINY)])
    assert code == 2
    assert "predicts 5 classes but the data set has 10" in _error_line(capsys)
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_a_deploy_backend_missing_here_stops_the_run_before_training(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", DIGITS, "--out", str(out), "--set", "deploy.backends=[torch,onnxruntime-cuda]"]) == 2
    assert "onnxruntime-cuda needs CUDAExecutionProvider" in _error_line(capsys)
    assert not (out / "teacher").exists(), "nothing was trained"


def test_the_installed_command_prints_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kdforge", "run", DIGITS, "--set", "data.batch_size=-3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kdforge: error: data.batch_size: must be > 0, got -3"


def test_models_lists_the_zoo(capsys) -> None:
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"resnet8x4", "resnet32x4", "wrn_40_2", "vgg13", "mobilenetv2", "shufflenetv2"} <= set(names)


QUICK_DEPLOY = (
    "deploy.backends=[torch,onnxruntime]",
    "deploy.batches=[1,2]",
    "deploy.min_duration_s=0.01",
    "deploy.precisions=[fp32,int8]",
    "deploy.calibration_images=32",
    "deploy.native=never",
)


def test_run_end_to_end_then_refuse_then_resume_then_eval(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    sets = _sets(*TINY, "teacher_train.epochs=2", "student_train.epochs=1", *QUICK_DEPLOY)
    assert main(["run", DIGITS, "--out", str(out), "--no-progress", *sets]) == 0
    printed = capsys.readouterr().out
    for needle in ("teacher", "student", "resnet14", "resnet8", " kd ", " ce "):
        assert needle in printed
    results = json.loads((out / "results.json").read_text())
    assert [(r["stage"], r["method"]) for r in results["rows"]] == [
        ("teacher", "ce"),
        ("student", "ce"),
        ("student", "kd"),
    ]
    assert (out / "results.md").read_text().count("| student |") == 2
    report = (out / "report.md").read_text()
    for backend, precision in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        for network in ("teacher resnet14", "student resnet8"):
            assert f"| {network} | {backend} | {precision} |" in report, (network, backend, precision)
    student = json.loads((out / "deploy-student" / "deploy.json").read_text())
    assert student["checkpoint"] == results["rows"][-1]["checkpoint"], "the distilled student is deployed"
    assert (out / "teacher_vs_student_b1.png").is_file() and (out / "teacher_vs_student_b2.png").is_file()
    assert "kdforge deploy " in report and "![teacher_vs_student_b2](teacher_vs_student_b2.png)" in report
    deployed_at = (out / "deploy-teacher" / "deploy.json").stat().st_mtime_ns

    assert main(["run", DIGITS, "--out", str(out), *sets]) == 2
    assert "already holds a run" in _error_line(capsys)

    assert main(["run", DIGITS, "--out", str(out), "--resume", "--no-progress", *sets]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == results["rows"], "a finished run is reused, not retrained"
    assert (out / "deploy-teacher" / "deploy.json").stat().st_mtime_ns == deployed_at, "deploy reused"
    capsys.readouterr()

    kd = out / "student-kd"
    assert main(["eval", str(kd / "checkpoints" / "best.safetensors")]) == 0
    line = capsys.readouterr().out
    expected = json.loads((kd / "result.json").read_text())["test_top1"]
    assert f"top-1 {expected:.2f}%" in line


# ----------------------------------------------------------------------------- the seed methods
METHOD_RECIPES = sorted((REPO / "recipes" / "digits").glob("*.yaml"))
ONE_EPOCH = _sets(*TINY, "teacher_train.epochs=1", "student_train.epochs=1")


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("cli-teacher")
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *ONE_EPOCH]) == 0
    return str(out / "checkpoints" / "best.safetensors")


@pytest.mark.parametrize("recipe", METHOD_RECIPES, ids=[p.stem for p in METHOD_RECIPES])
def test_each_method_recipe_trains_from_the_cli_and_evaluates(
    recipe: Path, tiny_teacher: str, tmp_path: Path, capsys
) -> None:
    import yaml

    teacher = tiny_teacher
    if "teacher_strategy" in yaml.safe_load(recipe.read_text()):
        generous = tmp_path / "generous"
        argv = ["teacher", str(recipe), "--standard", teacher, "--out", str(generous), "--no-progress"]
        assert main([*argv, *ONE_EPOCH]) == 0
        teacher = str(generous / "checkpoints" / "best.safetensors")
    out = tmp_path / "student"
    argv = ["compress", str(recipe), "--teacher", teacher, "--out", str(out), "--no-progress", *ONE_EPOCH]
    assert main(argv) == 0
    assert main(["eval", str(out / "checkpoints" / "best.safetensors")]) == 0
    assert "top-1" in capsys.readouterr().out


def test_method_flag_replaces_the_recipes_method_and_keeps_set_options(
    tiny_teacher: str, tmp_path: Path
) -> None:
    out = tmp_path / "sate"
    sets = _sets("method.options.intermediate_arch=resnet8", "method.options.ema=true")
    argv = [
        "compress",
        DIGITS,
        "--method",
        "sate",
        "--teacher",
        tiny_teacher,
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*argv, *ONE_EPOCH, *sets]) == 0
    config = json.loads((out / "checkpoints" / "last.json").read_text())["config"]
    assert config["method"] == {"name": "sate", "options": {"intermediate_arch": "resnet8", "ema": True}}
    assert (out / "checkpoints" / "intermediate_teacher_ema.safetensors").is_file()


def test_run_chains_standard_then_generous_teacher_then_students(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = str(REPO / "recipes" / "digits" / "generous_kd.yaml")
    argv = ["run", recipe, "--out", str(out), "--no-progress", *ONE_EPOCH, "--set", "deploy.enabled=false"]
    assert main(argv) == 0
    assert not (out / "report.md").exists() and not (out / "deploy-teacher").exists()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["stage"], r["method"]) for r in rows] == [
        ("teacher", "ce"),
        ("teacher (generous)", "generous"),
        ("student", "ce"),
        ("student", "kd"),
    ]
    generous = str(out / "teacher-generous" / "checkpoints" / "best.safetensors")
    assert rows[1]["checkpoint"] == generous


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compress", DIGITS, "--method", "dist_plus", "--set", "method.options.student_stages=[layer9]"],
            "no module 'layer9' in CifarResNet",
        ),
        (["compress", DIGITS, "--method", "sate"], "method 'sate' needs a teacher"),
        (["teacher", DIGITS, "--strategy", "generous"], "needs a standard teacher"),
        (["compress", DIGITS, "--method", "generous"], "trains a teacher: use `kdforge teacher`"),
    ],
)
def test_seed_method_mistakes_are_one_line(
    argv: list[str], message: str, tiny_teacher: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/<recipe>/teacher from an earlier `make demo` to fall back on
    if argv[0] == "compress" and "sate" not in argv:
        argv = [*argv, "--teacher", tiny_teacher]
    assert main([*argv, "--out", str(tmp_path / "x"), *ONE_EPOCH]) == 2
    assert message in _error_line(capsys)


def test_generous_refuses_a_standard_teacher_of_another_architecture(tmp_path: Path, capsys) -> None:
    other = foreign_checkpoint(tmp_path / "ckpt", "resnet8", 10)
    argv = [
        "teacher",
        DIGITS,
        "--strategy",
        "generous",
        "--standard",
        str(other),
        "--out",
        str(tmp_path / "g"),
    ]
    assert main([*argv, *ONE_EPOCH]) == 2
    assert "is a resnet8, not resnet14" in _error_line(capsys)


def test_rsd_writes_the_multi_branch_and_the_merged_checkpoints(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rsd"
    argv = ["compress", DIGITS, "--method", "rsd", "--out", str(out), "--no-progress", *ONE_EPOCH]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "merged (deployable) network: test top-1" in printed
    best, merged = out / "checkpoints" / "best.safetensors", out / "checkpoints" / "merged.safetensors"
    assert json.loads((out / "checkpoints" / "best.json").read_text())["model"]["rep"] == {"extra": []}
    assert json.loads((out / "checkpoints" / "merged.json").read_text())["model"]["reparameterized"] is True
    lines = []
    for checkpoint in (best, merged):
        assert main(["eval", str(checkpoint)]) == 0
        lines.append(capsys.readouterr().out.split(": ", 1)[1])
    assert lines[0] == lines[1], "the merged network scores exactly like the multi-branch one"


# --------------------------------------------------------------------------------------------------
# issue 23: the recipe is checked whole before any work; a flag wins over the recipe, saying so
# --------------------------------------------------------------------------------------------------


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading data is an error here: a refusal must come before any of it."""
    import kdforge.compress.data
    import kdforge.compress.jobs

    import kdforge.pipeline

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was read before the recipe was checked")

    for module in (kdforge.compress.data, kdforge.compress.jobs, kdforge.pipeline):
        monkeypatch.setattr(module, "build_data", refuse)


def test_a_typo_in_method_options_stops_run_before_any_data_or_folder(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    _no_work(monkeypatch)
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    assert main(["run", DIGITS, "--out", str(tmp_path / "run"), "--set", "method.options.temprature=2"]) == 2
    assert time.perf_counter() - start < 10, "the recipe is checked before any work"
    line = _error_line(capsys)
    assert "'method.options.temprature'; did you mean 'temperature'?" in line
    assert list(tmp_path.iterdir()) == [], "no run folder"


def _captured(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, object]:
    """Replace jobs.<name> (train_teacher / distill_student) by one that records its arguments."""
    import kdforge.compress.jobs

    seen: dict[str, object] = {}

    def record(config: object, out: object, session: object, **kwargs: object) -> None:
        seen.update(kwargs, config=config)

    monkeypatch.setattr(kdforge.compress.jobs, name, record)
    return seen


def test_teacher_init_replaces_the_recipes_pretrained_weights_with_a_warning(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch)
    seen = _captured(monkeypatch, "train_teacher")
    argv = [
        "teacher",
        EXAMPLE,
        "--init",
        "my_resnet18.pth",
        "--out",
        str(tmp_path / "t"),
        "--set",
        "device=cpu",
    ]
    assert main(argv) == 0  # the command the recipe's comment documents
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "kdforge: warning: --init my_resnet18.pth replaces the recipe's teacher.options.weights: 'DEFAULT'"
    )
    assert seen["config"].teacher.init == "my_resnet18.pth" and seen["config"].teacher.options == {}
    assert main([*argv, "--set", "teacher.init=other.pth"]) == 2
    assert "teacher.init is given twice on the command line (--set 'teacher.init=other.pth', --init" in (
        _error_line(capsys)
    )


def test_compress_flags_win_over_the_recipe_and_say_what_they_replaced(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_work(monkeypatch)
    seen = _captured(monkeypatch, "distill_student")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "teacher:\n  checkpoint: recipe_teacher.safetensors\nstudent:\n  init: recipe_student.pth\n"
    )
    argv = [
        "compress",
        str(recipe),
        "--teacher",
        "t.safetensors",
        "--init",
        "s.pth",
        "--out",
        str(tmp_path / "s"),
    ]
    assert main(argv) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == [
        "kdforge: warning: --init s.pth replaces the recipe's student.init: 'recipe_student.pth'",
        "kdforge: warning: --teacher t.safetensors replaces the recipe's teacher.checkpoint: "
        "'recipe_teacher.safetensors'",
    ]
    assert seen["teacher_path"] == "t.safetensors" and seen["config"].student.init == "s.pth"
    assert main([*argv, "--set", "student.options.pretrained=true"]) == 2
    assert "student.init and student.options.pretrained both give the student's starting weights on the " in (
        _error_line(capsys)
    )
