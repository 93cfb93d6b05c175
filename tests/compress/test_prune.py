"""Structured pruning (width and depth) of zoo and torchvision networks, and pruned networks as first-class
kdforge networks: every channel count a multiple of the divisor, deployable (ONNX parity, TensorRT-ready),
their shape recorded and rebuilt from the registry without the teacher, hostile shapes refused."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from kdforge.compress.config import NetworkConfig, RunConfig
from kdforge.compress.data import DataBundle
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.compress.networks import network_shape, start_network, weights_network
from kdforge.compress.proxy import cost
from kdforge.compress.prune.calibrate import recalibrate_bn
from kdforge.compress.prune.depth import Dropped, droppable_blocks, prune_depth
from kdforge.compress.prune.width import prune_width
from kdforge.compress.shape import apply_shape, shape_of
from kdforge.compress.train.checkpoint import load_model, save_checkpoint
from kdforge.compress.train.meta import network_meta
from kdforge.export.lint import lint_onnx
from kdforge.export.lint.report import is_ready
from kdforge.export.onnx import check_parity, to_onnx
from torch import nn

from tests.export.conftest import randomise_batchnorm

INPUT = (3, 32, 32)
CLASSES = 10


@dataclass
class Pruned:
    arch: str
    divisor: int
    original: nn.Module
    pruned: nn.Module


@pytest.fixture(
    scope="module",
    params=[("resnet56", 8), ("mobilenetv2", 8), ("tv:resnet18", 8), ("tv:resnet18", 32)],
    ids=lambda p: f"{p[0]}-d{p[1]}",
)
def width(request: pytest.FixtureRequest) -> Pruned:
    """An architecture with trained-like BN (random statistics and scales), pruned to half its width."""
    arch, divisor = request.param
    torch.manual_seed(0)
    original = randomise_batchnorm(build(arch, CLASSES)).eval()
    return Pruned(arch, divisor, original, prune_width(original, INPUT, 0.5, divisor, arch=arch))


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits in float64 (on a float64 copy, the model untouched)."""
    with torch.no_grad():
        return copy.deepcopy(model).double().eval()(x.double())


def test_every_channel_count_is_a_multiple_of_the_divisor(width: Pruned) -> None:
    d = width.divisor
    for path, module in width.pruned.named_modules():
        if isinstance(module, nn.Conv2d):
            assert module.out_channels % d == 0, (path, module)
            assert module.in_channels == INPUT[0] or module.in_channels % d == 0, (path, module)
            assert module.groups in (1, module.in_channels), (path, module)  # depthwise stays depthwise
        elif isinstance(module, nn.BatchNorm2d):
            assert module.num_features % d == 0, (path, module)
        elif isinstance(module, nn.Linear):
            assert module.in_features % d == 0 and module.out_features == CLASSES, (path, module)
    assert shape_of(width.original) == shape_of(build(width.arch, CLASSES))  # the input is untouched
    if width.arch == "mobilenetv2":  # widths round_to alone leaves as they are (12 with round_to=8)
        assert 12 in {m.out_channels for m in width.original.modules() if isinstance(m, nn.Conv2d)}


def test_output_shape_is_kept_and_macs_fall(width: Pruned) -> None:
    assert width.pruned(torch.randn(2, *INPUT)).shape == (2, CLASSES)
    params, macs = cost(width.original, INPUT)
    pruned_params, pruned_macs = cost(width.pruned, INPUT)
    assert pruned_macs < 0.5 * macs and pruned_params < 0.5 * params


def test_shape_rebuilds_the_pruned_network_from_the_registry(width: Pruned) -> None:
    shape = json.loads(json.dumps(shape_of(width.pruned)))  # what a checkpoint or recipe holds
    rebuilt = apply_shape(build(width.arch, CLASSES), shape, "test")
    rebuilt.load_state_dict(width.pruned.state_dict(), strict=True)
    fresh = set(droppable_blocks(build(width.arch, CLASSES)))
    assert set(droppable_blocks(width.pruned)) <= fresh  # later depth pruning fits a fresh one
    x = torch.randn(2, *INPUT)
    torch.testing.assert_close(_outputs(rebuilt, x), _outputs(width.pruned, x), rtol=0, atol=1e-9)


