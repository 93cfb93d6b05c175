"""Recipes: YAML validated into typed dataclasses, with `--set a.b=value` overrides.

A typo'd key fails with its full path and the nearest valid name; a wrong type names the expected
type; a value out of range names its limits. Limits live on the fields themselves
(`Annotated[float, Gt(0)]`, annotated-types), so each option is declared once, with one message style,
for recipes, the command line and the methods' own option dataclasses alike. Every failure is a
`UserError` (one line, exit 2 in the CLI).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from annotated_types import Ge, Gt, Interval, Le, Lt, MaxLen, MinLen
from kdforge.compress.errors import UserError
from kdforge.compress.registry import METHOD_OPTIONS, STRATEGY_OPTIONS, TEACHER_STRATEGIES, method_class

# Reusable field limits (one declaration each; the message is built from the limit).
Positive = Annotated[int, Gt(0)]
NonNegative = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, lt=1)]  # [0, 1)
Share = Annotated[float, Interval(gt=0, le=1)]  # (0, 1]

# A run name becomes a folder name (runs/<name>): one path component of safe characters.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
MAX_RECIPE_BYTES = 64 * 1024  # recipes are a few KB; this bounds the YAML parser's time
MAX_YAML_NODES = 100_000  # values after expanding aliases: a billion-laughs file is refused before it grows
MAX_YAML_DEPTH = 64  # nesting levels; a recipe needs about 5
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple = 3, 8, 6, 8
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 60, 60, 40


def shown(value: Any, limit: int = 100) -> str:
    """A bounded repr for error messages: a user's value may be any size (or a shared structure)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class DataConfig:
    """Which data set, where it lives and how it is split, augmented and batched."""

    name: Literal["digits", "cifar10", "cifar100", "imagefolder"] = "digits"
    root: str | None = None  # directory for cifar10/cifar100/imagefolder; digits is embedded
    image_size: Positive = 32  # digits and imagefolder are resized to this; CIFAR is always 32
    batch_size: Positive = 64
    eval_batch_size: Positive = 256
    workers: NonNegative = 0
    val_fraction: Fraction = 0.1  # held out of the training split (stratified) for model selection
    train_fraction: Share = 1.0  # keep this stratified share of the training split
    # the teacher's share of the training split (default: train_fraction). A teacher trained on more
    # labelled data than the student gets is the common real case: a big model exists, labels are scarce.
    teacher_train_fraction: Share | None = None
    augment: bool = True
    split_seed: int = 0  # fixes the train/val/test split independently of the training seed


def teacher_data(data: DataConfig) -> DataConfig:
    """The data section a teacher trains on: the recipe's, with `teacher_train_fraction` when it is set."""
    if data.teacher_train_fraction is None:
        return data
    return dataclasses.replace(data, train_fraction=data.teacher_train_fraction, teacher_train_fraction=None)


@dataclass
class TrainConfig:
    """Optimizer, schedule and numerics of one training run."""

    epochs: Positive = 30
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: PositiveFloat = 0.05
    momentum: Fraction = 0.9
    nesterov: bool = False
    weight_decay: NonNegativeFloat = 5e-4
    schedule: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    lr_decay: Share = 0.1  # multiply the lr by this at each milestone
    warmup_epochs: NonNegative = 0  # linear warm-up from lr/100, counted in epochs (fractional steps)
    amp: Literal["off", "bf16", "fp16"] = "off"  # mixed precision on CUDA only
    channels_last: bool = False
    grad_clip: PositiveFloat | None = None  # max global L2 norm of the gradients
    deterministic: bool = False  # deterministic kernels (bitwise repeatable on CPU)
    checkpoint_every: Positive = 1  # epochs between `last` checkpoints
    checkpoint_every_steps: NonNegative = 0  # also a `last` checkpoint every N steps inside an epoch (0: off)
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop, or skip that update (single process)
    nonfinite_limit: NonNegative = 10  # skip: at most this many skipped updates in a run, then stop


