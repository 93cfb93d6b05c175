"""Methods register with `@register` and validate their own options: adding one is one new file.

The example method of docs/training.md is taken from the page, saved as a new module of the methods
package (in a temporary folder on the package's path) and found by the same discovery the package runs
at import; no list is edited anywhere.
"""

from __future__ import annotations

import dataclasses
import pkgutil
import re
import sys
import typing
from pathlib import Path

import kdforge.compress.methods as methods
import pytest
import torch
from kdforge.compress.config import MethodConfig, PositiveFloat
from kdforge.compress.errors import UserError
from kdforge.compress.methods import (
    METHODS,
    TEACHER_STRATEGIES,
    Distiller,
    build_method,
    discover_methods,
    method_class,
    method_options,
    register,
)
from kdforge.compress.models import build

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"
HELPERS = {"base", "logit"}  # modules that hold shared code and register nothing


@pytest.fixture
def registries():
    """Restore both registries (and the imported method modules) after a test that adds methods."""
    saved = dict(METHODS), dict(TEACHER_STRATEGIES)
    modules = set(sys.modules)
    yield
    for table, before in zip((METHODS, TEACHER_STRATEGIES), saved, strict=True):
        table.clear()
        table.update(before)
    for name in set(sys.modules) - modules:
        if name.startswith(f"{methods.__name__}."):
            del sys.modules[name]
            if hasattr(methods, name.rsplit(".", 1)[1]):
                delattr(methods, name.rsplit(".", 1)[1])


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build("resnet8", 10), build("resnet14", 10)


def test_every_method_module_registers_a_method() -> None:
    """Discovery needs no list: every module but the helpers registers at least one class of its own."""
    modules = [module.name for module in pkgutil.iter_modules(methods.__path__)]
    registered = [*METHODS.values(), *TEACHER_STRATEGIES.values()]
    for module in modules:
        own = [cls.name for cls in registered if cls.__module__ == f"{methods.__name__}.{module}"]
        assert bool(own) == (module not in HELPERS), f"{module}.py registers {own}"
    assert {cls.__module__.rsplit(".", 1)[1] for cls in registered} == set(modules) - HELPERS
    assert set(METHODS) == {"ce", "kd", "dkd", "dist", "dist_plus", "sate", "rsd"}
    assert set(TEACHER_STRATEGIES) == {"generous"}


