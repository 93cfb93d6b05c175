"""Bounds on what the metadata of a checkpoint, ONNX file or compiled artifact may ask kdforge to build or
allocate: its class count, input shape, normalisation and class names are checked, one line each, before
any network, buffer or image is made from them. Plain checks (not the recipe's annotated-types machinery):
the values come from JSON a stranger wrote, so each needs a type check first and a message that never
repeats an unbounded value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kdforge.compress.errors import UserError
from kdforge.compress.text import shown

MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; a 1e9-way head would need terabytes
MAX_CHANNELS = 16
MAX_SIDE = 4096  # pixels per side of the network's input
MAX_CLASS_NAME = 256  # characters
MAX_ARCH = 200  # characters of an architecture name
MAX_SHAPE_ENTRIES = 10_000  # layers (and dropped blocks) of a network's shape; tv:resnet152 has about 470
MAX_SHAPE_CHANNELS = 65_536  # channels, features or groups of one recorded layer
MAX_MODULE_PATH = 500  # characters of a module path such as layer4.2.conv3


@dataclass(frozen=True)
class Preprocessing:
    """What running a network on image files needs from its metadata, checked."""

    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    classes: list[str]


def _int(value: Any, low: int, high: int, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{where}: {what} must be an integer in [{low}, {high}], got {shown(value)}; {_FIX}")
    return value


_FIX = "the metadata is corrupt or hostile: re-export the file with kdforge"


def check_meta(meta: Any, where: str) -> None:
    """Refuse checkpoint metadata that is not a JSON object, or whose model or data entries are malformed
    or ask for more than kdforge builds. Absent entries are left to the caller's own checks."""
    if not isinstance(meta, dict):
        raise UserError(
            f"{where} has metadata that is not a JSON object ({type(meta).__name__}); "
            "was it written by kdforge?"
        )
    num_classes = check_model(meta["model"], where) if meta.get("model") is not None else None
    if meta.get("data") is not None:
        check_data(meta["data"], where, num_classes)


def check_model(model: Any, where: str) -> int | None:
    """Check the arch, num_classes and options of a checkpoint's model entry; its class count if given."""
    if not isinstance(model, dict):
        raise UserError(f"{where}: metadata 'model' is not an object; {_FIX}")
    arch = model.get("arch")
    if "arch" in model and (not isinstance(arch, str) or not 0 < len(arch) <= MAX_ARCH):
        raise UserError(f"{where}: model arch must be a name of 1-{MAX_ARCH} characters, got {shown(arch)}")
    if not isinstance(model.get("options", {}), dict):
        raise UserError(f"{where}: model options must be an object, got {shown(model['options'])}; {_FIX}")
    if model.get("shape") is not None:
        check_network_shape(model["shape"], where)
    if "num_classes" not in model:
        return None
    return _int(model["num_classes"], 1, MAX_CLASSES, "num_classes", where)


def check_network_shape(shape: Any, where: str) -> None:
    """Check the JSON form of a network's shape (compress/shape.py) before any module is built from it:
    `{"layers": {path: [in, out, groups] | [features] | [in(, out)]}, "dropped": [path, ...]}`, at most
    MAX_SHAPE_ENTRIES entries, every count an integer in [1, MAX_SHAPE_CHANNELS], groups dividing both
    channel counts. Which module each path names is apply_shape's check (it needs the network)."""
    fix = "record it with kdforge.compress.shape.shape_of"
    if not isinstance(shape, dict):
        raise UserError(f"{where}: shape must be an object, got {type(shape).__name__}; {fix}")
    unknown = sorted(map(str, set(shape) - {"layers", "dropped"}))
    if unknown:
        raise UserError(f"{where}: shape has unknown key {shown(unknown[0])} (keys: layers, dropped); {fix}")
    layers, dropped = shape.get("layers", {}), shape.get("dropped", [])
    if not isinstance(layers, dict) or not isinstance(dropped, list):
        raise UserError(f"{where}: shape 'layers' must be an object and 'dropped' a list; {fix}")
    if len(layers) + len(dropped) > MAX_SHAPE_ENTRIES:
        raise UserError(
            f"{where}: shape has {len(layers) + len(dropped)} entries, more than {MAX_SHAPE_ENTRIES}; {fix}"
        )
    for path in [*layers, *dropped]:
        if not isinstance(path, str) or not 0 < len(path) <= MAX_MODULE_PATH:
            raise UserError(
                f"{where}: shape path {shown(path)} is not a module path of 1-{MAX_MODULE_PATH} characters"
            )
    if len(set(dropped)) != len(dropped):
        raise UserError(f"{where}: shape 'dropped' names a block twice; {fix}")
    for path, sizes in layers.items():
        counts_ok = isinstance(sizes, list) and 0 < len(sizes) <= 3
        if not counts_ok or any(
            isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= MAX_SHAPE_CHANNELS for n in sizes
        ):
            raise UserError(
                f"{where}: shape layer {shown(path)} must be a list of 1-3 integers in "
                f"[1, {MAX_SHAPE_CHANNELS}], got {shown(sizes)}; {fix}"
            )
        if len(sizes) == 3 and (sizes[0] % sizes[2] or sizes[1] % sizes[2]):
            raise UserError(
                f"{where}: shape layer {shown(path)} has groups {sizes[2]}, which does not divide its "
                f"{sizes[0]} input and {sizes[1]} output channels; {fix}"
            )


