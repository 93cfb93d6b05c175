"""One registration mechanism for models and methods (compress/registry.py): `@register` plus discovery of
the package's modules on the first lookup; the recipe layer imports the tables without torch or a cycle."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import kdforge.compress.models as models
import pytest
from kdforge.compress.errors import UserError
from kdforge.compress.models import available, build
from kdforge.compress.registry import MODELS, Registry


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_config_imports_the_tables_without_torch_and_resolves_a_method_on_lookup() -> None:
    """config.py imports the registry at the top (no cycle with the methods), and a lookup from config's
    side alone finds every method with its options dataclass: what recipe-time validation needs."""
    printed = _python(
        """
        import sys
        import kdforge.compress.config
        from kdforge.compress import registry
        print("torch" in sys.modules, "kdforge.compress.methods" in sys.modules)
        cls = registry.method_class("dkd")
        print(cls.__module__, cls.Options.__name__, sorted(registry.TEACHER_STRATEGIES))
        """
    )
    assert printed.splitlines() == ["False False", "kdforge.compress.methods.dkd DKDOptions ['generous']"]


def test_importing_one_method_module_first_registers_every_method() -> None:
    printed = _python(
        """
        from kdforge.compress.methods.kd import KD
        from kdforge.compress.registry import METHODS
        print(METHODS["kd"] is KD, sorted(METHODS))
        """
    )
    assert printed == "True ['ce', 'dist', 'dist_plus', 'dkd', 'kd', 'rsd', 'sate']"


def test_a_new_model_is_one_new_file_found_by_discovery(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tiny_test_model.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            from kdforge.compress.models import register


            @register("tiny_test_net")
            def tiny(num_classes: int) -> nn.Module:
                return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"{models.__name__}.tiny_test_model", raising=False)
    try:
        assert "tiny_test_model" in MODELS.discover()
        assert "tiny_test_net" in available()
        assert build("tiny_test_net", 3)[1].out_features == 3
    finally:
        MODELS.pop("tiny_test_net", None)
        sys.modules.pop(f"{models.__name__}.tiny_test_model", None)


def test_a_taken_model_name_is_an_error_at_import() -> None:
    def other(num_classes: int) -> None:
        return None

    with pytest.raises(TypeError, match=r"model name 'resnet8' of .*other is taken by .*resnet_cifar"):
        models.register("resnet8")(other)


def test_an_unknown_name_names_the_key_and_the_nearest_entry() -> None:
    table: Registry[int] = Registry("widget", "kdforge.compress.models")
    table.register("spanner", 1)
    with pytest.raises(UserError, match=r"^tool.name: unknown widget 'spaner'; did you mean 'spanner'\?$"):
        table.lookup("spaner", "tool.name")


def test_every_method_and_strategy_has_its_torch_free_options_entry_and_no_more() -> None:
    """compress/method_options.py and the method classes name the same methods, with the same options."""
    from kdforge.compress.methods import METHODS, TEACHER_STRATEGIES
    from kdforge.compress.registry import METHOD_OPTIONS, STRATEGY_OPTIONS

    for classes, entries in ((METHODS, METHOD_OPTIONS), (TEACHER_STRATEGIES, STRATEGY_OPTIONS)):
        assert set(classes) == set(entries)
        for name, cls in classes.items():
            assert cls.Options is entries[name].options, name
            assert dict(cls.renamed_options) == dict(entries[name].renamed_options), name


def test_a_bad_method_option_fails_in_one_line_without_importing_torch() -> None:
    """The issue's requirement: a typo in method.options fails before torch loads (well under 2 s)."""
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "digits.yaml"
    printed = _python(
        """
        import sys
        from kdforge.compress.config import load_recipe
        from kdforge.compress.errors import UserError
        cases = [
            ["method.options.temprature=2"],
            ["method.name=dkd", "method.options={warmup_epochs: 3, ramp_epochs: 2}"],
            ["method.name=sate", "method.options={student_loss: dkd, student_loss_options: {beta: -1}}"],
            ["teacher_strategy.name=generous", "teacher_strategy.options.k=0"],
        ]
        for overrides in cases:
            try:
                load_recipe(RECIPE, overrides)
            except UserError as exc:
                print(exc)
        print("torch" in sys.modules)
        """.replace("RECIPE", repr(str(recipe)))
    )
    assert printed.splitlines() == [
        "unknown key 'method.options.temprature'; did you mean 'temperature'?",
        "method.options.warmup_epochs is the old name of method.options.ramp_epochs and both are set; keep "
        "ramp_epochs",
        "method.options.student_loss_options.beta: must be >= 0, got -1.0",
        "teacher_strategy.options.k: must be > 0, got 0.0",
        "False",
    ]
