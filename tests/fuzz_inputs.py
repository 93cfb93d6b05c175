"""Hypothesis strategies for hostile recipes and command lines, shared by the fuzz tests and
benchmarks/faults.py: mutations of a valid recipe (wrong types, huge and negative numbers, NaN, unicode,
unknown keys, nested junk) and command lines built from kdforge's own words plus random text."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["resnet8", "kd", "cuda", "auto", "cifar100", "1e-3", "", "-1", "nan", "🙂", "a.b"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(tree: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, str(key)))
    return found


PATHS = _paths(BASE)


@st.composite
def recipes(draw: st.DrawFn) -> dict[str, Any]:
    """The digits recipe with 1-4 random edits: a value replaced, a key dropped, or an unknown key added."""
    tree = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        parent = tree
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                break
            parent = parent[key]
        else:
            action = draw(st.sampled_from(["replace", "drop", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(values)
            elif action == "drop":
                parent.pop(path[-1], None)
            else:
                parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    return tree


WORDS = ["teacher", "compress", "run", "eval", "deploy", "bench", "predict", "doctor", "models",
         "--set", "--out", "--resume", "--method", "--teacher", "--batches", "--backends", "--precision",
         "--top", "--min-duration", "--device", "--input-shape", "--split", "--strategy", "--standard",
         "recipes/digits.yaml", "kd", "dkd", "rsd", "1,64", "0", "-5", "torch", "tensorrt", "int4",
         "teacher_train.epochs=-1", "data.batch_size=0", "method.options.temperature=nan",
         "x=y=z"]  # fmt: skip
command_lines = st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=10)), min_size=0, max_size=6)
