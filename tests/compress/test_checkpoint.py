"""Checkpoints: atomic writes, round trips, the (weights, state) commit protocol, refusal of bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kdforge.compress.atomic import atomic_path, atomic_write_text
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.compress.train.checkpoint import (
    load_model,
    load_train_state,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from safetensors.torch import save_file


def _meta(arch: str = "resnet8", num_classes: int = 10) -> dict:
    return {"role": "student", "model": {"arch": arch, "options": {}, "num_classes": num_classes}}


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_round_trip_weights_metadata_and_sidecar(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build("resnet8", 10)
    path = save_checkpoint(tmp_path, "best", model, {**_meta(), "epoch": 3, "metrics": {"val_top1": 91.5}})
    loaded, checkpoint = load_model(path, num_classes=10)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert checkpoint.meta["epoch"] == 3 and checkpoint.meta["metrics"]["val_top1"] == 91.5
    assert checkpoint.meta["versions"]["torch"] == torch.__version__
    sidecar = json.loads((tmp_path / "best.json").read_text())
    assert sidecar == checkpoint.meta
    assert read_checkpoint(tmp_path).path == path  # a directory means its best.safetensors


def test_training_state_is_paired_with_its_weights_and_stale_states_are_removed(tmp_path: Path) -> None:
    model = build("resnet8", 10)
    first = save_checkpoint(tmp_path, "last", model, _meta(), train_state={"epoch": 1, "t": torch.ones(2)})
    first_state = read_checkpoint(first).meta["state_file"]
    save_checkpoint(tmp_path, "last", model, _meta(), train_state={"epoch": 2, "t": torch.zeros(2)})
    checkpoint = read_checkpoint(tmp_path / "last.safetensors")
    state = load_train_state(checkpoint)
    assert state["epoch"] == 2 and torch.equal(state["t"], torch.zeros(2))
    assert checkpoint.meta["state_file"] != first_state
    assert sorted(p.name for p in tmp_path.glob("last.state-*.pt")) == [checkpoint.meta["state_file"]]


def test_best_has_no_training_state(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "best", build("resnet8", 10), _meta())
    with pytest.raises(UserError, match="carries no training state"):
        load_train_state(read_checkpoint(path))


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\xff" * 8 + b"{"])
def test_garbage_files_are_refused_in_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a readable safetensors file") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "best", build("resnet8", 10), _meta())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable safetensors file"):
        read_checkpoint(path)


def test_foreign_safetensors_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(UserError, match="no kdforge metadata"):
        read_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(tmp_path / "nope.safetensors")


def test_wrong_class_count_is_refused_before_loading(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "best", build("resnet8", 5), _meta(num_classes=5))
    with pytest.raises(UserError, match="predicts 5 classes but the data set has 10"):
        load_model(path, num_classes=10)


def test_wrong_architecture_is_refused_and_nothing_is_loaded(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "best", build("resnet14", 10), _meta("resnet14"))
    target = build("resnet8", 10)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UserError, match="does not fit"):
        load_weights(target, read_checkpoint(path))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_shape_mismatch_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, "best", build("resnet8", 10), _meta())
    with pytest.raises(UserError, match="has shape"):
        load_weights(build("resnet8", 7), read_checkpoint(path))


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickle_state_is_refused_without_executing(tmp_path: Path) -> None:
    model = build("resnet8", 10)
    path = save_checkpoint(tmp_path, "last", model, _meta(), train_state={"epoch": 1})
    checkpoint = read_checkpoint(path)
    marker = tmp_path / "pwned"
    state_file = tmp_path / checkpoint.meta["state_file"]
    torch.save({"epoch": _Payload(marker)}, state_file)
    with pytest.raises(UserError, match="cannot be loaded safely"):
        load_train_state(checkpoint)
    assert not marker.exists()
