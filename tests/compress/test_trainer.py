"""The Trainer: it learns, writes best/last/metrics, resumes bitwise-exactly, and stops cleanly on NaN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.jobs import Session, distill_student, train_teacher
from kdforge.compress.methods.ce import CE
from kdforge.compress.train.checkpoint import read_checkpoint
from kdforge.compress.train.trainer import Trainer

from tests.compress.conftest import tiny_config


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).tensors


def test_training_learns_and_writes_its_run_directory(tmp_path: Path) -> None:
    result = train_teacher(tiny_config(), tmp_path, session=Session(progress=False))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert result.best_val_top1 == max(r["val_top1"] for r in records)
    assert result.test_top1 > 50.0, "3 epochs on digits must beat chance (10%) by far"
    best = read_checkpoint(tmp_path / "checkpoints" / "best.safetensors")
    assert best.meta["epoch"] == result.best_epoch and best.meta["role"] == "teacher"
    assert best.meta["model"] == {"arch": "resnet14", "options": {}, "num_classes": 10}
    assert best.meta["data"]["classes"] == [str(i) for i in range(10)]
    assert (tmp_path / "config.yaml").is_file()
    assert json.loads((tmp_path / "result.json").read_text())["test_top1"] == result.test_top1


def test_a_killed_run_resumes_to_bitwise_identical_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config("teacher_train.epochs=3")
    train_teacher(config, tmp_path / "straight", session=Session(progress=False))

    original = Trainer._save

    def save_then_die(self: Trainer, epoch: int, metrics: dict, improved: bool) -> None:
        original(self, epoch, metrics, improved)
        if epoch == 2:
            raise KeyboardInterrupt  # the process dies right after writing epoch 2

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_teacher(config, tmp_path / "killed", session=Session(progress=False))
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.safetensors").meta["epoch"] == 2
    train_teacher(config, tmp_path / "killed", Session(resume=True, progress=False))

    straight = _tensors(tmp_path / "straight" / "checkpoints" / "last.safetensors")
    resumed = _tensors(tmp_path / "killed" / "checkpoints" / "last.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_refuses_to_overwrite_an_existing_run(tmp_path: Path) -> None:
    config = tiny_config("teacher_train.epochs=1")
    train_teacher(config, tmp_path, session=Session(progress=False))
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train_teacher(config, tmp_path, session=Session(progress=False))


def test_non_finite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config("teacher_train.epochs=3")
    steps = {"n": 0}
    original = CE.forward_train

    def poisoned(self, images, labels):
        logits, losses = original(self, images, labels)
        steps["n"] += 1
        if steps["n"] > 45:  # into the second epoch (41 steps of 32 per epoch)
            losses["ce"] = losses["ce"] * float("nan")
        return logits, losses

    monkeypatch.setattr(CE, "forward_train", poisoned)
    with pytest.raises(UserError, match=r"non-finite loss at epoch 2") as info:
        train_teacher(config, tmp_path, session=Session(progress=False))
    assert "\n" not in str(info.value)
    last = read_checkpoint(tmp_path / "checkpoints" / "last.safetensors")
    assert last.meta["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in last.tensors.values() if t.is_floating_point())


def test_kd_student_from_a_teacher_checkpoint(tmp_path: Path) -> None:
    config = tiny_config("teacher_train.epochs=2", "student_train.epochs=2")
    teacher = train_teacher(config, tmp_path / "teacher", session=Session(progress=False))
    result = distill_student(
        config, tmp_path / "student", teacher_path=teacher.best_path, session=Session(progress=False)
    )
    meta = read_checkpoint(result.best_path).meta
    assert meta["method"] == "kd" and meta["role"] == "student" and meta["model"]["arch"] == "resnet8"
    records = [json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert {"train_ce", "train_kd"} <= set(records[0])


READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def _kd_trainer(
    tmp_path: Path,
    *overrides: str,
    method: str = "kd",
    options: dict | None = None,
    device: str = "cpu",
    registry: dict | None = None,
) -> Trainer:
    """A set-up Trainer for a KD student (an untrained teacher will do) on the tiny digits recipe."""
    from kdforge.compress.config import MethodConfig
    from kdforge.compress.data import build_data
    from kdforge.compress.methods import build_method
    from kdforge.compress.methods.base import MethodContext, NetworkSpec
    from kdforge.compress.models import build

    config = tiny_config(*overrides)
    torch.manual_seed(0)
    student, teacher = build("resnet8", 10), build("resnet8", 10)
    context = MethodContext(10, NetworkSpec("resnet8"), NetworkSpec("resnet8"))
    network = build_method(MethodConfig(method, options or {}), student, teacher, context, registry)
    trainer = Trainer(
        network, build_data(config.data), config.student_train, tmp_path, seed=0, device=torch.device(device),
        meta={}, progress=False,
    )  # fmt: skip
    trainer.setup()
    network.train()
    return trainer


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_a_training_step_reads_nothing_back_from_the_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """No .item()/float()/bool()/int()/tolist() of a tensor inside `train_step` (each is a device-to-host
    sync on a GPU): finiteness and loss terms stay on the device until the flush reads them in one go."""
    trainer = _kd_trainer(tmp_path, f"student_train.nonfinite={policy}")
    batches = iter(trainer.train_loader)
    steps = [next(batches) for _ in range(3)]
    reads: list[str] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    for images, labels in steps:
        _, losses = trainer.train_step(images, labels)
    assert reads == [], f"train_step read tensors back to the host: {reads}"
    assert {"ce", "kd"} <= set(losses) and all(isinstance(v, torch.Tensor) for v in losses.values())
    values = trainer._flush([losses["kd"]])
    assert reads == ["tolist"] and len(values) == 1, "one transfer at log time"
    assert trainer._pending == []


def test_skip_undoes_the_update_of_a_non_finite_step_on_the_device(tmp_path: Path) -> None:
    """Under nonfinite=skip a NaN step leaves weights, buffers and optimizer state as before its update (the
    flush then records it); a finite step still updates."""
    trainer = _kd_trainer(tmp_path, "student_train.nonfinite=skip")
    images, labels = next(iter(trainer.train_loader))
    trainer.train_step(images, labels)  # creates the momentum buffers
    trainable = [p for p in trainer.method.student.parameters()]
    before = [p.detach().clone() for p in trainable]
    momentum = [trainer.optimizer.state[p]["momentum_buffer"].clone() for p in trainable]
    poisoned = images.clone()
    poisoned[0, 0, 0, 0] = float("nan")
    trainer.train_step(poisoned, labels)
    for p, b, m in zip(trainable, before, momentum, strict=True):
        assert torch.equal(p, b) and torch.equal(trainer.optimizer.state[p]["momentum_buffer"], m)
    trainer._flush([])
    assert trainer.skipped_updates == 1
    assert len((tmp_path / "nonfinite.jsonl").read_text().splitlines()) == 1
    trainer.train_step(images, labels)
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: counts real device syncs")
def test_a_cuda_training_step_does_not_synchronize(tmp_path: Path) -> None:
    trainer = _kd_trainer(tmp_path, "device=cuda", device="cuda")
    images, labels = next(iter(trainer.train_loader))
    images, labels = images.cuda(), labels.cuda()
    trainer.train_step(images, labels)  # first-step allocations and lazy state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.train_step(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
