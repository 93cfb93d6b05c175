"""Recipe validation: typed values, unknown keys with the nearest name, overrides, range checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from kdforge.compress.config import RunConfig, load_recipe, to_dict
from kdforge.compress.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_validate() -> None:
    """Every recipe (top level, recipes/digits/, recipes/cifar100/<pair>/) with its method's options."""
    from kdforge.compress.config import MethodConfig
    from kdforge.compress.methods import TEACHER_STRATEGIES, method_options

    recipes = sorted((REPO / "recipes").rglob("*.yaml"))
    assert len(recipes) >= 60, "the repository ships the digits and CIFAR-100 per-method recipes"
    for recipe in recipes:
        overrides = [] if "digits" in str(recipe) else ["data.root=/nonexistent"]
        config = load_recipe(recipe, overrides)
        assert isinstance(config, RunConfig)
        method_options(config.method)
        strategy = config.teacher_strategy
        if strategy.name != "standard":
            method_options(MethodConfig(strategy.name, strategy.options), TEACHER_STRATEGIES)
    pairs = {p.parent.name for p in recipes if p.parent.parent.name == "cifar100"}
    assert {"resnet32x4_resnet8x4", "resnet56_resnet20", "wrn_40_2_wrn_16_2", "vgg13_vgg8"} <= pairs


def test_defaults_without_a_file() -> None:
    config = load_recipe(None)
    assert config.data.name == "digits" and config.method.name == "kd"
    assert config.student_train.milestones == [150, 180, 210]