WeightsFormat = Literal["auto", "crd", "mdistiller-student", "mdistiller-teacher"]
WEIGHTS_FORMATS: tuple[str, ...] = typing.get_args(WeightsFormat)


@dataclass
class NetworkConfig:
    """A network to build from the model registry, optionally from weights a user already has.

    `options` are the builder's keyword arguments, plus `weights: DEFAULT` (tv:) / `pretrained: true`
    (timm:) to start from those libraries' cached pretrained weights. `init` is the starting weights of a
    network that trains (any format of kdforge.compress.weights; a head for another class count is
    re-initialised). `checkpoint` is the teacher's alone: a trained teacher used as is (`kdforge compress`,
    `kdforge run`); `student.checkpoint` is the old name of `student.init` (RENAMED_KEYS)."""

    arch: str = "resnet8"
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the builder
    checkpoint: str | None = None  # teacher: a trained teacher used as is (student: old name of init)
    init: str | None = None  # starting weights for training: a checkpoint, state dict or safetensors file
    # per-layer widths and dropped blocks of a pruned network (compress/shape.py); null: the arch's own
    shape: dict[str, Any] | None = None
    # what `init`/`checkpoint` holds (compress/weights/reference_format.py): one network, kdforge's or the
    # CIFAR reference code's (auto, crd), or one network of an mdistiller run file
    weights_format: WeightsFormat = "auto"


@dataclass
class MethodConfig:
    """The distillation method and its options (validated by the method itself)."""

    name: str = "kd"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherStrategyConfig:
    """How `kdforge teacher` trains: 'standard' (CE) or 'generous' (from a standard teacher's checkpoint)."""

    name: str = "standard"  # 'standard', or a registered teacher strategy ('generous')
    standard_checkpoint: str | None = None  # generous: the stage-1 teacher (same arch and classes)
    options: dict[str, Any] = field(default_factory=dict)  # the strategy's options (k, nckd_weight, ...)


Precision = Literal["fp32", "fp16", "int8", "int8-u8"]  # int8: TensorRT's symmetric Q/DQ; int8-u8: ORT CPU's
CalibrationMethod = Literal["minmax", "entropy", "percentile"]


@dataclass
class DeployConfig:
    """How to deploy a checkpoint: the recipe's `deploy:` section and `kdforge deploy`'s flags alike.

    The one declaration of each option: default, limits, and in `metadata` its help and its flag (none:
    recipe only). kdforge/cli.py builds the flags from it and export/deploy.py consumes it."""

    enabled: bool = field(
        default=True, metadata={"help": "deploy the teacher and the distilled student after training"}
    )
    precisions: Annotated[list[Precision], MinLen(1)] = field(
        default_factory=lambda: ["fp32", "fp16", "int8", "int8-u8"],
        metadata={
            "flag": "--precision",
            "help": "comma list of fp32, fp16, int8 (symmetric Q/DQ, TensorRT's form), int8-u8 "
            "(ONNX Runtime CPU's)",
        },
    )
    backends: Annotated[list[str], MinLen(1)] | None = field(
        default=None,
        metadata={
            "flag": "--backends",
            "help": "comma list of backends to time; not given: every one usable here (see kdforge doctor)",
        },
    )
    batches: Annotated[list[Positive], MinLen(1)] = field(
        default_factory=lambda: [1, 64], metadata={"flag": "--batches", "help": "comma list of batch sizes"}
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto",
        metadata={
            "flag": "--device",
            "help": "where torch, torch-compile and aoti run (auto: CUDA when present)",
        },
    )
    cuda_graph: bool = field(
        default=False, metadata={"flag": "--cuda-graph", "help": "tensorrt: replay a captured CUDA graph"}
    )
    native: Literal["auto", "always", "never"] = field(
        default="auto",
        metadata={
            "flag": "--native",
            "help": "also time with kdforge-runner (auto: when `kdforge build-native` has built it)",
        },
    )
    min_duration_s: PositiveFloat = field(
        default=1.0,
        metadata={"flag": "--min-duration", "help": "seconds of timing per variant and batch size"},
    )
    calibration_images: Positive = field(
        default=256,
        metadata={"flag": "--calibration", "help": "int8: number of training images to calibrate on"},
    )
    calibration_method: CalibrationMethod = field(
        default="minmax",
        metadata={"flag": "--calibration-method", "help": "int8: how activation ranges are set"},
    )


