"""Every seed method trains through the Trainer, checkpoints, resumes bitwise-exactly and evaluates;
the Generous Teacher trains as a teacher strategy; a standard teacher that does not fit is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kdforge.compress.config import MethodConfig
from kdforge.compress.errors import UserError
from kdforge.compress.evaluation import evaluate_checkpoint
from kdforge.compress.jobs import Session, distill_student, train_teacher
from kdforge.compress.models import build
from kdforge.compress.train.checkpoint import read_checkpoint
from kdforge.compress.train.trainer import Trainer

from tests.compress.conftest import foreign_checkpoint, tiny_config

METHODS = [
    ("kd", {"standardize": True}),
    ("dkd", {"ramp_epochs": 2}),
    ("dist", {}),
    ("dist_plus", {"acclimation": True}),
    ("rsd", {"extra_branches": ["1x1"]}),
    (
        "sate",
        {"student_loss": "dist", "intermediate_arch": "resnet8", "ema": True, "student_warmup_epochs": 1},
    ),
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("teacher")
    return train_teacher(
        tiny_config("teacher_train.epochs=2"), out, session=Session(progress=False)
    ).best_path


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).tensors


def _assert_same(a: Path, b: Path) -> None:
    left, right = _tensors(a), _tensors(b)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), f"{a.name}: {key}"


@pytest.mark.parametrize(("name", "options"), METHODS, ids=[m[0] for m in METHODS])
def test_method_trains_checkpoints_resumes_and_evaluates(
    name: str, options: dict, teacher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config("student_train.epochs=3")
    method = MethodConfig(name, options)
    straight = distill_student(
        config, tmp_path / "straight", teacher_path=teacher, method=method, session=Session(progress=False)
    )

    original = Trainer._save

    def save_then_die(self: Trainer, epoch: int, metrics: dict, improved: bool) -> None:
        original(self, epoch, metrics, improved)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill_student(
            config, tmp_path / "killed", teacher_path=teacher, method=method, session=Session(progress=False)
        )
    monkeypatch.undo()
    distill_student(
        config,
        tmp_path / "killed",
        teacher_path=teacher,
        method=method,
        session=Session(resume=True, progress=False),
    )

    checkpoints = sorted(p.name for p in (tmp_path / "straight" / "checkpoints").glob("*.safetensors"))
    for checkpoint in checkpoints:  # the student and, for SATE, its intermediate teacher and EMA copy
        _assert_same(
            tmp_path / "straight" / "checkpoints" / checkpoint,
            tmp_path / "killed" / "checkpoints" / checkpoint,
        )
    last = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    assert last.meta["method"] == name and last.meta["role"] == "student"
    assert set(json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])) >= {
        "train_loss",
        "val_top1",
    }
    metrics = evaluate_checkpoint(straight.best_path, config)
    assert metrics["top1"] == pytest.approx(straight.test_top1)
    if name == "sate":
        assert "intermediate_teacher.safetensors" in checkpoints
        middle = read_checkpoint(tmp_path / "straight" / "checkpoints" / "intermediate_teacher.safetensors")
        assert middle.meta["role"] == "intermediate_teacher" and middle.meta["model"]["arch"] == "resnet8"
        assert "intermediate_teacher_ema.safetensors" in checkpoints
        evaluate_checkpoint(middle.path, config)  # a companion is a normal, evaluable checkpoint


def test_dist_plus_acclimation_moves_only_the_teachers_head_through_the_trainer(
    teacher: str, tmp_path: Path
) -> None:
    from kdforge.compress.data import build_data
    from kdforge.compress.methods import build_method
    from kdforge.compress.teachers import load_teacher

    config = tiny_config("student_train.epochs=1")
    data = build_data(config.data)
    network = load_teacher(teacher, data).model
    before = {k: v.clone() for k, v in network.state_dict().items()}
    method = build_method(MethodConfig("dist_plus"), build("resnet8", 10), network)
    trainer = Trainer(
        method,
        data,
        config.student_train,
        tmp_path,
        seed=0,
        device=torch.device("cpu"),
        meta={},
        progress=False,
    )
    trainer.setup()  # the real optimizer groups (the head at its own lr) and the real train step
    method.train()
    for step, (images, labels) in enumerate(trainer.train_loader):
        trainer.train_step(images, labels)
        if step == 3:
            break
    moved = {k for k, v in network.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"fc.weight", "fc.bias"}


def test_generous_teacher_strategy_trains_a_new_teacher_from_the_standard_one(
    teacher: str, tmp_path: Path
) -> None:
    config = tiny_config(
        "teacher_train.epochs=1", "teacher_strategy.name=generous", "teacher_strategy.options={k: 1.5}"
    )
    result = train_teacher(config, tmp_path, standard_checkpoint=teacher, session=Session(progress=False))
    checkpoint = read_checkpoint(result.best_path)
    assert checkpoint.meta["role"] == "teacher" and checkpoint.meta["method"] == "generous"
    assert checkpoint.meta["model"]["arch"] == "resnet14"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"train_ce", "train_nckd"} <= set(records[0])
    standard = _tensors(Path(teacher))
    assert any(not torch.equal(v, standard[k]) for k, v in checkpoint.tensors.items()), "a new network"


@pytest.mark.parametrize(
    ("arch", "classes", "message"),
    [
        ("resnet8", 10, "is a resnet8, not resnet14"),
        ("resnet14", 5, "predicts 5 classes but the data set has 10"),
    ],
)
def test_generous_refuses_a_standard_teacher_that_does_not_fit(
    arch: str, classes: int, message: str, tmp_path: Path
) -> None:
    path = foreign_checkpoint(tmp_path / "ckpt", arch, classes)
    config = tiny_config("teacher_strategy.name=generous")
    with pytest.raises(UserError, match=message):
        train_teacher(config, tmp_path / "run", standard_checkpoint=path, session=Session(progress=False))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_generous_without_a_standard_teacher_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a standard teacher: pass --standard PATH"):
        train_teacher(
            tiny_config("teacher_strategy.name=generous"), tmp_path, session=Session(progress=False)
        )


def test_a_bad_method_option_on_resume_leaves_the_run_as_it_was(teacher: str, tmp_path: Path) -> None:
    good = tiny_config("student_train.epochs=1", "method.name=dist_plus")
    distill_student(good, tmp_path, teacher_path=teacher, session=Session(progress=False))
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    bad = tiny_config(
        "student_train.epochs=1", "method.name=dist_plus", "method.options={student_stages: [layer9]}"
    )
    with pytest.raises(UserError, match="no module 'layer9'"):
        distill_student(bad, tmp_path, teacher_path=teacher, session=Session(resume=True, progress=False))
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before, "config.yaml kept"