def test_pruned_network_exports_with_parity_and_is_tensorrt_ready(width: Pruned, tmp_path: Path) -> None:
    path = to_onnx(width.pruned, tmp_path / "pruned.onnx", (1, *INPUT))
    check_parity(width.pruned, path, torch.randn(8, *INPUT))  # UserError when outside tolerance
    problems = lint_onnx(path, target="tensorrt")
    assert is_ready(problems), problems


def test_a_frozen_teacher_prunes_like_a_trainable_one_even_without_gradients() -> None:
    torch.manual_seed(0)
    teacher = randomise_batchnorm(build("cnn_6_32", CLASSES))
    expected = shape_of(prune_width(teacher, INPUT, 0.5, 8))
    teacher.requires_grad_(False)  # as freeze_network leaves a teacher
    with torch.no_grad():  # the tracer needs autograd: prune_width turns it on for itself
        pruned = prune_width(teacher, INPUT, 0.5, 8)
    assert shape_of(pruned) == expected
    assert not any(p.requires_grad for p in pruned.parameters())


def test_droppable_blocks_of_each_family() -> None:
    assert droppable_blocks(build("tv:resnet18", CLASSES)) == [
        "layer1.0",
        "layer1.1",
        "layer2.1",
        "layer3.1",
        "layer4.1",
    ]
    assert droppable_blocks(build("cnn_6_32", CLASSES)) == ["stage0.3", "stage1.3", "stage2.3"]
    mobile = build("mobilenetv2", CLASSES)
    assert droppable_blocks(mobile) == [
        path for path, m in mobile.named_modules() if getattr(m, "use_residual", False)
    ]
    assert len(droppable_blocks(build("resnet56", CLASSES))) == 25  # 27 blocks, 2 with a downsample


def test_depth_pruning_drops_the_weakest_blocks_and_round_trips() -> None:
    torch.manual_seed(0)
    original = randomise_batchnorm(build("resnet56", CLASSES), seed=3).eval()
    pruned, dropped = prune_depth(original, 0.5, INPUT)
    assert len(dropped) == 12  # 25 droppable, ceil(12.5) = 13 kept
    assert all(isinstance(pruned.get_submodule(p), Dropped) for p in dropped)
    assert not any(isinstance(m, Dropped) for m in original.modules())  # the input is untouched

    def gamma(path: str) -> float:
        return float(original.get_submodule(f"{path}.bn2").weight.detach().pow(2).mean().sqrt())

    kept = set(droppable_blocks(original)) - set(dropped)
    assert max(map(gamma, dropped)) <= min(map(gamma, kept))
    x = torch.randn(2, *INPUT)
    assert pruned(x).shape == (2, CLASSES)
    assert cost(pruned, INPUT)[1] < cost(original, INPUT)[1]
    shape = json.loads(json.dumps(shape_of(pruned)))
    assert shape["dropped"] == dropped
    rebuilt = apply_shape(build("resnet56", CLASSES), shape, "test")
    rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    torch.testing.assert_close(_outputs(rebuilt, x), _outputs(pruned, x), rtol=0, atol=1e-9)


def _data() -> DataBundle:
    classes = [str(i) for i in range(CLASSES)]
    return DataBundle([], [], [], CLASSES, classes, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), INPUT)