BudgetSource = Literal["zoo", "pruned", "user"]
Percentile = Literal["p50", "p90", "p99"]
PruneRatio = Annotated[float, Interval(gt=0, lt=1)]


@dataclass
class BudgetConfig:
    """`kdforge run --budget`: choose the student by its latency measured on a named target, then distill,
    deploy and report it (docs/budget.md). `latency: null` (the default) keeps the recipe's student.arch."""

    latency: str | float | None = field(
        default=None,
        metadata={
            "flag": "--budget",
            "help": "latency budget: a time (0.4ms, 400us), a share of the teacher's latency measured in "
            "the same run (25%%), or 'student' (the recipe's student.arch, measured in the same run)",
        },
    )
    target: str = field(
        default="onnxruntime:int8-u8",
        metadata={
            "flag": "--target",
            "help": "BACKEND:PRECISION the budget holds on, as kdforge deploy names them "
            "(onnxruntime:int8-u8, tensorrt:fp16, aoti:fp32, ...)",
        },
    )
    percentile: Percentile = field(
        default="p50", metadata={"flag": "--percentile", "help": "the latency percentile the budget bounds"}
    )
    batch: Positive = field(default=1, metadata={"flag": "--batch", "help": "batch size on the target"})
    threads: Positive | None = field(
        default=None,
        metadata={"flag": "--threads", "help": "intra-op threads on the target (default: the backend's)"},
    )
    sources: Annotated[list[BudgetSource], MinLen(1)] = field(
        default_factory=lambda: ["zoo", "pruned", "user"]
    )  # where candidates come from: zoo sweeps, the teacher pruned (Torch-Pruning), `candidates`
    candidates: Annotated[list[str], MaxLen(64)] = field(default_factory=list)  # the user's own archs
    families: Annotated[list[str], MaxLen(16)] | None = None  # zoo families; null: chosen from the teacher
    prune_ratios: Annotated[list[PruneRatio], MinLen(1), MaxLen(32)] = field(
        default_factory=lambda: [0.25, 0.375, 0.5, 0.625, 0.75, 0.875]
    )  # shares of the teacher's channels removed, each a width-pruned candidate
    prune_depth: bool = True  # also drop half the teacher's residual blocks (where it has droppable ones)
    divisor: Annotated[int, Interval(ge=1, le=256)] | None = None  # pruned widths' multiple; null: per target
    max_timed: Annotated[int, Interval(ge=2, le=512)] = 48  # candidates timed at most (spread over MACs)
    min_duration_s: PositiveFloat = 0.5  # seconds of timing per candidate and round
    screen_epochs: Positive = 5  # the short distillation every fitting candidate gets (validation split)
    max_screened: Positive = 12  # fitting candidates screened at most (the fastest-to-slowest spread)
    top_k: Positive = 3  # screened candidates given the longer distillation
    long_epochs: Positive = 15  # the longer distillation of the top K
    cache: bool = True  # reuse timings ($KDFORGE_HOME/measurements.jsonl) of identical files and targets


@dataclass
class RunConfig:
    """One recipe: data, teacher, student, method and how each network trains."""

    name: str = "run"
    seed: NonNegative = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: NetworkConfig = field(default_factory=lambda: NetworkConfig(arch="resnet32x4"))
    teacher_train: TrainConfig = field(default_factory=TrainConfig)
    teacher_strategy: TeacherStrategyConfig = field(default_factory=TeacherStrategyConfig)
    student: NetworkConfig = field(default_factory=lambda: NetworkConfig(arch="resnet8x4"))
    student_train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)