def test_the_docs_example_is_one_new_file_and_nothing_else(tmp_path: Path, registries, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    (example,) = [block for block in blocks if 'name = "mine"' in block]
    (tmp_path / "mine.py").write_text(example, encoding="utf-8")
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    assert "mine" not in METHODS
    assert "mine" in discover_methods()
    assert METHODS["mine"].__module__ == f"{methods.__name__}.mine"

    student, teacher = _pair()
    method = build_method(MethodConfig("mine", {"temperature": 2.0}), student, teacher)
    assert method.options.temperature == 2.0 and method.frozen == (teacher,)
    logits, terms = method.forward_train(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    assert logits.shape == (4, 10) and set(terms) == {"ce", "kd"}
    with pytest.raises(UserError) as caught:
        build_method(MethodConfig("mine", {"temperature": 0}), student, teacher)
    assert str(caught.value) == "method.options.temperature: must be > 0, got 0.0"
    with pytest.raises(UserError, match=r"^method.options.kd_weight: must be >= 0, got -1.0$"):
        build_method(MethodConfig("mine", {"kd_weight": -1}), student, teacher)


def test_a_decorated_class_registers_under_its_name(registries) -> None:
    @dataclasses.dataclass
    class ScaledOptions:
        scale: PositiveFloat = 1.0

    @register
    class Scaled(Distiller):
        name = "scaled_ce_test"
        needs_teacher = False
        Options = ScaledOptions

        def forward_train(self, images, labels):
            logits = self.student(images)
            return logits, {"ce": self.options.scale * torch.nn.functional.cross_entropy(logits, labels)}

    assert METHODS["scaled_ce_test"] is Scaled and method_class("scaled_ce_test") is Scaled
    student, _ = _pair()
    method = build_method(MethodConfig("scaled_ce_test", {"scale": 3}), student, None)
    assert method.options == ScaledOptions(3.0) and method.teacher is None
    with pytest.raises(UserError, match=r"^method.options.scale: must be > 0, got -2.0$"):
        method_options(MethodConfig("scaled_ce_test", {"scale": -2}))

    class Helper(Scaled):  # a subclass without @register (a helper, a test double) registers nothing
        name = "helper_test"

    assert METHODS["scaled_ce_test"] is Scaled and "helper_test" not in METHODS
    with pytest.raises(TypeError, match=r"Unnamed sets no `name`"):

        @register
        class Unnamed(Scaled):  # an inherited name would register the parent's name twice
            pass


def test_a_taken_name_is_an_error_at_import(registries) -> None:
    with pytest.raises(TypeError, match=r"method name 'kd' of .*Copy is taken by .*methods\.kd\.KD"):

        @register
        class Copy(METHODS["kd"]):
            name = "kd"

    assert METHODS["kd"].__module__ == f"{methods.__name__}.kd"
    with pytest.raises(TypeError, match=r"method name 'generous' .* is taken by"):

        @register
        class Student(METHODS["kd"]):
            name = "generous"  # unique across both registries: the CLI's hints stay unambiguous


def test_a_class_that_cannot_be_built_is_refused_at_import(registries) -> None:
    with pytest.raises(TypeError, match=r"method 'half' .* does not implement forward_train"):

        @register
        class Half(Distiller):
            name = "half"

    with pytest.raises(TypeError, match=r"Options must be a dataclass"):

        @register
        class NoOptions(METHODS["ce"]):
            name = "no_options"
            Options = dict


def test_a_teacher_strategy_registers_apart_and_the_cli_says_where_it_runs(registries) -> None:
    @register
    class Strategy(METHODS["ce"]):
        name = "strategy_test"
        kind = "teacher"

    assert TEACHER_STRATEGIES["strategy_test"] is Strategy and "strategy_test" not in METHODS
    assert method_class("strategy_test", TEACHER_STRATEGIES) is Strategy
    with pytest.raises(UserError, match=r"'strategy_test' trains a teacher: use `kdforge teacher`"):
        method_class("strategy_test")


def _numeric_fields(options: type) -> list[tuple[str, typing.Any]]:
    hints = typing.get_type_hints(options, include_extras=True)
    fields = []
    for f in dataclasses.fields(options):
        hint = hints[f.name]
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
        if base in (int, float):
            fields.append((f.name, hint))
    return fields


@pytest.mark.parametrize("cls", [*METHODS.values(), *TEACHER_STRATEGIES.values()], ids=lambda c: c.name)
def test_every_numeric_option_declares_its_limits_on_the_field(cls: type[Distiller]) -> None:
    """No weight or temperature escapes validation: each int/float option is Annotated with its limit."""
    for name, hint in _numeric_fields(cls.Options):
        assert typing.get_origin(hint) is typing.Annotated, f"{cls.name}.{name} has no limit"


# The accepted ranges of the former POSITIVE list and check_options (weights >= 0, temperatures > 0), and
# the [0, 1) of RSD's drop_rate and SATE's ema_decay, now read off the fields.
LIMITS = [
    ("kd", "temperature", 0, "must be > 0, got 0.0"),
    ("kd", "ce_weight", -0.1, "must be >= 0, got -0.1"),
    ("dkd", "alpha", -1, "must be >= 0, got -1.0"),
    ("dkd", "warmup_epochs", -1, "must be >= 0, got -1"),
    ("dist", "gamma", -1, "must be >= 0, got -1.0"),
    ("dist_plus", "feature_temperature", 0, "must be > 0, got 0.0"),
    ("dist_plus", "temperature", -4, "must be > 0, got -4.0"),  # inherited from DIST's options
    ("dist_plus", "acclimation_lr_scale", -0.1, "must be >= 0, got -0.1"),
    ("rsd", "external_temperature", 0, "must be > 0, got 0.0"),
    ("rsd", "drop_rate", 1, "must be in [0, 1), got 1.0"),
    ("sate", "ema_decay", 1.5, "must be in [0, 1), got 1.5"),
    ("sate", "student_warmup_epochs", -2, "must be >= 0, got -2"),
    ("ce", "label_smoothing", 1.5, "must be in [0, 1], got 1.5"),
    ("generous", "k", 0, "must be > 0, got 0.0"),
]


@pytest.mark.parametrize(("name", "key", "value", "message"), LIMITS)
def test_out_of_range_options_fail_in_one_line_naming_the_limit(name, key, value, message) -> None:
    registry = TEACHER_STRATEGIES if name in TEACHER_STRATEGIES else None
    with pytest.raises(UserError) as caught:
        method_options(MethodConfig(name, {key: value}), registry)
    assert str(caught.value) == f"method.options.{key}: {message}"


@pytest.mark.parametrize(("name", "key", "value"), [("kd", "temperature", 1e-6), ("dkd", "beta", 0)])
def test_the_limits_themselves_still_pass(name, key, value) -> None:
    assert getattr(method_options(MethodConfig(name, {key: value})), key) == value


def test_sate_checks_the_student_loss_options_with_that_methods_own_limits() -> None:
    with pytest.raises(UserError) as caught:
        method_options(MethodConfig("sate", {"student_loss": "dkd", "student_loss_options": {"beta": -1}}))
    assert str(caught.value) == "method.options.student_loss_options.beta: must be >= 0, got -1.0"
    with pytest.raises(UserError, match=r"unknown key 'method.options.student_loss_options.tau'"):
        method_options(MethodConfig("sate", {"student_loss": "dist", "student_loss_options": {"tau": 1}}))
    options = method_options(MethodConfig("sate", {"student_loss_options": {"temperature": 2}}))
    assert options.student_loss_options == {"temperature": 2}


def test_the_package_names_no_method() -> None:
    """The package module only discovers: no class list, no per-method branch."""
    source = Path(methods.__file__).read_text(encoding="utf-8")
    for cls in [*METHODS.values(), *TEACHER_STRATEGIES.values()]:
        assert not re.search(rf"\b{cls.__name__}\b", source), cls.__name__