def test_unknown_key_names_its_path_and_the_nearest_valid_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "student_train:\n  epochs: 3\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"'student_train.learning_rate'.*"):
        load_recipe(path)
    path = _write(tmp_path, "data:\n  batch_szie: 32\n")
    with pytest.raises(UserError, match=r"unknown key 'data.batch_szie'; did you mean 'batch_size'\?"):
        load_recipe(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data:\n  batch_size: many\n", r"data.batch_size: expected an integer, got 'many'"),
        ("data:\n  batch_size: 3.5\n", r"data.batch_size: expected an integer"),
        ("data:\n  augment: 3\n", r"data.augment: expected true/false"),
        ("data:\n  name: cifar1000\n", r"data.name: 'cifar1000' is not one of .*did you mean 'cifar100'"),
        ("device: gpu\n", r"device: 'gpu' is not one of .*did you mean 'cuda'"),  # not 'cpu'
        ("teacher_train:\n  milestones: 5\n", r"teacher_train.milestones: expected a list of an integer"),
        ("teacher_train:\n  lr: .nan\n", r"teacher_train.lr: expected a finite number"),
        ("data: [1, 2]\n", r"data: expected a mapping"),
        ("- a\n- b\n", r"top level must be a mapping"),
        ("data:\n  batch_size: 0\n", r"data.batch_size: must be > 0"),
        ("data:\n  train_fraction: 1.5\n", r"data.train_fraction: must be in \(0, 1\]"),
        ("data:\n  name: cifar100\n", r"data.root: the cifar100 data set needs a local directory"),
        ("teacher_train:\n  milestones: [30, 10]\n", r"milestones: must be increasing"),
        ("seed: -1\n", r"seed: must be >= 0"),
        ("data:\n  batch_size: 3\n  : x\n", r"recipe"),
        ("data: {batch_size: [}\n", r"at line 1"),
    ],
)
def test_bad_values_fail_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load_recipe(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_scientific_notation_without_a_dot_is_a_number(tmp_path: Path) -> None:
    # YAML 1.1 reads 5e-4 as a string; a user writing it means the number.
    config = load_recipe(_write(tmp_path, "student_train:\n  weight_decay: 5e-4\n"))
    assert config.student_train.weight_decay == pytest.approx(5e-4)


def test_overrides_apply_as_yaml_values_and_are_validated() -> None:
    config = load_recipe(
        None,
        [
            "student_train.epochs=7",
            "data.train_fraction=0.5",
            "teacher_train.milestones=[2, 4]",
            "method.options.temperature=2",
        ],
    )
    assert config.student_train.epochs == 7 and config.data.train_fraction == 0.5
    assert config.teacher_train.milestones == [2, 4] and config.method.options == {"temperature": 2}
    with pytest.raises(UserError, match=r"unknown key 'student_train\.epoch'; did you mean 'epochs'"):
        load_recipe(None, ["student_train.epoch=3"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        load_recipe(None, ["student_train.epochs"])
    with pytest.raises(UserError, match="is not a section"):
        load_recipe(None, ["seed=3", "seed.x=1"])


def test_missing_recipe_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_round_trip_through_a_plain_dict() -> None:
    from kdforge.compress.config import from_dict

    config = load_recipe(None, ["student.arch=resnet20", "student_train.grad_clip=5"])
    assert from_dict(RunConfig, to_dict(config)) == config


def test_a_recipe_sets_every_deploy_option_including_cuda_graph(tmp_path: Path) -> None:
    text = (
        "deploy:\n  precisions: [fp32, int8]\n  backends: [tensorrt]\n  batches: [1, 8]\n  device: cuda\n"
        "  cuda_graph: true\n  native: never\n  min_duration_s: 0.5\n  calibration_images: 64\n"
        "  calibration_method: entropy\n"
    )
    deploy = load_recipe(_write(tmp_path, text)).deploy
    assert deploy.cuda_graph is True and deploy.precisions == ["fp32", "int8"] and deploy.batches == [1, 8]
    assert (deploy.device, deploy.native, deploy.min_duration_s) == ("cuda", "never", 0.5)
    assert (deploy.calibration_images, deploy.calibration_method) == (64, "entropy")
    assert load_recipe(None).deploy.cuda_graph is False


def test_every_deploy_option_declares_its_help_and_every_flag_is_distinct() -> None:
    import dataclasses

    from kdforge.compress.config import DeployConfig

    fields = dataclasses.fields(DeployConfig)
    assert all(f.metadata.get("help") for f in fields)
    flags = [f.metadata["flag"] for f in fields if "flag" in f.metadata]
    assert len(flags) == len(set(flags)) == len(fields) - 1, "every option but `enabled` has a flag"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("deploy.batches=[1,x]", r"deploy.batches\[1\]: expected an integer, got 'x'"),
        ("deploy.batches=[-1]", r"deploy.batches\[0\]: must be > 0, got -1"),
        ("deploy.min_duration_s=-1", r"deploy.min_duration_s: must be > 0, got -1.0"),
        ("deploy.calibration_images=0", r"deploy.calibration_images: must be > 0, got 0"),
        ("deploy.native=sometimes", r"deploy.native: 'sometimes' is not one of 'auto', 'always', 'never'"),
        ("deploy.precisions=[fp8]", r"deploy.precisions\[0\]: 'fp8' is not one of 'fp32', 'fp16'"),
        ("deploy.backends=[]", r"deploy.backends: give at least 1 value\(s\), got \[\]"),
    ],
)
def test_deploy_limits_live_on_the_fields(override: str, message: str) -> None:
    from kdforge.compress.config import DeployConfig, apply_overrides, from_dict

    with pytest.raises(UserError, match=message):
        load_recipe(None, [override])
    section = apply_overrides({}, [override])["deploy"]  # the same value outside a recipe: same message
    with pytest.raises(UserError, match=message):
        from_dict(DeployConfig, section, "deploy")


# --------------------------------------------------------------------------------------------------
# issue 23: the whole recipe checked at load time, the command line over the recipe, renamed keys
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["method.options.temprature=2"],
            r"unknown key 'method.options.temprature'; did you mean 'temperature'",
        ),
        (["method.name=dkdd"], r"method.name: unknown method 'dkdd'; did you mean 'dkd'"),
        (["method.name=dkd", "method.options.beta=-1"], r"method.options.beta: must be >= 0, got -1"),
        (
            ["teacher_strategy.name=generous", "teacher_strategy.options.kk=2"],
            r"unknown key 'teacher_strategy.options.kk'; did you mean 'k'",
        ),
    ],
)
def test_method_and_strategy_options_are_checked_when_the_recipe_loads(overrides, message) -> None:
    with pytest.raises(UserError, match=message):
        load_recipe(None, overrides)