# --------------------------------------------------------------------------------------------------
# Validation: dict -> dataclass, with errors that name the path and the nearest valid key.
# --------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


class RecipeWarning(UserWarning):
    """A recipe value kdforge adjusted (the CLI prints it as one `kdforge: warning:` line)."""


class LimitError(UserError):
    """A value of the right type outside the limits its field declares."""


def _bound(limit: Any) -> tuple[str, Any, str, Any]:
    """(lower bracket, lower bound, upper bracket, upper bound) of one annotated-types limit."""
    lower = ("(", limit.gt) if getattr(limit, "gt", None) is not None else ("[", getattr(limit, "ge", None))
    upper = (")", limit.lt) if getattr(limit, "lt", None) is not None else ("]", getattr(limit, "le", None))
    return (*lower, *upper)


def check_limits(value: Any, limits: tuple[Any, ...], path: str) -> None:
    """Raise a LimitError naming the field and its bounds when `value` breaks one of `limits`."""
    for limit in limits:
        if isinstance(limit, MinLen):
            if len(value) < limit.min_length:
                raise LimitError(f"{path}: give at least {limit.min_length} value(s), got {shown(value)}")
            continue
        if isinstance(limit, MaxLen):
            if len(value) > limit.max_length:
                raise LimitError(f"{path}: give at most {limit.max_length} value(s), got {len(value)}")
            continue
        if not isinstance(limit, Gt | Ge | Lt | Le | Interval):
            continue
        low_bracket, low, high_bracket, high = _bound(limit)
        ok = (low is None or (value > low if low_bracket == "(" else value >= low)) and (
            high is None or (value < high if high_bracket == ")" else value <= high)
        )
        if ok:
            continue
        if high is None:
            raise LimitError(
                f"{path}: must be {'>' if low_bracket == '(' else '>='} {low}, got {shown(value)}"
            )
        if low is None:
            raise LimitError(
                f"{path}: must be {'<' if high_bracket == ')' else '<='} {high}, got {shown(value)}"
            )
        raise LimitError(f"{path}: must be in {low_bracket}{low}, {high}{high_bracket}, got {shown(value)}")


YAML_BOOLEAN_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}
# Words users write for a choice under another name; spelling similarity would suggest the wrong one
# ('gpu' is closest to 'cpu').
CHOICE_SYNONYMS = {"gpu": "cuda", "nvidia": "cuda"}


