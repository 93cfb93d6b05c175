"""Bring your own model (issue 18): starting weights and teachers in the forms users hold them, each made
here with random values in the real file layout: torchvision / timm state dicts, safetensors, the
torchvision and Hugging Face caches, torch.export programs, and files that must be refused."""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from kdforge.compress.config import MethodConfig, NetworkConfig, RecipeWarning, RunConfig, check, load_recipe
from kdforge.compress.errors import UserError
from kdforge.compress.jobs import Session, distill_student
from kdforge.compress.models import build, classifier_head
from kdforge.compress.networks import start_network
from kdforge.compress.teachers import load_teacher
from kdforge.compress.train.checkpoint import read_checkpoint
from kdforge.compress.weights import head_paths, sha256_file
from safetensors.torch import save_file

from tests.compress.conftest import tiny_config

HAS_TIMM = importlib.util.find_spec("timm") is not None
FAST = ("data.train_fraction=0.25", "student_train.epochs=1")  # digits at 16x16: seconds on 2 cores


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------------------------------
# state dicts: torchvision with DDP's prefix, fine-tuned 1000 -> 10 classes
# --------------------------------------------------------------------------------------------------


def test_a_ddp_torchvision_state_dict_with_1000_classes_is_fine_tuned_to_10(tmp_path: Path) -> None:
    torch.manual_seed(1)
    imagenet = build("tv:resnet18", 1000)
    saved = {"module." + k: v for k, v in _state(imagenet).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "resnet18.pth"
    torch.save({"epoch": 90, "state_dict": saved}, path)  # a training script's checkpoint dict

    model, source = start_network(NetworkConfig(arch="tv:resnet18", init=str(path)), 10, "teacher")
    assert model.fc.out_features == 10
    for key, value in model.state_dict().items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, imagenet.state_dict()[key]), key
    assert source is not None and source.reinitialised == ("fc.weight", "fc.bias")
    assert source.loaded == len(saved) - 2 and source.classes == (1000, 10)
    assert source.format == "state_dict" and source.sha256 == sha256_file(path)
    line = source.line("teacher", "tv:resnet18")
    assert "re-initialised the classifier head (fc.weight, fc.bias, 1000 -> 10 classes)" in line
    assert "\n" not in line


def test_the_head_is_found_on_torchvision_and_zoo_models() -> None:
    for arch, head in [("tv:resnet18", "fc"), ("tv:mobilenet_v3_small", "classifier.3"), ("resnet8", "fc")]:
        model = build(arch, 7)
        assert head_paths(model, 7) == [head]
        assert classifier_head(model)[0] == head
    assert head_paths(build("tv:squeezenet1_1", 7), 7) == ["classifier.1"]  # a 1x1 conv head


def test_a_safetensors_state_dict_without_kdforge_metadata_starts_a_student(tmp_path: Path) -> None:
    source_model = build("tv:mobilenet_v3_small", 1000)
    path = tmp_path / "model.safetensors"
    save_file(_state(source_model), str(path))
    model, source = start_network(NetworkConfig(arch="tv:mobilenet_v3_small", init=str(path)), 4, "student")
    assert source.format == "safetensors" and source.reinitialised == (
        "classifier.3.weight",
        "classifier.3.bias",
    )
    assert torch.equal(model.features[0][0].weight, source_model.features[0][0].weight)