def test_check_changes_nothing_and_normalized_clamps_a_copy() -> None:
    import copy
    import warnings

    from kdforge.compress.config import RecipeWarning, TrainConfig, check, normalized

    config = RunConfig(teacher_train=TrainConfig(epochs=2, warmup_epochs=5))
    before = copy.deepcopy(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pure check: no warning either
        check(config)
    assert config == before
    with pytest.warns(RecipeWarning, match=r"teacher_train.warmup_epochs 5 is longer than the run's 2"):
        clamped = normalized(config)
    assert clamped.teacher_train.warmup_epochs == 2 and config == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "teacher:\n  checkpoint: t.safetensors\n  init: w.pth\n",
            r"teacher.checkpoint and teacher.init both give the teacher .*\(e.g. --set teacher.init=null\)",
        ),
        (
            "teacher:\n  arch: tv:resnet18\n  init: w.pth\n  options: {weights: DEFAULT}\n",
            r"teacher.init and teacher.options.weights both give the teacher's starting weights; keep one",
        ),
        (
            "student:\n  checkpoint: a.safetensors\n  init: b.pth\n",
            r"student.checkpoint and student.init both give .*\(e.g. --set student.checkpoint=null\)",
        ),
    ],
)
def test_two_sources_in_the_recipe_file_are_refused_by_check(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_recipe(_write(tmp_path, text))


def test_the_command_line_replaces_the_recipes_other_source_with_a_warning(tmp_path: Path) -> None:
    from kdforge.compress.config import RecipeWarning, flag_setting

    path = _write(tmp_path, "teacher:\n  arch: tv:resnet18\n  options: {weights: DEFAULT}\n")
    with pytest.warns(
        RecipeWarning, match=r"^--init my.pth replaces the recipe's teacher.options.weights: 'DEFAULT'$"
    ):
        config = load_recipe(path, flags=[flag_setting("--init", "teacher.init", "my.pth")])
    assert config.teacher.init == "my.pth" and config.teacher.options == {}
    with pytest.warns(
        RecipeWarning, match=r"--set 'teacher.init=x.pth' replaces the recipe's teacher.options"
    ):
        assert load_recipe(path, ["teacher.init=x.pth"]).teacher.init == "x.pth"
    with pytest.raises(
        UserError, match=r"teacher.init is given twice on the command line \(--set 'teacher.init"
    ):
        load_recipe(path, ["teacher.init=x.pth"], flags=[flag_setting("--init", "teacher.init", "my.pth")])


def test_a_flag_replacing_the_recipes_value_of_its_own_key_says_so(tmp_path: Path) -> None:
    from kdforge.compress.config import RecipeWarning, flag_setting

    path = _write(tmp_path, "teacher:\n  checkpoint: old.safetensors\n")
    teacher = flag_setting("--teacher", "teacher.checkpoint", "new.safetensors")
    with pytest.warns(
        RecipeWarning, match=r"--teacher new.safetensors replaces the recipe's teacher.checkpoint"
    ):
        assert load_recipe(path, flags=[teacher]).teacher.checkpoint == "new.safetensors"
    with pytest.raises(UserError, match=r"teacher.checkpoint is given twice on the command line"):
        load_recipe(path, ["teacher.checkpoint=other.safetensors"], flags=[teacher])


def test_student_checkpoint_is_the_old_name_of_student_init(tmp_path: Path) -> None:
    from kdforge.compress.config import RecipeWarning

    path = _write(tmp_path, "student:\n  checkpoint: start.safetensors\n")
    with pytest.warns(RecipeWarning, match=r"^student.checkpoint is the old name of student.init; write"):
        config = load_recipe(path)
    assert config.student.init == "start.safetensors" and config.student.checkpoint is None


def test_dkd_ramp_epochs_and_its_old_name(tmp_path: Path) -> None:
    from kdforge.compress.config import RecipeWarning
    from kdforge.compress.methods import method_class, method_options
    from torch import nn

    config = load_recipe(None, ["method.name=dkd", "method.options.ramp_epochs=4"])
    dkd = method_class("dkd")(nn.Identity(), nn.Identity(), method_options(config.method))
    dkd.on_epoch_start(0, 10)
    assert dkd.ramp == 0.25
    with pytest.warns(RecipeWarning, match=r"method.options.warmup_epochs is the old name of .*ramp_epochs"):
        config = load_recipe(None, ["method.name=dkd", "method.options.warmup_epochs=3"])
    assert config.method.options == {"ramp_epochs": 3}
    with pytest.raises(UserError, match=r"^method.options.warmup_epochs: must be >= 0, got -1$"):
        load_recipe(None, ["method.name=dkd", "method.options.warmup_epochs=-1"])
    with pytest.raises(UserError, match=r"warmup_epochs is the old name of .*ramp_epochs and both are set"):
        load_recipe(
            None, ["method.name=dkd", "method.options.warmup_epochs=3", "method.options.ramp_epochs=3"]
        )