def _yaml_boolean_word(value: bool, allowed: tuple[Any, ...]) -> str | None:
    """The word a YAML 1.1 boolean was written as, when exactly one such word is an allowed value."""
    words = [word for word in YAML_BOOLEAN_WORDS[value] if word in allowed]
    return words[0] if len(words) == 1 else None


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp` and return it in that type."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        base, *limits = typing.get_args(tp)
        coerced = _coerce(value, base, path)
        if coerced is not None:
            check_limits(coerced, tuple(limits), path)
        return coerced
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{path}: expected a mapping, got {shown(value)}")
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except LimitError:
                raise
            except UserError:
                continue
        raise UserError(f"{path}: expected {_type_name(tp)}, got {shown(value)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        if isinstance(value, bool) and all(isinstance(a, str) for a in allowed):
            word = _yaml_boolean_word(value, allowed)
            if word is not None:  # YAML 1.1 read `off`/`on`/`yes`/`no` as a boolean; the user meant the word
                return word
            raise UserError(
                f"{path}: YAML read an unquoted {'/'.join(YAML_BOOLEAN_WORDS[value][:3])} as the boolean "
                f"{str(value).lower()}; write one of {', '.join(repr(a) for a in allowed)} in quotes, "
                f'e.g. {path.rsplit(".", 1)[-1]}: "{allowed[0]}"'
            )
        choices = [str(a) for a in allowed]
        word = value[:100] if isinstance(value, str) else shown(value)
        synonym = CHOICE_SYNONYMS.get(word.lower())
        near = [synonym] if synonym in choices else difflib.get_close_matches(word, choices, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UserError(f"{path}: {shown(value)} is not {_type_name(tp)}{hint}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise UserError(f"{path}: expected {_type_name(tp)}, got {shown(value)}")
        return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise UserError(f"{path}: expected a mapping with string keys, got {shown(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise UserError(f"{path}: expected a finite number, got {shown(value)}")
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `5e-4` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if math.isfinite(number):
                    return number
    elif tp is str and isinstance(value, str):
        return value
    raise UserError(f"{path}: expected {_type_name(tp)}, got {shown(value)}")


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from `data`, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(names)}"
            raise UserError(f"unknown key {shown(where)}{hint}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"--set {shown(item)}: expected KEY=VALUE, e.g. --set student_train.epochs=5")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {shown(item)}: the key must be dotted names, e.g. data.batch_size")
    try:
        value = parse_yaml(raw, f"--set {shown(key)}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


@dataclass(frozen=True)
class Setting:
    """A recipe value given on the command line: `--set KEY=VALUE`, or a flag such as `--init PATH`."""

    key: str  # the dotted recipe key it sets, e.g. teacher.init
    value: Any
    source: str  # how the user wrote it, for messages: "--set 'teacher.init=a.pth'", "--init a.pth"
    flag: bool = False  # a flag (not --set): it says so when it replaces the recipe's value of its key


def override_setting(item: str) -> Setting:
    """The Setting of one `--set KEY=VALUE` (the value parsed as YAML)."""
    parts, value = _parse_override(item)
    return Setting(".".join(parts), value, f"--set {shown(item)}")


def flag_setting(flag: str, key: str, value: Any) -> Setting:
    """The Setting of a command-line flag that stands for a recipe key (`--init PATH`: teacher.init)."""
    text = value if isinstance(value, str) else shown(value)
    return Setting(key, value, f"{flag} {text if len(text) <= 100 else text[:97] + '...'}", flag=True)


def _put(tree: dict[str, Any], setting: Setting) -> None:
    """Set `setting.key` in a raw recipe tree, making the sections it names when they are missing."""
    *sections, leaf = setting.key.split(".")
    node = tree
    for part in sections:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{setting.source}: {shown(part)} is not a section")
        node = child
    node[leaf] = setting.value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a raw recipe tree."""
    for item in overrides:
        _put(tree, override_setting(item))
    return tree


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def check_yaml_size(root: yaml.Node, what: str) -> None:
    """Refuse a YAML graph that expands (aliases followed) past MAX_YAML_NODES values or MAX_YAML_DEPTH
    levels, or that refers to itself: aliases share nodes, so a 400-byte file can stand for 10^9 values."""
    sizes: dict[int, int] = {}  # id(node) -> its expanded size, each node counted once
    open_nodes: set[int] = set()  # the nodes on the current path (a cycle returns to one of them)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                raise UserError(
                    f"{what}: its aliases (*name) expand to more than {MAX_YAML_NODES:,} values; "
                    "write the values out or use fewer aliases"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise UserError(f"{what}: an alias (*name) refers to a value that contains it; remove the loop")
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"{what}: nested more than {MAX_YAML_DEPTH} levels deep; flatten it")
        open_nodes.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node))


def parse_yaml(text: str, what: str) -> Any:
    """YAML text to plain values (safe tags only) after `check_yaml_size`; what recipes and --set values
    are read with. A malformed text raises yaml.YAMLError; an oversized one a one-line UserError."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_yaml_size(node, what)
        return loader.construct_document(node)
    except RecursionError:
        raise UserError(f"{what}: nested too deeply to read; flatten it") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into one line that names the file."""
    path = Path(path)
    name = shown(str(path))
    if not path.is_file():
        raise UserError(f"recipe {name} not found; pass the path of a YAML file, e.g. recipes/digits.yaml")
    with path.open("rb") as handle:
        data = handle.read(MAX_RECIPE_BYTES + 1)
    if len(data) > MAX_RECIPE_BYTES:
        raise UserError(
            f"recipe {name} is larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a few KB of YAML"
        )
    try:
        tree = parse_yaml(data.decode("utf-8"), f"recipe {name}")
    except UnicodeDecodeError:
        raise UserError(f"recipe {name} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(exc, "problem", None) or "invalid YAML")[:120]
        raise UserError(f"recipe {name}: {problem}{where}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise UserError(f"recipe {name}: the top level must be a mapping of sections")
    return tree


# --------------------------------------------------------------------------------------------------
# Loading: the recipe file, then the command line over it, then check() of the whole, then normalized().
# --------------------------------------------------------------------------------------------------

# Recipe keys that were renamed: old key -> new key. The old one keeps working, with one warning line.
RENAMED_KEYS = {"student.checkpoint": "student.init"}  # `checkpoint` is the teacher's: one used as is


@dataclass(frozen=True)
class OneOf:
    """Recipe keys of which at most one may be set (a two-field rule of `check`): they give the same thing."""

    keys: tuple[str, ...]
    gives: str  # what each of them gives, for "A and B both give <gives>"


ONE_OF = (
    OneOf(
        ("teacher.init", "teacher.options.weights", "teacher.options.pretrained"),
        "the teacher's starting weights",
    ),
    OneOf(
        ("student.checkpoint", "student.init", "student.options.weights", "student.options.pretrained"),
        "the student's starting weights",
    ),
    OneOf(
        ("teacher.checkpoint", "teacher.init"),
        "the teacher (checkpoint: a trained teacher used as is; init: starting weights to train one)",
    ),
)


def _is_set(value: Any) -> bool:
    """Whether a value gives something: null, false and "" do not (`pretrained: false`, `init: null`)."""
    return value is not None and value is not False and value != ""


def _get(node: Any, key: str) -> Any:
    """The value at dotted `key` in a raw recipe tree or a config dataclass; None where it is missing."""
    for part in key.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            node = getattr(node, part, None)
        else:
            return None
    return node


def _drop(tree: dict[str, Any], key: str) -> None:
    """Remove dotted `key` from a raw recipe tree (nothing when it is not there)."""
    *sections, leaf = key.split(".")
    parent = _get(tree, ".".join(sections)) if sections else tree
    if isinstance(parent, dict):
        parent.pop(leaf, None)


def _given_by(settings: list[Setting], key: str, flags: bool) -> Setting | None:
    """The last --set (flags=False) or flag (flags=True) that sets `key` (itself or a section above it)."""
    last = None
    for setting in settings:
        if setting.flag != flags or not (key == setting.key or key.startswith(setting.key + ".")):
            continue
        inner = setting.value if key == setting.key else _get(setting.value, key[len(setting.key) + 1 :])
        last = setting if _is_set(inner) else None
    return last


def _command_line_wins(tree: dict[str, Any], settings: list[Setting]) -> None:
    """The command line over the recipe file: for each ONE_OF rule (`_one_source`), and for a flag that
    replaces the recipe's value of its own key, which says so (a --set doing that is what --set is for)."""
    for rule in ONE_OF:
        _one_source(tree, settings, rule)
    for setting in settings:
        old = _get(tree, setting.key)
        if setting.flag and _is_set(old) and old != setting.value:
            _replaced(setting, setting.key, old)


def _one_source(tree: dict[str, Any], settings: list[Setting], rule: OneOf) -> None:
    """Two keys of `rule` on the command line (--set or flags, or one key by both) are a UserError; one
    replaces the recipe file's others (dropped from `tree`), with one warning line each."""
    given = [
        (key, setting)
        for key in rule.keys
        for setting in (_given_by(settings, key, False), _given_by(settings, key, True))
        if setting is not None
    ]
    if len(given) > 1:
        (first, one), (second, other) = given[:2]
        what = (
            f"{first} is given twice" if first == second else f"{first} and {second} both give {rule.gives}"
        )
        raise UserError(f"{what} on the command line ({one.source}, {other.source}); keep one")
    if not given:
        return
    touched = {key for key in rule.keys for s in settings if key == s.key or key.startswith(s.key + ".")}
    for key in rule.keys:
        if key not in touched and _is_set(_get(tree, key)):
            _replaced(given[0][1], key, _get(tree, key))
            _drop(tree, key)


def _replaced(setting: Setting, key: str, old: Any) -> None:
    warnings.warn(f"{setting.source} replaces the recipe's {key}: {shown(old)}", RecipeWarning, stacklevel=3)


def _renamed_keys(tree: dict[str, Any]) -> None:
    """Move each old key of RENAMED_KEYS to its new name, with one warning line; both set is left to
    `check` (ONE_OF names the pair)."""
    for old, new in RENAMED_KEYS.items():
        value = _get(tree, old)
        if _is_set(value) and _is_set(_get(tree, new)):
            continue
        _drop(tree, old)  # a null old key (a written config.yaml has student.checkpoint: null) goes silently
        if _is_set(value):
            _put(tree, Setting(new, value, old))
            warnings.warn(
                f"{old} is the old name of {new}; write {new} (the old name still works for now)",
                RecipeWarning,
                stacklevel=3,
            )


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | None = None,
    method: str | None = None,
    flags: list[Setting] | None = None,
) -> RunConfig:
    """Read a recipe file (or the defaults when `path` is None), apply the command line, check the whole
    recipe (`check`: before any data is read or network built) and return it `normalized`.

    `method` (the CLI's --method) replaces the recipe's method, and its options when it names another
    one; `--set method.options.KEY=VALUE` overrides apply after it. `overrides` (--set) and `flags` (e.g.
    --init, `flag_setting`) are the command line: it wins over the file (`_command_line_wins`).
    """
    tree = read_yaml(path) if path is not None else {}
    section = tree.get("method")
    if method is not None and not (isinstance(section, dict) and section.get("name") == method):
        tree["method"] = {"name": method}
    settings = [*(override_setting(item) for item in overrides or []), *(flags or [])]
    _command_line_wins(tree, settings)
    for setting in settings:
        _put(tree, setting)
    _renamed_keys(tree)
    config = from_dict(RunConfig, tree)
    check(config)
    return normalized(config)


def check(config: RunConfig) -> None:
    """Every check that involves more than one field, and the method's and teacher strategy's own options
    (single-field limits live on the fields). A pure check: it changes nothing (see `normalized`)."""
    if not RUN_NAME.fullmatch(config.name):
        raise UserError(
            f"name: {shown(config.name)} is not a run name (it names the folder runs/<name>); use letters, "
            "digits, '.', '_', '+' and '-', starting with a letter or digit, e.g. name: digits_kd"
        )
    data = config.data
    if data.name != "digits" and data.root is None:
        raise UserError(f"data.root: the {data.name} data set needs a local directory (data.root=PATH)")
    for rule in ONE_OF:
        _check_one_of(config, rule)
    for section in ("teacher_train", "student_train"):
        train: TrainConfig = getattr(config, section)
        if any(m <= 0 for m in train.milestones) or train.milestones != sorted(train.milestones):
            raise UserError(
                f"{section}.milestones: must be increasing positive epochs, got {train.milestones}"
            )
    _options_owner(config.method.name).validate_options(config.method.options, "method.options")
    if config.budget.latency is not None:
        from kdforge.compress.latency_budget import parse_budget

        parse_budget(config.budget.latency)
        if config.budget.top_k > config.budget.max_screened:
            raise UserError(
                f"budget.top_k {config.budget.top_k} is more than budget.max_screened "
                f"{config.budget.max_screened}; lower top_k or raise max_screened"
            )
    strategy = config.teacher_strategy
    if strategy.name != "standard":
        owner = _options_owner(strategy.name, teacher=True)
        owner.validate_options(strategy.options, "teacher_strategy.options")


def _options_owner(name: str, teacher: bool = False) -> Any:
    """What validates a method's options: its torch-free entry (compress/method_options.py), so a recipe
    is checked before torch loads; else (a method in a file of its own, an unknown name) its class."""
    table = STRATEGY_OPTIONS if teacher else METHOD_OPTIONS
    if name in table:
        return table[name]
    if teacher:
        return method_class(name, TEACHER_STRATEGIES, "teacher_strategy.name")
    return method_class(name)


def _check_one_of(config: RunConfig, rule: OneOf) -> None:
    """At most one key of `rule` set; the message suggests unsetting an old name (RENAMED_KEYS) first."""
    given = [key for key in rule.keys if _is_set(_get(config, key))]
    if len(given) < 2:
        return
    drop = next((key for key in given if key in RENAMED_KEYS), given[1])
    raise UserError(f"{given[0]} and {given[1]} both give {rule.gives}; keep one (e.g. --set {drop}=null)")


def normalized(config: RunConfig) -> RunConfig:
    """The checked recipe as it runs, a copy: warm-ups clamped to their run (a short test run of a recipe
    is not refused) and old option names under their new ones, each change one RecipeWarning line."""
    changes: dict[str, Any] = {
        section: _clamped_warmup(getattr(config, section), section)
        for section in ("teacher_train", "student_train")
    }
    method = config.method
    changes["method"] = dataclasses.replace(
        method, options=_current_names(method.options, _options_owner(method.name), "method.options")
    )
    strategy = config.teacher_strategy
    if strategy.name != "standard":
        owner = _options_owner(strategy.name, teacher=True)
        options = _current_names(strategy.options, owner, "teacher_strategy.options")
        changes["teacher_strategy"] = dataclasses.replace(strategy, options=options)
    return dataclasses.replace(config, **changes)


def _clamped_warmup(train: TrainConfig, section: str) -> TrainConfig:
    """`train` with warmup_epochs at most its epochs (a warning when it was longer)."""
    if train.warmup_epochs <= train.epochs:
        return train
    warnings.warn(
        f"{section}.warmup_epochs {train.warmup_epochs} is longer than the run's {train.epochs} "
        f"epoch(s): warming up over all {train.epochs}",
        RecipeWarning,
        stacklevel=3,
    )
    return dataclasses.replace(train, warmup_epochs=train.epochs)


def _current_names(options: dict[str, Any], cls: Any, path: str) -> dict[str, Any]:
    """A method's raw options with its renamed ones (`renamed_options`) under their new names, one warning
    line each."""
    current, renamed = renamed_options(options, getattr(cls, "renamed_options", {}), path)
    for old, new in renamed:
        warnings.warn(
            f"{path}.{old} is the old name of {path}.{new}; write {new} (the old name still works for now)",
            RecipeWarning,
            stacklevel=3,
        )
    return current


def renamed_options(
    raw: dict[str, Any], renames: dict[str, str], path: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """`raw` with each old option name of `renames` (old -> new) under its new name, and the (old, new)
    pairs it moved; an old and a new name together is a UserError."""
    current, moved = dict(raw), []
    for old, new in renames.items():
        if old not in current:
            continue
        if new in current:
            raise UserError(f"{path}.{old} is the old name of {path}.{new} and both are set; keep {new}")
        current[new] = current.pop(old)
        moved.append((old, new))
    return current, moved


def options_from_dict(cls: type, raw: dict[str, Any], path: str, renames: dict[str, str]) -> Any:
    """`from_dict` of a method's options dataclass, accepting the old names of `renames`; a message about
    a renamed option names it as the user wrote it."""
    current, moved = renamed_options(raw, renames, path)
    try:
        return from_dict(cls, current, path)
    except UserError as exc:
        message = str(exc)
        for old, new in moved:
            message = message.replace(f"{path}.{new}", f"{path}.{old}")
        if message == str(exc):
            raise
        raise type(exc)(message) from None