@pytest.fixture(scope="module")
def pruned_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A cnn_6_32 pruned in width and depth, saved as a kdforge checkpoint with its shape recorded."""
    torch.manual_seed(0)
    teacher = randomise_batchnorm(build("cnn_6_32", CLASSES)).eval()
    narrow = prune_width(teacher, INPUT, 0.5, 8, arch="cnn_6_32")
    pruned, dropped = prune_depth(narrow, 0.5, INPUT)
    assert dropped
    network = NetworkConfig(arch="cnn_6_32", shape=shape_of(pruned))
    meta = network_meta(network, _data(), "student", "ce", RunConfig())
    assert meta["model"]["shape"] == shape_of(pruned)
    path = save_checkpoint(tmp_path_factory.mktemp("pruned"), "best", pruned, meta)
    return pruned.eval(), path


def test_a_pruned_checkpoint_loads_without_the_teacher_and_deploys(
    pruned_checkpoint: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    pruned, path = pruned_checkpoint
    loaded, checkpoint = load_model(path)
    assert checkpoint.meta["model"]["shape"]["dropped"]
    x = torch.randn(4, *INPUT)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(pruned, x), rtol=0, atol=1e-6)
    onnx = to_onnx(loaded, tmp_path / "pruned.onnx", (1, *INPUT))  # a dropped triple is three identities
    check_parity(loaded, onnx, torch.randn(8, *INPUT))
    assert is_ready(lint_onnx(onnx, target="tensorrt"))


def test_init_from_a_pruned_checkpoint_adopts_its_shape(pruned_checkpoint: tuple[nn.Module, Path]) -> None:
    pruned, path = pruned_checkpoint
    network = NetworkConfig(arch="cnn_6_32", init=str(path))
    model, source = start_network(network, CLASSES, "student")
    assert source is not None and source.format == "kdforge"
    x = torch.randn(4, *INPUT)
    torch.testing.assert_close(_outputs(model, x), _outputs(pruned, x), rtol=0, atol=1e-6)
    assert network_shape(network, "student") == shape_of(pruned)  # so its own checkpoints record it
    meta = network_meta(network, _data(), "student", "kd", RunConfig())
    assert meta["model"]["shape"] == shape_of(pruned)
    evaluated = weights_network(path, NetworkConfig(arch="cnn_6_32"), CLASSES, "student")
    torch.testing.assert_close(_outputs(evaluated, x), _outputs(pruned, x), rtol=0, atol=1e-6)
    assert network_shape(NetworkConfig(arch="cnn_2_8", init=str(path))) is None  # another arch: not adopted


def test_recalibrated_bn_statistics_are_the_mean_of_their_inputs() -> None:
    torch.manual_seed(0)
    model = build("cnn_2_8", CLASSES).double()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.running_mean.zero_()
        norm.running_var.zero_()
    batches = [torch.randn(6, 3, 16, 16, dtype=torch.float64) * (i + 1) + i for i in range(5)]
    seen: dict[nn.Module, list[torch.Tensor]] = {norm: [] for norm in norms}
    hooks = [norm.register_forward_pre_hook(lambda m, args: seen[m].append(args[0])) for norm in norms]
    recalibrate_bn(model, iter(batches), max_batches=3)
    for hook in hooks:
        hook.remove()
    assert not model.training
    for norm in norms:
        assert len(seen[norm]) == 3 and norm.momentum == 0.1
        inputs = torch.cat(seen[norm])  # equal batch sizes: the mean of batch means is the mean
        expected = inputs.mean(dim=(0, 2, 3))
        torch.testing.assert_close(norm.running_mean, expected, rtol=0, atol=1e-12)
        variances = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in seen[norm]])
        torch.testing.assert_close(norm.running_var, variances.mean(0), rtol=0, atol=1e-12)


def test_cost_is_parameters_and_conv_linear_macs() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )
    conv1 = 8 * 10 * 10 * (3 * 3 * 3)  # outputs x kernel products
    conv2 = 16 * 5 * 5 * (8 // 2 * 3 * 3)  # grouped: each output sees in/groups channels
    linear = 16 * 5 + 5  # one add per output for the bias
    params = 8 * 3 * 9 + 2 * 8 + 16 * 4 * 9 + 16 * 5 + 5
    assert cost(model, (3, 10, 10)) == (params, conv1 + conv2 + linear)


def _base() -> dict[str, Any]:
    return shape_of(build("resnet8", CLASSES))


HOSTILE: list[tuple[Any, str]] = [
    ([["conv1", [3, 16, 1]]], "shape must be an object"),
    ({"layers": {}, "widths": {}}, "unknown key 'widths'"),
    ({"layers": [["conv1", [3, 16, 1]]]}, "'layers' must be an object"),
    ({"dropped": "layer1.0"}, "'dropped' a list"),
    ({"layers": {"layer9.0.conv1": [16, 16, 1]}}, "names no module"),
    ({"layers": {"layer1": [16]}}, "is a Sequential"),
    ({"layers": {"conv1": [3, 16]}}, "sizes are [in, out, groups]"),
    ({"layers": {"conv1": [3, 0, 1]}}, "integers in [1, 65536]"),
    ({"layers": {"bn1": [10**9]}}, "integers in [1, 65536]"),
    ({"layers": {"bn1": [True]}}, "integers in [1, 65536]"),
    ({"layers": {"bn1": ["16"]}}, "integers in [1, 65536]"),
    ({"layers": {"bn1": 16}}, "integers in [1, 65536]"),
    ({"layers": {"bn1": [16, 16, 16, 16]}}, "list of 1-3 integers"),
    ({"layers": {"conv1": [3, 16, 2]}}, "does not divide"),
    ({"layers": {f"x{i}": [1] for i in range(10_001)}}, "more than 10000"),
    ({"layers": {"x" * 600: [1]}}, "not a module path"),
    ({"dropped": [7]}, "not a module path"),
    ({"dropped": ["layer2.0"]}, "not a droppable block"),
    ({"dropped": ["layer1.0", "layer1.0"]}, "names a block twice"),
    ({"dropped": ["layer1.0"], "layers": {"layer1.0.conv1": [16, 16, 1]}}, "inside a dropped block"),
    ({"layers": {"fc": [64, 100]}}, "the classifier has 10 outputs"),
    ({"layers": {"layer3.0.conv1": [32, 65536, 1]}}, "wider than the architecture's own [32, 64]"),
]


@pytest.mark.parametrize(("shape", "message"), HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_shapes_are_refused_in_one_line(shape: Any, message: str) -> None:
    with pytest.raises(UserError) as refused:
        apply_shape(build("resnet8", CLASSES), shape, "student.shape")
    text = str(refused.value)
    assert text.startswith("student.shape") and "\n" not in text and len(text) < 300, text
    assert message in text, text


def test_a_checkpoint_with_a_hostile_shape_is_refused_before_building(tmp_path: Path) -> None:
    shape = {**_base(), "layers": {**_base()["layers"], "conv1": [3, 0, 1]}}
    meta = {"role": "student", "model": {"arch": "resnet8", "options": {}, "num_classes": 10, "shape": shape}}
    path = save_checkpoint(tmp_path, "best", build("resnet8", CLASSES), meta)
    with pytest.raises(UserError, match=r"^checkpoint .*conv1.* integers in \[1, 65536\]"):
        load_model(path)
    mismatched = {"layers": {"conv1": [3, 8, 1], "bn1": [8]}, "dropped": []}
    meta["model"]["shape"] = mismatched  # valid, but not the shape of the weights stored with it
    path = save_checkpoint(tmp_path, "best", build("resnet8", CLASSES), meta)
    with pytest.raises(UserError, match=r"^checkpoint .* has shape \(16,.*\), the model expects \(8,.*\)$"):
        load_model(path)


class _NumpyInside(nn.Module):
    """Runs for inference (no_grad), but leaves autograd in its forward: nothing Torch-Pruning can trace."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.from_numpy(self.conv(x).numpy())
        return self.fc(features.mean((2, 3)))


def test_a_network_torch_pruning_cannot_trace_is_one_user_error() -> None:
    model = _NumpyInside()
    with torch.no_grad():
        assert model(torch.randn(1, *INPUT)).shape == (1, CLASSES)
    with pytest.raises(UserError) as refused:
        prune_width(model, INPUT, 0.5, 8, arch="custom")
    text = str(refused.value)
    assert "\n" not in text, text
    assert text.startswith("custom: Torch-Pruning cannot trace this network (Can't call numpy()"), text
    assert text.endswith("use zoo candidates only: budget.sources: [zoo]"), text
