"""Every CIFAR-100 recipe carries the published settings listed in `recipes/cifar100/README.md`.

The README's tables are the one statement of those settings (with their sources); this test reads them
and checks each recipe file: the schedule of both training stages, the method and its options (and the
teacher strategy) as the method validates them, and the published numbers quoted in its header.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kdforge.compress.config import RunConfig, load_recipe
from kdforge.compress.methods import TEACHER_STRATEGIES, method_class
from kdforge.compress.methods.sate import STUDENT_LOSSES

REPO = Path(__file__).resolve().parents[2]
CIFAR = REPO / "recipes" / "cifar100"
README = CIFAR / "README.md"
RECIPES = sorted(CIFAR.glob("*/*.yaml"))
SMALL_LR_ARCHS = ("mobilenet", "shuffle")  # the references train these at lr 0.01

# The published schedule (mdistiller's SOLVER, DIST's dist_cifar.yaml, RSD_cifar100.py): the README table
# must say this, so an edit of the table cannot quietly loosen the check below.
PUBLISHED_SCHEDULE = {
    "*_train.epochs": (240, 240),
    "*_train.optimizer": ("sgd", "sgd"),
    "*_train.momentum": (0.9, 0.9),
    "*_train.lr": (0.05, 0.01),
    "*_train.schedule": ("multistep", "multistep"),
    "*_train.milestones": ([150, 180, 210], [150, 180, 210]),
    "*_train.lr_decay": (0.1, 0.1),
    "*_train.weight_decay": (5e-4, 5e-4),
    "data.batch_size": (64, 64),
    "data.augment": (True, True),
    "data.val_fraction": (0.0, 0.0),
}


def _text(cell: str) -> str:
    """A cell's text, without the code span around it."""
    cell = cell.strip()
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


def _cell(cell: str) -> Any:
    """A cell's value: `-` is None, otherwise the YAML inside its code span."""
    text = _text(cell)
    return None if text == "-" else yaml.safe_load(text)


