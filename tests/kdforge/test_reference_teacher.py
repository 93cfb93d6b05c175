"""A released CIFAR-100 teacher as the community has it (CRD's `ckpt_epoch_240.pth` of wrn_40_2, built by
the reference code, pre-zip format with CUDA storages) distils a student through the shipped paper recipe,
and `kdforge eval` scores the same file with the reference model's own accuracy."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
from kdforge.compress.train.checkpoint import read_checkpoint

from kdforge.cli import main
from tests.cifar_files import fake_cifar100
from tests.crd_files import crd_checkpoint
from tests.reference_models import model_dict

REPO = Path(__file__).resolve().parents[2]
RECIPE = str(REPO / "recipes" / "cifar100" / "wrn_40_2_wrn_16_2" / "kd.yaml")


def _reference_accuracy(model: torch.nn.Module, root: Path) -> float:
    """Top-1 of the reference model on the test split, with the recipe's CIFAR-100 normalisation."""
    import pickle

    with open(root / "cifar-100-python" / "test", "rb") as handle:
        entry = pickle.load(handle)  # written by the test itself
    images = torch.tensor(entry["data"], dtype=torch.float32).view(-1, 3, 32, 32) / 255
    mean = torch.tensor((0.5071, 0.4865, 0.4409)).view(1, 3, 1, 1)
    std = torch.tensor((0.2673, 0.2564, 0.2762)).view(1, 3, 1, 1)
    with torch.no_grad():
        predicted = model.eval()((images - mean) / std).argmax(1)
    return float((predicted == torch.tensor(entry["fine_labels"])).float().mean() * 100)


def test_a_crd_teacher_file_distils_and_evaluates(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    fake_cifar100(root, per_class=1, n_test=100)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        teacher = model_dict["wrn_40_2"](num_classes=100)
    teacher.train()
    with torch.no_grad():  # BN statistics of a trained network, not the initial 0 / 1
        teacher(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    checkpoint = crd_checkpoint(
        teacher, tmp_path / "ckpt_epoch_240.pth", torch.randn(2, 3, 32, 32), legacy=True
    )
    sets = [
        f"data.root={root}",
        "data.workers=0",
        "data.batch_size=50",
        "device=cpu",
        "student_train.epochs=1",
        "student_train.milestones=[]",
        "deploy.enabled=false",
    ]
    args = [item for value in sets for item in ("--set", value)]
    out = tmp_path / "run"
    command = ["compress", RECIPE, "--teacher", str(checkpoint), "--out", str(out), "--no-progress", *args]
    assert main(command) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" not in err
    meta = read_checkpoint(out / "checkpoints" / "best.safetensors").meta
    assert meta["model"]["arch"] == "wrn_16_2" and meta["method"] == "kd"

    evaluate = ["eval", str(checkpoint), "--recipe", RECIPE, "--role", "teacher", *args[:8]]
    assert main(evaluate) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"top-1 {_reference_accuracy(teacher, root):.2f}%" in line, line

    # an mdistiller run file holds the student and the teacher: which one is one line, then --format picks it
    run_file = tmp_path / "mdistiller_latest.pth"
    state = {f"module.teacher.{k}": v for k, v in teacher.state_dict().items()}
    state |= {f"module.student.{k}": torch.zeros(1) for k in ("conv1.weight", "fc.weight")}
    torch.save({"epoch": 240, "model": state, "optimizer": {}, "best_acc": 75.6}, run_file)
    run_eval = ["eval", str(run_file), "--recipe", RECIPE, "--role", "teacher", *args[:8]]
    assert main(run_eval) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mdistiller-student or mdistiller-teacher" in lines[0], lines
    assert main([*run_eval, "--format", "mdistiller-teacher"]) == 0
    assert f"top-1 {_reference_accuracy(teacher, root):.2f}%" in capsys.readouterr().out
