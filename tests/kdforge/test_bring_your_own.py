"""`--init` and given teachers on the command line (issue 18): fine-tune a user's torchvision state dict on
an ImageFolder data set with the shipped example recipe, deploy the result, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kdforge.compress.models import build
from kdforge.compress.train.checkpoint import read_checkpoint
from PIL import Image

from kdforge.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "recipes" / "imagefolder_example.yaml")
DIGITS = str(REPO / "recipes" / "digits.yaml")


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("kdforge: error: ")
    return err


def _images(root: Path, per_split: dict[str, int], classes: tuple[str, ...] = ("cat", "dog")) -> Path:
    """root/train/<class>/*.png and root/val/<class>/*.png: tiny random images, a colour per class."""
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 96, size=(24, 24, 3), dtype=np.uint8)
                pixels[..., index] += 120
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_teacher_init_fine_tunes_a_torchvision_state_dict_then_deploy_works(tmp_path: Path, capsys) -> None:
    data = _images(tmp_path / "pets", {"train": 8, "val": 4})  # deploy's parity check takes 8 test images
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save({"module." + k: v for k, v in build("tv:resnet18", 1000).state_dict().items()}, weights)
    out = tmp_path / "teacher"
    argv = [
        "teacher",
        EXAMPLE,
        "--init",
        str(weights),
        "--out",
        str(out),
        "--no-progress",
        *_sets(
            f"data.root={data}",
            "data.image_size=32",
            "data.batch_size=4",
            "data.val_fraction=0.25",
            "data.workers=0",
            "device=cpu",
            "teacher.options={}",  # the recipe's ImageNet weights: replaced by --init
            "teacher_train.epochs=1",  # shorter than the recipe's warm-up: clamped, with a warning
            "teacher_train.amp=off",
        ),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("kdforge: warning: teacher_train.warmup_epochs 2 is longer than the run's 1 epoch") == 1
    assert "re-initialised the classifier head (fc.weight, fc.bias, 1000 -> 2 classes): fine-tuning" in err
    best = out / "checkpoints" / "best.safetensors"
    meta = read_checkpoint(best).meta
    assert meta["init"]["source"] == str(weights) and meta["init"]["format"] == "state_dict"
    assert meta["init"]["reinitialised"] == ["fc.weight", "fc.bias"]
    assert meta["model"] == {"arch": "tv:resnet18", "options": {}, "num_classes": 2}

    deployed = tmp_path / "deploy"
    deploy = ["deploy", str(best), "--out", str(deployed), "--precision", "fp32", "--backends", "onnxruntime"]
    assert main([*deploy, "--batches", "1", "--min-duration", "0.05", "--native", "never"]) == 0
    assert (deployed / "deploy.json").is_file() and (deployed / "deploy.md").is_file()


def test_the_example_recipe_without_cached_weights_says_which_file_and_how_to_fetch_it(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    data = _images(tmp_path / "pets", {"train": 4, "val": 2})
    sets = _sets(f"data.root={data}", "data.image_size=32", "data.workers=0", "device=cpu")
    assert main(["teacher", EXAMPLE, "--out", str(tmp_path / "t"), *sets]) == 2
    line = _error_line(capsys)
    assert "empty-cache/hub/checkpoints/resnet18-f37072fd.pth is missing" in line
    assert "curl -L --create-dirs -o" in line and "--set teacher.options={}" in line
    assert not (tmp_path / "t" / "checkpoints").exists()
    weights = tmp_path / "w.pth"
    torch.save(build("tv:resnet18", 2).state_dict(), weights)
    both = [*sets, *_sets("teacher.options.weights=DEFAULT")]  # --init alone replaces the recipe's weights
    assert main(["teacher", EXAMPLE, "--init", str(weights), "--out", str(tmp_path / "t"), *both]) == 2
    assert "teacher.init and teacher.options.weights both give the teacher's starting weights" in (
        _error_line(capsys)
    )


def test_compress_init_and_student_checkpoint_together_are_one_line(tmp_path: Path, capsys) -> None:
    argv = ["compress", DIGITS, "--init", "a.pth", "--out", str(tmp_path / "s")]
    assert main([*argv, *_sets("student.checkpoint=b.safetensors", "device=cpu")]) == 2
    assert "student.checkpoint and student.init both give the student's starting weights" in _error_line(
        capsys
    )


def test_run_with_an_exported_teacher_asks_to_turn_deploy_off_before_training(tmp_path: Path, capsys) -> None:
    teacher = build("resnet8", 10).eval()
    program = torch.export.export(
        teacher, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    path = tmp_path / "teacher.pt2"
    torch.export.save(program, str(path))
    out = tmp_path / "run"
    sets = _sets(f"teacher.checkpoint={path}", "data.image_size=16", "device=cpu", "deploy.backends=[torch]")
    assert main(["run", DIGITS, "--out", str(out), *sets]) == 2
    assert "is a torch.export program: kdforge can distill from it but not deploy it" in _error_line(capsys)
    assert not (out / "student-ce").exists(), "nothing was trained"