def _table(header_start: str) -> list[list[str]]:
    """The body rows (raw cells) of the README table whose header row starts with `header_start`."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def schedule_table() -> dict[str, tuple[Any, Any]]:
    return {_text(key): (_cell(value), _cell(small)) for key, value, small, _ in _table("| recipe key")}


def settings_table() -> dict[tuple[str, str], dict[str, Any]]:
    """(pair or '*', recipe file name) -> {'method', 'options', 'teacher_strategy'}."""
    table = {}
    for pair, recipe, method, options, strategy, _source in _table("| pair | recipe |"):
        key = (_text(pair), _text(recipe))
        assert key not in table, f"two README rows for {key}"
        table[key] = {"method": _text(method), "options": _cell(options), "teacher_strategy": _cell(strategy)}
    return table


def numbers_table() -> dict[str, dict[str, str]]:
    """pair -> {column name: published number as written (e.g. '76.32'), or None}."""
    start = "| pair (`recipes/cifar100/<pair>/`)"
    rows = _table(start)
    header = next(line for line in README.read_text().splitlines() if line.startswith(start))
    # a column is named by its last code span ('student `ce.yaml`' -> 'ce.yaml'), else by its text
    columns = [(re.findall(r"`([^`]+)`", c) or [c.strip()])[-1] for c in header.strip("|").split("|")]
    table = {}
    for row in rows:
        numbers = {}
        for column, cell in zip(columns[1:], row[1:], strict=True):
            match = re.match(r"\d+\.\d+", cell)
            numbers[column] = match.group(0) if match else None
        table[_text(row[0])] = numbers
    return table


def _row(recipe: Path) -> dict[str, Any]:
    table = settings_table()
    return table.get((recipe.parent.name, recipe.name)) or table[("*", recipe.name)]


def _load(recipe: Path) -> RunConfig:
    return load_recipe(recipe, ["data.root=/nonexistent"])


def _normalized(name: str, options: dict[str, Any], registry: dict | None = None) -> Any:
    """The method's validated options; SATE's wrapped-loss options validated by that loss too."""
    value = method_class(name, registry).validate_options(options)
    if name == "sate":
        inner = STUDENT_LOSSES[value.student_loss].validate_options(value.student_loss_options)
        value = dataclasses.replace(value, student_loss_options=inner)
    return value


def _id(recipe: Path) -> str:
    return f"{recipe.parent.name}/{recipe.name}"


# ------------------------------------------------------------------------------------ the tables
def test_the_readme_states_the_published_schedule() -> None:
    assert schedule_table() == PUBLISHED_SCHEDULE


def test_the_readme_tables_cover_exactly_the_shipped_recipes() -> None:
    pairs = {recipe.parent.name for recipe in RECIPES}
    assert len(pairs) >= 5 and len(RECIPES) >= 60
    assert set(numbers_table()) == pairs, "every pair has a row of published numbers"
    table = settings_table()
    for pair, name in table:
        assert pair == "*" or pair in pairs, f"README row for unknown pair {pair}"
        where = sorted(CIFAR.glob(f"*/{name}")) if pair == "*" else [CIFAR / pair / name]
        assert where and all(p.is_file() for p in where), f"README row for missing recipe {pair}/{name}"
    for recipe in RECIPES:
        assert (recipe.parent.name, recipe.name) in table or ("*", recipe.name) in table, _id(recipe)


# ---------------------------------------------------------------------------------- each recipe
@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_recipe_follows_the_published_schedule(recipe: Path) -> None:
    config = _load(recipe)
    for key, (value, small_value) in schedule_table().items():
        section, field = key.split(".")
        if section == "data":
            assert getattr(config.data, field) == value, f"{_id(recipe)}: {key}"
            continue
        for stage, arch in (("teacher_train", config.teacher.arch), ("student_train", config.student.arch)):
            small = any(name in arch.lower() for name in SMALL_LR_ARCHS)
            expected = small_value if small else value
            assert getattr(getattr(config, stage), field) == expected, f"{_id(recipe)}: {stage}.{field}"


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_recipe_method_options_are_the_published_settings(recipe: Path) -> None:
    config, row = _load(recipe), _row(recipe)
    assert config.method.name == row["method"], _id(recipe)
    assert _normalized(config.method.name, config.method.options) == _normalized(
        row["method"], row["options"]
    )
    strategy, listed = config.teacher_strategy, row["teacher_strategy"]
    if listed is None:
        assert strategy.name == "standard", f"{_id(recipe)}: the README lists no teacher strategy"
    else:
        assert strategy.name == listed["name"], _id(recipe)
        got = _normalized(strategy.name, strategy.options, TEACHER_STRATEGIES)
        assert got == _normalized(listed["name"], listed.get("options", {}), TEACHER_STRATEGIES)


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_recipe_header_quotes_the_published_numbers(recipe: Path) -> None:
    numbers = numbers_table()[recipe.parent.name]
    published = [line for line in recipe.read_text().splitlines() if line.startswith("# Published")]
    if not published:
        assert recipe.stem == "rsd", f"{_id(recipe)} quotes no published numbers"
        return
    (line,) = published
    assert numbers["teacher"] in line and numbers["ce.yaml"] in line, _id(recipe)
    own = numbers.get(recipe.name)
    if own is not None:
        assert own in line, f"{_id(recipe)}: the published {recipe.stem} number {own}"
    else:
        assert "no published number" in line, _id(recipe)


def test_dkd_beta_and_kd_ls_base_temperature_differ_by_pair_as_published() -> None:
    """The two per-pair settings, spelled out: mdistiller's DKD beta and the LS log's base temperature."""
    beta = {r.parent.name: _load(r).method.options["beta"] for r in CIFAR.glob("*/dkd.yaml")}
    assert beta == {
        "resnet32x4_resnet8x4": 8.0,
        "resnet56_resnet20": 2.0,
        "wrn_40_2_wrn_40_1": 6.0,
        "wrn_40_2_wrn_16_2": 6.0,
        "vgg13_vgg8": 6.0,
    }
    for recipe in CIFAR.glob("*/kd_ls.yaml"):
        options = _load(recipe).method.options
        assert options["ce_weight"] == 0.1 and options["kd_weight"] == 9.0 and options["standardize"]
        assert options["temperature"] == (3.0 if recipe.parent.name == "vgg13_vgg8" else 2.0)