def check_data(data: Any, where: str, num_classes: int | None = None) -> None:
    """Check whichever preprocessing entries (input_shape, mean, std, classes) `data` has."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: metadata 'data' is not an object; {_FIX}")
    channels = check_shape(data["input_shape"], where)[0] if "input_shape" in data else None
    if "mean" in data:
        _numbers(data["mean"], "mean", channels, where, positive=False)
    if "std" in data:
        _numbers(data["std"], "std", channels, where, positive=True)
    if "classes" in data:
        check_classes(data["classes"], where, num_classes)


def preprocessing(data: Any, where: str, num_classes: int | None = None) -> Preprocessing:
    """The checked input_shape, mean, std and classes of `data`, all four required."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: metadata 'data' is not an object; {_FIX}")
    missing = [k for k in ("input_shape", "mean", "std", "classes") if k not in data]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)} metadata; export it with `kdforge deploy`")
    shape = check_shape(data["input_shape"], where)
    return Preprocessing(
        shape,
        _numbers(data["mean"], "mean", shape[0], where, positive=False),
        _numbers(data["std"], "std", shape[0], where, positive=True),
        check_classes(data["classes"], where, num_classes),
    )


def check_shape(shape: Any, where: str) -> tuple[int, int, int]:
    """A (C, H, W) input shape of positive ints within MAX_CHANNELS and MAX_SIDE."""
    if not isinstance(shape, list | tuple) or len(shape) != 3:
        raise UserError(f"{where}: input_shape must be [C, H, W], got {shown(shape)}; {_FIX}")
    channels = _int(shape[0], 1, MAX_CHANNELS, "input_shape C", where)
    height = _int(shape[1], 1, MAX_SIDE, "input_shape H", where)
    width = _int(shape[2], 1, MAX_SIDE, "input_shape W", where)
    return channels, height, width


def _numbers(values: Any, what: str, count: int | None, where: str, *, positive: bool) -> list[float]:
    """One (for every channel) or `count` (any when None) finite numbers, each > 0 when `positive`."""
    ok = (
        isinstance(values, list)
        and 0 < len(values) <= MAX_CHANNELS
        and len(values) in (1, count or len(values))
    )
    ok = ok and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )
    if not ok or (positive and any(v <= 0 for v in values)):
        sign = "positive " if positive else ""
        size = f"1 or {count} " if count is not None else ""
        raise UserError(
            f"{where}: {what} must be a list of {size}finite {sign}numbers, got {shown(values)}; {_FIX}"
        )
    return [float(v) for v in values]


def check_classes(classes: Any, where: str, num_classes: int | None = None) -> list[str]:
    """A list of class names (strings of at most MAX_CLASS_NAME characters, or integers, as other tools
    write them), one per output, as strings."""
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CLASSES:
        raise UserError(
            f"{where}: classes must be a list of 1-{MAX_CLASSES} names, got {shown(classes)}; {_FIX}"
        )
    bad = [
        c
        for c in classes
        if isinstance(c, bool) or not isinstance(c, str | int) or len(str(c)) > MAX_CLASS_NAME
    ]
    if bad:
        raise UserError(
            f"{where}: every class name must be a string of at most {MAX_CLASS_NAME} characters, got "
            f"{shown(bad[0])}; {_FIX}"
        )
    if num_classes is not None and len(classes) != num_classes:
        raise UserError(f"{where}: {len(classes)} class names for a {num_classes}-class network; {_FIX}")
    return [str(c) for c in classes]