@pytest.mark.skipif(not HAS_TIMM, reason="timm is not installed (pip install timm): no timm model to build")
def test_a_timm_safetensors_state_dict_and_the_hugging_face_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm  # pyright: ignore[reportMissingImports]  (skipped without timm)

    pretrained = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "model.safetensors"
    save_file(_state(pretrained), str(path))
    model, source = start_network(NetworkConfig(arch="timm:resnet18", init=str(path)), 10, "teacher")
    assert source.reinitialised == ("fc.weight", "fc.bias") and model.fc.out_features == 10
    assert torch.equal(model.conv1.weight, pretrained.conv1.weight)

    # by name: `pretrained: true` reads models--timm--<name>/snapshots/<refs/main>/model.safetensors
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    network = NetworkConfig(arch="timm:resnet18.a1_in1k", options={"pretrained": True})
    with pytest.raises(
        UserError, match=r"models--timm--resnet18\.a1_in1k.*huggingface-cli download"
    ) as caught:
        start_network(network, 10, "teacher")
    assert "\n" not in str(caught.value)
    repo = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file(_state(pretrained), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    model, source = start_network(network, 10, "teacher")
    assert source.format == "timm" and "timm/resnet18.a1_in1k" in source.source
    assert torch.equal(model.conv1.weight, pretrained.conv1.weight)


# --------------------------------------------------------------------------------------------------
# torchvision weights by name, from $TORCH_HOME/hub/checkpoints
# --------------------------------------------------------------------------------------------------


def test_torchvision_weights_come_from_the_torch_home_cache_or_one_line_says_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    network = NetworkConfig(arch="tv:resnet18", options={"weights": "DEFAULT"})
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(UserError) as caught:
        start_network(network, 10, "teacher")
    message = str(caught.value)
    assert "\n" not in message and f"{cached} is missing" in message
    assert (
        f"curl -L --create-dirs -o {cached} https://download.pytorch.org/models/resnet18-f37072fd.pth"
        in message
    )
    assert "--set teacher.options={}" in message

    imagenet = build("tv:resnet18", 1000)
    cached.parent.mkdir(parents=True)  # the published file predates BatchNorm's num_batches_tracked
    torch.save({k: v for k, v in _state(imagenet).items() if "num_batches_tracked" not in k}, cached)
    for value in ("DEFAULT", "IMAGENET1K_V1", "ResNet18_Weights.IMAGENET1K_V1"):
        network = NetworkConfig(arch="tv:resnet18", options={"weights": value})
        model, source = start_network(network, 10, "teacher")
        assert source.format == "torchvision" and source.source.startswith("ResNet18_Weights.IMAGENET1K_V1")
        assert torch.equal(model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    with pytest.raises(UserError, match=r"no weights 'IMAGENET9K'; choose one of DEFAULT, IMAGENET1K_V1"):
        start_network(NetworkConfig(arch="tv:resnet18", options={"weights": "IMAGENET9K"}), 10, "teacher")
    with pytest.raises(UserError, match="zoo models have no published weights"):
        start_network(NetworkConfig(arch="resnet8", options={"weights": "DEFAULT"}), 10, "teacher")
    both = NetworkConfig(arch="tv:resnet18", options={"weights": "DEFAULT"}, init=str(cached))
    with pytest.raises(UserError, match=r"teacher.init and teacher.options.weights both give"):
        check(RunConfig(teacher=both))  # a two-field rule of the recipe: checked at load time


# --------------------------------------------------------------------------------------------------
# refusals: pickled code, keys and shapes outside the head
# --------------------------------------------------------------------------------------------------


class _Planted:
    """Unpickling this opens (creates) a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_a_pickle_planted_in_a_pth_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    weights = _state(build("resnet8", 10))
    for name, payload in [
        ("whole.pth", _Planted(marker)),
        ("wrapped.pth", {"state_dict": weights, "extra": _Planted(marker)}),
    ]:
        path = tmp_path / name
        torch.save(payload, path)
        with pytest.raises(UserError, match="never unpickles") as caught:
            start_network(NetworkConfig(arch="resnet8", init=str(path)), 10, "student")
        assert "\n" not in str(caught.value)
        assert not marker.exists(), "the planted pickle ran"


def test_a_wrong_shape_outside_the_head_is_refused_naming_the_key_and_nothing_is_loaded(
    tmp_path: Path,
) -> None:
    from kdforge.compress.weights import fit_weights

    weights = _state(build("tv:resnet18", 1000))
    weights["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(weights, path)
    with pytest.raises(UserError) as caught:
        start_network(NetworkConfig(arch="tv:resnet18", init=str(path)), 10, "teacher")
    assert str(caught.value) == (
        f"teacher weights {str(path)!r} does not fit tv:resnet18: layer2.0.conv1.weight has shape "
        "(128, 64, 1, 1), the model expects (128, 64, 3, 3)"
    )
    target = build("tv:resnet18", 10)
    fresh = _state(target)
    with pytest.raises(UserError, match=r"layer2\.0\.conv1\.weight has shape"):  # checked before any copy
        fit_weights(target, weights, 10, where="x", arch="tv:resnet18", fine_tune=True)
    assert all(torch.equal(v, fresh[k]) for k, v in target.state_dict().items()), "nothing was loaded"
    del weights["layer2.0.conv1.weight"]
    torch.save(weights, path)
    with pytest.raises(UserError, match=r"it has no tensor 'layer2\.0\.conv1\.weight'"):
        start_network(NetworkConfig(arch="tv:resnet18", init=str(path)), 10, "teacher")
    weights["layer2.0.conv1.weight"] = fresh["layer2.0.conv1.weight"]
    weights["extra.weight"] = torch.zeros(1)
    torch.save(weights, path)
    with pytest.raises(UserError, match=r"it has a tensor 'extra\.weight' the model lacks"):
        start_network(NetworkConfig(arch="tv:resnet18", init=str(path)), 10, "teacher")
    torch.save(_state(build("tv:mobilenet_v3_small", 10)), path)
    with pytest.raises(UserError, match=r"none of its .* tensor names is one of the model's"):
        start_network(NetworkConfig(arch="tv:resnet18", init=str(path)), 10, "teacher")


def test_a_state_dict_teacher_must_predict_the_data_sets_classes(tmp_path: Path) -> None:
    from kdforge.compress.data import build_data

    config = tiny_config("teacher.arch=resnet8")
    data = build_data(config.data)
    path = tmp_path / "teacher.pth"
    torch.save({"model": _state(build("resnet8", 5))}, path)
    with pytest.raises(UserError, match=r"predicts 5 classes but the data set has 10: fine-tune it first"):
        load_teacher(path, data, network=config.teacher)
    trained = build("resnet8", 10)
    torch.save({"module." + k: v for k, v in _state(trained).items()}, path)
    teacher, spec, _ = load_teacher(path, data, network=config.teacher)
    assert spec is not None and spec.arch == "resnet8"
    assert torch.equal(teacher.fc.weight, trained.fc.weight)


# --------------------------------------------------------------------------------------------------
# a torch.export teacher
# --------------------------------------------------------------------------------------------------


def _export(path: Path, classes: int = 10, dynamic: bool = True) -> Path:
    torch.manual_seed(3)
    network = build("resnet14", classes).eval()
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(network, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tmp_path_factory.mktemp("pt2") / "teacher.pt2")


def test_an_exported_teacher_distills_a_zoo_student_started_from_a_state_dict(
    exported: Path, tmp_path: Path
) -> None:
    start = tmp_path / "student.pth"
    torch.save(_state(build("resnet8", 5)), start)  # fine-tuned: 5 -> 10 classes
    config = tiny_config(*FAST, f"student.init={start}")
    result = distill_student(config, tmp_path / "run", Session(progress=False), teacher_path=exported)
    meta = read_checkpoint(result.best_path).meta
    assert meta["teacher"]["format"] == "torch.export" and meta["teacher"]["sha256"] == sha256_file(exported)
    assert meta["init"]["source"] == os.path.abspath(start) and meta["init"]["sha256"] == sha256_file(start)
    assert (
        meta["init"]["reinitialised"] == ["fc.weight", "fc.bias"] and meta["init"]["format"] == "state_dict"
    )
    assert meta["model"] == {"arch": "resnet8", "options": {}, "num_classes": 10}
    assert "init" in json.loads(Path(result.best_path).with_suffix(".json").read_text())
    start.unlink()  # a resumed run takes its weights from `last` and keeps the record of its start
    longer = tiny_config(*FAST, "student_train.epochs=2", f"student.init={start}")
    resumed = distill_student(
        longer, tmp_path / "run", Session(resume=True, progress=False), teacher_path=exported
    )
    assert read_checkpoint(resumed.last_path).meta["init"] == meta["init"]


def test_an_exported_teacher_is_refused_where_it_cannot_serve(exported: Path, tmp_path: Path) -> None:
    config = tiny_config(*FAST)
    with pytest.raises(
        UserError, match=r"method 'dist_plus': teacher .* is a torch.export program"
    ) as caught:
        distill_student(
            config,
            tmp_path / "a",
            Session(progress=False),
            teacher_path=exported,
            method=MethodConfig("dist_plus"),
        )
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="no weights kdforge can start a network from"):
        start_network(NetworkConfig(arch="resnet14", init=str(exported)), 10, "student")
    generous = tiny_config("teacher_strategy.name=generous")
    from kdforge.compress.jobs import train_teacher

    with pytest.raises(UserError, match=r"torch\.export program"):
        train_teacher(generous, tmp_path / "g", Session(progress=False), standard_checkpoint=exported)
    five = _export(tmp_path / "five.pt2", classes=5)
    with pytest.raises(UserError, match=r"outputs \(1, 5\) for 1 images, not \(1, 10\) logits"):
        distill_student(config, tmp_path / "b", Session(progress=False), teacher_path=five)
    fixed = _export(tmp_path / "fixed.pt2", dynamic=False)
    with pytest.raises(UserError, match="with a dynamic batch dimension"):
        distill_student(config, tmp_path / "c", Session(progress=False), teacher_path=fixed)
    assert not any((tmp_path / name / "checkpoints").exists() for name in "abc"), "nothing trained"


def test_an_exported_program_with_a_pickled_entry_is_refused_before_torch_reads_it(
    exported: Path, tmp_path: Path
) -> None:
    patched = tmp_path / "patched.pt2"
    with zipfile.ZipFile(exported) as source, zipfile.ZipFile(patched, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(item, data)
    from kdforge.compress.weights import load_exported

    with pytest.raises(UserError, match=r"is a pickled object; kdforge never unpickles code"):
        load_exported(patched, (3, 16, 16), 10)


# --------------------------------------------------------------------------------------------------
# recipes: amp off, warm-up clamp, one source per network
# --------------------------------------------------------------------------------------------------


def test_amp_off_works_in_a_recipe_and_on_the_command_line(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("teacher_train:\n  amp: off\nstudent_train:\n  amp: bf16\n")
    config = load_recipe(recipe)
    assert config.teacher_train.amp == "off" and config.student_train.amp == "bf16"
    config = load_recipe(recipe, ["student_train.amp=off", "teacher_train.amp=bf16"])
    assert config.student_train.amp == "off" and config.teacher_train.amp == "bf16"


def test_a_warm_up_longer_than_the_run_is_clamped_with_a_warning() -> None:
    with pytest.warns(RecipeWarning, match=r"teacher_train.warmup_epochs 5 is longer than the run's 2 epoch"):
        config = load_recipe(None, ["teacher_train.epochs=2", "teacher_train.warmup_epochs=5"])
    assert config.teacher_train.warmup_epochs == 2


def test_student_checkpoint_and_init_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"student\.checkpoint and student\.init both give"):
        load_recipe(None, ["student.checkpoint=a.safetensors", "student.init=b.pth"])


def test_the_pipeline_converts_a_state_dict_teacher_into_a_kdforge_checkpoint(tmp_path: Path) -> None:
    from kdforge.compress.evaluation import evaluate_checkpoint
    from kdforge.compress.teachers import given_teacher
    from kdforge.export.report.summary import provenance_lines

    teacher = build("resnet8", 10)
    path = tmp_path / "teacher.safetensors"
    save_file(_state(teacher), str(path))
    config = tiny_config("teacher.arch=resnet8")
    written, kind = given_teacher(config, path, tmp_path / "teacher-given")
    assert kind == "kdforge" and Path(written).parent == tmp_path / "teacher-given" / "checkpoints"
    checkpoint = read_checkpoint(written)
    assert checkpoint.meta["init"]["format"] == "safetensors"
    assert checkpoint.meta["init"]["sha256"] == sha256_file(path)
    assert torch.equal(checkpoint.tensors["fc.weight"], teacher.fc.weight)
    assert 0 <= evaluate_checkpoint(written, config)["top1"] <= 100
    lines = provenance_lines({"checkpoint": written, "arch": "resnet8"}, {"checkpoint": "/nope", "arch": "x"})
    assert lines[0] == "## Starting weights"
    assert f"- teacher resnet8 weights from `{os.path.abspath(path)}` (safetensors" in lines[2]
