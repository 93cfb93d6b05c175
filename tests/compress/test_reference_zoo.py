"""Oracle tests: the zoo's CIFAR models are the CRD / mdistiller reference models, tensor for tensor.

The reference is CRD's own model code (tests/reference_models: RepDistiller ``models/``, which mdistiller's
``mdistiller/models/cifar/`` copies with the same modules). A reference model with trained-like weights is
saved the way CRD's ``train_teacher.py`` saves it, its ``model`` entry loads into the zoo model through
``reference_names.to_zoo`` with ``strict=True``, and the two give the same eval-mode logits and the same
features at the zoo's ``stage_names``. Built after the same seed, zoo and reference hold equal tensors: the
zoo initialises as the reference does (classifier included: PyTorch's default, or N(0, 0.01) for VGG and
MobileNetV2).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from kdforge.compress.models import FeatureTap, build, classifier_head
from kdforge.compress.weights.reference_names import REFERENCE_ARCHS, to_zoo, zoo_arch
from torch import nn

from tests.reference_models import model_dict
from tests.reference_models.resnetv2 import ResNet18

CASES = [
    "resnet56",
    "resnet110",
    "resnet32x4",
    "resnet8x4",
    "wrn_40_2",
    "wrn_16_2",
    "vgg13",
    "vgg8",
    "ResNet50",
    "MobileNetV2",
    "ShuffleV1",
    "ShuffleV2",
]
CLASSES = 100


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def reference_builder(name: str) -> Callable[..., nn.Module]:
    return ResNet18 if name == "ResNet18" else model_dict[name]


def build_reference(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # the reference MobileNetV2 prints its T and width
        return reference_builder(name)(num_classes=CLASSES)


def build_zoo(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build(REFERENCE_ARCHS[name], CLASSES)


def train_like(model: nn.Module, seed: int) -> nn.Module:
    """Weights unlike any initialisation: random BN affine parameters and classifier, running statistics
    from train-mode forwards on random images (cumulative averages, so eval-mode activations stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.momentum = None
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features**-0.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32, generator=g))
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def save_like_crd(model: nn.Module, path: Path) -> Path:
    """CRD train_teacher.py's regular checkpoint: {'epoch', 'model', 'accuracy', 'optimizer'}."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = {
        "epoch": 240,
        "model": model.state_dict(),
        "accuracy": torch.tensor(75.61),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, path)
    return path


@pytest.mark.parametrize("name", CASES)
def test_a_reference_checkpoint_loads_into_the_zoo_with_the_same_logits_and_features(
    tmp_path: Path, name: str
) -> None:
    reference = train_like(build_reference(name, 0), seed=1)
    path = save_like_crd(reference, tmp_path / "ckpt_epoch_240.pth")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    zoo = build_zoo(name, 2)
    zoo.load_state_dict(to_zoo(REFERENCE_ARCHS[name], checkpoint["model"]), strict=True)
    zoo.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        feats, want = reference(x, is_feat=True)
        with FeatureTap(zoo, zoo.stage_names) as tap:
            got = zoo(x)
            taps = [tap.features[stage] for stage in zoo.stage_names]
    assert isinstance(got, torch.Tensor) and got.shape == (2, CLASSES)  # forward returns the logits only
    assert want.std() > 0.1, "logits this flat would make the comparison vacuous"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # the stage taps are the reference's feature points (its is_feat list, less the pooled vector)
    expected = feats[:-1][-len(taps) :]
    assert [t.shape for t in taps] == [f.shape for f in expected]
    for tapped, feature in zip(taps, expected, strict=True):
        torch.testing.assert_close(tapped, feature, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", [*CASES, "ResNet18", "wrn_40_1", "wrn_16_1", "resnet20", "vgg19"])
def test_the_zoo_initialises_as_the_reference_does(name: str) -> None:
    """Same seed, same tensors: every conv, BN and classifier starts where the reference starts it."""
    want = to_zoo(REFERENCE_ARCHS[name], build_reference(name, 5).state_dict())
    got = build_zoo(name, 5).state_dict()
    assert set(got) == set(want)
    unequal = [key for key in want if not torch.equal(got[key], want[key])]
    assert not unequal, f"{name}: initialised unlike the reference: {unequal[:5]}"


@pytest.mark.parametrize(
    ("name", "std"),
    [("resnet56", None), ("wrn_40_2", None), ("ShuffleV2", None), ("vgg13", 0.01), ("MobileNetV2", 0.01)],
)
def test_the_classifier_starts_as_the_reference_file_starts_it(name: str, std: float | None) -> None:
    """N(0, 0.01) only where the reference sets it (VGG, MobileNetV2); elsewhere PyTorch's default
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in), whose logits are not near-constant."""
    _, head = classifier_head(build_zoo(name, 0))
    expected = std if std is not None else (3 * head.in_features) ** -0.5
    assert head.weight.std().item() == pytest.approx(expected, rel=0.05)
    if std is None:
        assert head.weight.abs().max() <= head.in_features**-0.5


def test_every_reference_model_has_a_zoo_name() -> None:
    assert set(model_dict) <= set(REFERENCE_ARCHS)
    for reference, zoo in REFERENCE_ARCHS.items():
        assert zoo_arch(reference) == zoo
        assert isinstance(build(zoo, 10), nn.Module)
    assert zoo_arch("tv:resnet18") == "tv:resnet18"


def test_to_zoo_keeps_the_tensors_and_leaves_the_input_alone() -> None:
    state = build_reference("wrn_16_2", 0).state_dict()
    mapped = to_zoo("wrn_16_2", state)
    assert mapped is not state and mapped.keys() == state.keys()
    assert all(mapped[k] is state[k] for k in state)
