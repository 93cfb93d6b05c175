"""`kdforge run --resume` reuses a deploy stage only when none of its inputs changed: the checkpoint's bytes
and every deploy option. The decision is pipeline._deployed's on the record a real deploy wrote; the
deploys a changed option calls for are stubbed (they would only repeat that real one)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from kdforge.compress.config import DeployConfig, load_recipe
from kdforge.compress.jobs import Session, train_teacher
from rich.console import Console

from kdforge.pipeline import _deployed, deploy_and_report
from tests.compress.conftest import tiny_config

CHEAP = DeployConfig(
    precisions=["fp32"], backends=["torch"], batches=[1], device="cpu", native="never", min_duration_s=0.01
)
CHANGES = {  # every deploy option, each set to something other than CHEAP's value
    "precisions": ["fp32", "fp16"],
    "backends": ["onnxruntime"],
    "batches": [1, 2],
    "cuda_graph": True,
    "native": "auto",
    "min_duration_s": 0.02,
    "calibration_images": 128,
    "calibration_method": "entropy",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A pipeline directory whose teacher and student deploy stages are finished (one real deploy, copied:
    both roles use the same checkpoint)."""
    from kdforge.export.deploy import deploy

    out = tmp_path_factory.mktemp("resume")
    trained = train_teacher(
        tiny_config("teacher.arch=resnet8", "teacher_train.epochs=1"),
        out / "teacher",
        Session(progress=False),
    )
    deploy(trained.best_path, out / "deploy-teacher", CHEAP)
    shutil.copytree(out / "deploy-teacher", out / "deploy-student")
    return out, trained.best_path


def _report(out: Path, checkpoint: str, config: DeployConfig, monkeypatch) -> list[tuple[str, DeployConfig]]:
    """Run deploy_and_report with resume on; return the deploys it started (stubbed: they return the record
    already on disk)."""
    started: list[tuple[str, DeployConfig]] = []

    def stub(path: str, stage: Path, options: DeployConfig, log: Any = None) -> dict[str, Any]:
        started.append((Path(stage).name, options))
        return json.loads((Path(stage) / "deploy.json").read_text())

    monkeypatch.setattr("kdforge.export.deploy.deploy", stub)
    console = Console(file=io.StringIO())
    report, _ = deploy_and_report(tiny_config(), out, [], checkpoint, checkpoint, config, True, console)
    assert report.is_file()
    return started


def test_the_record_holds_every_option_and_the_checkpoint_hash(finished) -> None:
    from kdforge.export.sidecar import sha256

    out, checkpoint = finished
    record = json.loads((out / "deploy-teacher" / "deploy.json").read_text())
    assert record["checkpoint_sha256"] == sha256(checkpoint)
    options = {f.name for f in dataclasses.fields(DeployConfig)} - {"enabled"}
    assert options | {"opset", "policy"} == set(record["options"])
    assert record["options"]["policy"]["min_duration_s"] == 0.01


def test_an_unchanged_deploy_is_reused(finished, monkeypatch) -> None:
    out, checkpoint = finished
    record = json.loads((out / "deploy-teacher" / "deploy.json").read_text())
    assert _deployed(out / "deploy-teacher", checkpoint, CHEAP, resume=True) == record
    assert _deployed(out / "deploy-teacher", checkpoint, CHEAP, resume=False) is None
    from_recipe = load_recipe(
        None,
        ["deploy.precisions=[fp32]", "deploy.backends=[torch]", "deploy.batches=[1]", "deploy.device=cpu",
         "deploy.native=never", "deploy.min_duration_s=0.01"],
    ).deploy  # fmt: skip
    assert _deployed(out / "deploy-teacher", checkpoint, from_recipe, resume=True) == record
    assert _report(out, checkpoint, CHEAP, monkeypatch) == []


@pytest.mark.parametrize(("option", "value"), list(CHANGES.items()), ids=list(CHANGES))
def test_a_changed_option_redoes_the_deploy(finished, monkeypatch, option: str, value: Any) -> None:
    out, checkpoint = finished
    changed = dataclasses.replace(CHEAP, **{option: value})
    assert getattr(CHEAP, option) != value
    assert _deployed(out / "deploy-teacher", checkpoint, changed, resume=True) is None
    started = _report(out, checkpoint, changed, monkeypatch)
    assert started == [("deploy-teacher", changed), ("deploy-student", changed)]


def test_the_device_is_compared_as_it_was_resolved(finished, tmp_path: Path) -> None:
    """`device: auto` is recorded as the device it picked: a finished deploy is reused where auto picks
    the same one, and redone where the record says it was measured on another."""
    out, checkpoint = finished
    auto = dataclasses.replace(CHEAP, device="auto")
    here = "cuda" if torch.cuda.is_available() else "cpu"
    reused = _deployed(out / "deploy-teacher", checkpoint, auto, resume=True)
    assert (reused is not None) == (here == "cpu")  # CHEAP was measured on the CPU
    stage = tmp_path / "deploy-elsewhere"
    shutil.copytree(out / "deploy-teacher", stage)
    record = json.loads((stage / "deploy.json").read_text())
    record["options"]["device"] = "cpu" if here == "cuda" else "cuda"
    (stage / "deploy.json").write_text(json.dumps(record))
    assert _deployed(stage, checkpoint, auto, resume=True) is None


def test_other_checkpoint_bytes_or_an_old_record_redo_the_deploy(finished, tmp_path: Path) -> None:
    out, checkpoint = finished
    other = tmp_path / "other.safetensors"
    other.write_bytes(Path(checkpoint).read_bytes() + b"\0")
    assert _deployed(out / "deploy-teacher", str(other), CHEAP, resume=True) is None
    stage = tmp_path / "deploy-old"
    shutil.copytree(out / "deploy-teacher", stage)
    record = json.loads((stage / "deploy.json").read_text())
    keep = ("precisions", "backends", "batches")  # what records held before every option was recorded
    record["options"] = {key: record["options"][key] for key in keep}
    (stage / "deploy.json").write_text(json.dumps(record))
    assert _deployed(stage, checkpoint, CHEAP, resume=True) is None
    (stage / "deploy.json").write_text('{"options": ')  # not a finished record
    assert _deployed(stage, checkpoint, CHEAP, resume=True) is None
