"""The program JSON of a torch.export archive, checked so deserializing and running it calls only
operators: torch deserializes operator names by walking attributes from `torch` (`torch.os.system` is one),
parses symbolic shapes with `sympy.sympify` (which evaluates Python) and compiles `guards_code` into the
module. Refused: any target that is not an operator, any shape expression outside sympy's shape vocabulary;
guards (input checks only) are dropped."""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from kdforge.compress.errors import UserError

OPERATOR_NAMES = {  # pure functions of the `_operator` module exported graphs use
    *[
        "getitem",
        "add",
        "sub",
        "mul",
        "truediv",
        "floordiv",
        "mod",
        "pow",
        "neg",
        "pos",
        "abs",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
    ],
    *["and_", "or_", "not_", "xor", "invert", "lshift", "rshift", "matmul", "index", "truth"],
}
TORCH_FUNCTIONS = ("_assert", "_check", "_check_is_size", "sym_float", "sym_int", "sym_max", "sym_min")
TORCH_FUNCTIONS += ("sym_not", "sym_ite", "sym_sqrt", "sym_sum")
SYMPY_NAMES = {
    *[
        "Symbol",
        "Integer",
        "Rational",
        "Float",
        "Max",
        "Min",
        "Abs",
        "Mod",
        "Eq",
        "Ne",
        "Lt",
        "Le",
        "Gt",
        "Ge",
        "And",
        "Or",
        "Not",
        "oo",
        "Piecewise",
    ],
    *[
        "True",
        "False",
        "positive",
        "integer",
        "real",
        "nonnegative",
        "finite",
        "negative",
        "nonpositive",
        "floor",
        "ceiling",
    ],
    *[
        "FloorDiv",
        "ModularIndexing",
        "Where",
        "PythonMod",
        "CleanDiv",
        "CeilToInt",
        "FloorToInt",
        "CeilDiv",
        "LShift",
        "RShift",
    ],
    *[
        "PowByNatural",
        "FloatPow",
        "FloatTrueDiv",
        "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator",
        "TruncToFloat",
    ],
    *["TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity"],
}
SYMBOL = re.compile(r"[a-z]{1,4}\d+")  # s0, u3, zuf0: the shape symbols torch names
TOKEN = re.compile(r"\s+|\d+(?:\.\d+)?(?:e[-+]?\d+)?|'?[A-Za-z_]\w*'?|\*\*|//|[-+*/%(),<>=!&|~]=?")


def _operator_ok(target: Any) -> bool:
    """Whether a serialized target names an operator, resolved the way torch's deserializer does."""
    if not isinstance(target, str):
        return False
    head, _, rest = target.partition(".")
    if head == "_operator":
        return rest in OPERATOR_NAMES
    if head == "math":
        return rest.isidentifier() and not rest.startswith("_") and callable(getattr(math, rest, None))
    if head != "torch":
        return False
    if rest in TORCH_FUNCTIONS:
        return True
    if not rest.startswith("ops."):
        return False
    found: Any = torch
    for name in rest.split("."):
        if name.startswith("__") or not hasattr(found, name):
            return False
        found = getattr(found, name)
    ops = torch._ops
    return isinstance(found, ops.OpOverload | ops.OpOverloadPacket | ops.HigherOrderOperator)


def _expression_ok(text: Any) -> bool:
    """Whether a shape expression uses only numbers, arithmetic, shape symbols and sympy's shape names."""
    if not isinstance(text, str) or "__" in text or len(text) > 10_000:
        return False
    position = 0
    while position < len(text):
        found = TOKEN.match(text, position)
        if found is None:
            return False
        word = found.group().strip("'")
        named = word[:1].isalpha() or word[:1] == "_"
        if named and word not in SYMPY_NAMES and not SYMBOL.fullmatch(word):
            return False
        position = found.end()
    return True


def checked_program(program: dict[str, Any], where: str) -> dict[str, Any]:
    """The program with its guards dropped, after refusing any non-operator target or shape expression
    that is not plain arithmetic (what would run code while torch loads or runs it)."""
    problem = None
    stack: list[Any] = [program]
    while stack and problem is None:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if "target" in node and "inputs" in node and not _operator_ok(node["target"]):
            problem = f"it calls {str(node['target'])[:80]!r}, which is not an operator"
        elif "as_operator" in node and not _operator_ok(node["as_operator"]):
            problem = f"it passes {str(node['as_operator'])[:80]!r}, which is not an operator"
        elif "expr_str" in node and not _expression_ok(node["expr_str"]):
            problem = f"its shape expression {str(node['expr_str'])[:80]!r} is not plain arithmetic"
        stack.extend(node.values())
    for key in (program.get("range_constraints") or {}) if problem is None else ():
        if not _expression_ok(key):
            problem = f"its shape symbol {str(key)[:80]!r} is not plain arithmetic"
            break
    if problem:
        raise UserError(
            f"{where} is refused without running anything: {problem}; kdforge loads only programs of "
            "operators. Re-export it with torch.export.save"
        )
    return {**program, "guards_code": []}
