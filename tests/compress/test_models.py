"""Tests for the model zoo, the registry's user errors and FeatureTap (CPU, small batches)."""

import importlib.util
import itertools
import sys
import types

import pytest
import torch
import torch.fx
from kdforge.compress.errors import UserError
from kdforge.compress.models import (
    FeatureTap,
    _torchvision_builder,
    available,
    build,
    check_options,
    classifier_head,
    extract_features,
    option_names,
)
from kdforge.compress.models.features import resolve_module
from kdforge.compress.models.shufflenetv2 import channel_shuffle
from kdforge.compress.registry import MODELS
from kdforge.compress.reparam.graph import conv_bn_pairs
from torch import nn

# Parameter counts in millions at 100 classes: the CRD (Tian et al. 2020) and DKD (Zhao et al. 2022) tables.
PAPER_PARAMS_M = {
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_40_2": 2.26,
    "wrn_40_1": 0.57,
    "wrn_16_2": 0.70,
    "vgg13": 9.46,
    "vgg8": 3.96,
    "mobilenetv2": 0.81,
    "shufflenetv2": 1.36,
}  # resnet18/50 and shufflenetv1: tests/compress/test_reference_zoo.py holds them to the reference code
ZOO = available()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small batches gain nothing from threads, and spinning OpenMP threads crawl on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def within_paper(name: str, model: nn.Module) -> bool:
    # 1% of the reference, but never tighter than the tables' own rounding to 0.01M
    ref = PAPER_PARAMS_M[name]
    return abs(n_params(model) / 1e6 - ref) <= max(0.01 * ref, 0.005)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_parameter_counts_match_the_papers(name: str) -> None:
    model = build(name, 100)
    assert within_paper(name, model), f"{name}: {n_params(model) / 1e6:.4f}M vs paper {PAPER_PARAMS_M[name]}M"


@pytest.mark.parametrize("name", ["wrn_40_2", "wrn_40_1", "wrn_16_2"])
def test_post_activation_wrn_option_also_matches_the_papers(name: str) -> None:
    assert within_paper(name, build(name, 100, preact=False))


def test_available_lists_the_families() -> None:
    for name in [
        "resnet8",
        "resnet110",
        "resnet8x4",
        "resnet32x4",
        "wrn_16_1",
        "wrn_40_2",
        "wrn_28_10",
        "vgg8",
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "mobilenetv2",
        "shufflenetv1",
        "shufflenetv2",
        "resnet18",
        "resnet50",
    ]:
        assert name in ZOO


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_runs_forward_backward_and_taps_its_stages(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 7)
    _, head = classifier_head(model)
    assert head.out_features == 7
    for size in (32, 16):  # backward on the cheaper 16x16 pass only, to keep the big models fast
        x = torch.randn(2, 3, size, size)
        with torch.set_grad_enabled(size == 16), FeatureTap(model, model.stage_names) as tap:
            logits = model(x)
            stages = tap.features
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        assert list(stages) == model.stage_names and all(f.dim() == 4 for f in stages.values())
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0


def preact_wrn_unpaired_convs(model: nn.Module) -> set[str]:
    """The convs of a pre-activation WRN with no BatchNorm registered right after them: the stem and each
    block's second conv and 1x1 shortcut (their outputs are added; the next block's BN normalises the sum)."""
    names = {path for path, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return {p for p in names if p == "conv1" or p.endswith((".conv2", ".convShortcut"))}


@pytest.mark.parametrize("name", ZOO)
def test_every_conv_feeds_the_batchnorm_registered_right_after_it(name: str) -> None:
    """Guards conv-BN folding: each conv is followed, in registration order, by the BatchNorm2d it feeds
    (a conv bias, as VGG's, folds too), except the convs of a pre-activation WRN that feed an addition;
    the graph-based pairing finds these pairs too."""
    model = build(name, 10).eval()
    pairs = []
    unpaired = set()
    names = {m: path for path, m in model.named_modules()}
    for parent in model.modules():
        children = list(parent.children())
        for conv, nxt in zip(children, [*children[1:], None]):
            if isinstance(conv, nn.Conv2d):
                if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == conv.out_channels:
                    pairs.append((conv, nxt))
                else:
                    unpaired.add(names[conv])
    expected = preact_wrn_unpaired_convs(model) if name.startswith("wrn_") else set()
    assert unpaired == expected, f"{name}: convs not followed by a BatchNorm2d: {sorted(unpaired - expected)}"
    assert any(max(conv.kernel_size) >= 3 for conv, _ in pairs)
    torch.fx.symbolic_trace(model)  # graph-based folding needs a traceable forward
    # graph-based folding finds these pairs; in a pre-activation WRN also a stem conv whose only use is the
    # first block's BN (where that block widens, its shortcut takes the activated input)
    traced = {(model.get_submodule(c), model.get_submodule(b)) for c, b in conv_bn_pairs(model)[0]}
    assert set(pairs) <= traced and (name.startswith("wrn_") or traced == set(pairs))
    pairs = sorted(traced, key=lambda pair: names[pair[0]])
    # the dataflow matches the registration order: each BN's input is exactly its conv's output tensor
    outputs: dict[nn.Module, torch.Tensor] = {}
    inputs: dict[nn.Module, torch.Tensor] = {}
    handles = [conv.register_forward_hook(lambda m, a, out: outputs.__setitem__(m, out)) for conv, _ in pairs]
    handles += [bn.register_forward_pre_hook(lambda m, a: inputs.__setitem__(m, a[0])) for _, bn in pairs]
    # and no BatchNorm registered right after a conv is fed by anything else (registration-order fallback)
    modules = list(model.modules())
    for module, following in itertools.pairwise(modules):
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            assert (module, following) in pairs or following.num_features != module.out_channels
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    for h in handles:
        h.remove()
    assert all(inputs[bn] is outputs[conv] for conv, bn in pairs)


def test_channel_shuffle_interleaves_the_two_halves() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_wrn_names_parse_any_valid_depth_and_width() -> None:
    model = build("wrn_22_3", 10)
    assert model.fc.in_features == 64 * 3
    stages = (model.block1.layer, model.block2.layer, model.block3.layer)
    assert [len(stage) for stage in stages] == [(22 - 4) // 6] * 3
    assert build("wrn_16_1", 10, dropout=0.3).block1.layer[0].dropout == 0.3
    post = build("wrn_22_3", 10, preact=False)
    assert [len(post.block1), len(post.block2), len(post.block3)] == [(22 - 4) // 6] * 3


def test_the_post_activation_wrn_keeps_its_earlier_tensor_names() -> None:
    """preact=False loads the checkpoints of kdforge's earlier default WRN: stem BN, ``block<i>.<j>``, a
    conv-BN ``shortcut``, no final BN."""
    keys = set(build("wrn_16_2", 10, preact=False).state_dict())
    assert {
        "bn1.weight",
        "block1.0.conv1.weight",
        "block1.0.bn2.weight",
        "block2.0.shortcut.1.weight",
    } <= keys
    assert not any(".layer." in key or "convShortcut" in key for key in keys)
    assert build("wrn_16_2", 10, preact=False).bn1.num_features == 16  # the stem's; preact's is the last


@pytest.mark.parametrize("name", ["wrn_38_2", "wrn_4_2", "wrn_16_0"])
def test_bad_wrn_sizes_are_user_errors(name: str) -> None:
    with pytest.raises(UserError, match="wrn"):
        build(name, 10)


@pytest.mark.parametrize(
    ("name", "nearest"),
    [
        ("resnet33", "resnet32"),
        ("vgg_13", "vgg13"),
        ("mobilenet_v2", "mobilenetv2"),
        ("resnet152", "tv:resnet152"),
        ("ShuffleV1", "shufflenetv1"),  # the reference code's name
        ("ShuffleV2", "shufflenetv2"),
    ],
)
def test_unknown_name_suggests_the_nearest(name: str, nearest: str) -> None:
    with pytest.raises(UserError, match=f"'{nearest}'"):
        build(name, 10)


def test_names_are_case_insensitive() -> None:
    assert isinstance(build("ResNet8", 10), nn.Module)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10"])
def test_num_classes_must_be_a_positive_int(num_classes: object) -> None:
    with pytest.raises(UserError, match="num_classes"):
        build("resnet8", num_classes)


def test_unknown_option_is_a_user_error_naming_model_and_option() -> None:
    with pytest.raises(UserError, match=r"'resnet20'.*'widen'"):
        build("resnet20", 10, widen=2)
    with pytest.raises(UserError, match="net_size"):
        build("shufflenetv2", 10, net_size=3)


def test_an_unknown_option_is_refused_before_the_builder_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder's signature decides, not the text of a TypeError: nothing is built, and the nearest
    option and the valid ones are named in one line."""
    calls = []

    def fake(num_classes: int, width: int = 1, depth: int = 2) -> nn.Module:
        calls.append((num_classes, width, depth))
        return nn.Linear(width, num_classes)

    monkeypatch.setitem(MODELS, "fake_net", fake)
    with pytest.raises(UserError) as caught:
        build("fake_net", 3, wdith=2)
    message = str(caught.value)
    assert message == "model 'fake_net' has no option 'wdith'; did you mean 'width'? (options: width, depth)"
    assert calls == []
    assert build("fake_net", 3, width=4).in_features == 4


def test_a_type_error_inside_a_builder_is_not_read_as_an_unknown_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake(num_classes: int, width: int = 1) -> nn.Module:
        raise TypeError("unexpected keyword argument 'bias'")  # from deep inside, about something else

    monkeypatch.setitem(MODELS, "fake_net", fake)
    with pytest.raises(UserError, match=r"'fake_net' rejected options \{'width': 2\}"):
        build("fake_net", 3, width=2)


def test_zoo_options_come_from_the_builder_signature() -> None:
    with pytest.raises(
        UserError, match=r"^model 'wrn_16_2' has no option 'dropuot'; did you mean 'dropout'\? "
    ):
        build("wrn_16_2", 10, dropuot=0.1)
    with pytest.raises(UserError, match=r"\(options: dropout, preact\)$"):
        build("wrn_16_2", 10, dropuot=0.1)
    with pytest.raises(UserError, match=r"'resnet20' has no option 'widen' \(it takes no options\)$"):
        build("resnet20", 10, widen=2)


def test_torchvision_options_are_the_builders_and_the_model_classes() -> None:
    """tv: builders take **kwargs for their model class; its constructor (along its bases) names them."""
    names, open_ended = option_names(_torchvision_builder("resnet18"))
    assert not open_ended and {"zero_init_residual", "groups", "width_per_group"} <= set(names)
    assert "weights" not in names and "num_classes" not in names
    with pytest.raises(
        UserError, match=r"no option 'zero_init_resdual'; did you mean 'zero_init_residual'\?"
    ):
        build("tv:resnet18", 10, zero_init_resdual=True)
    with pytest.raises(UserError, match="without pretrained weights"):
        build("tv:resnet18", 10, weights="IMAGENET1K_V1")
    model = build("tv:resnet18", 10, zero_init_residual=True)
    assert torch.count_nonzero(model.layer1[0].bn2.weight) == 0
    # a model class that takes **kwargs of its own (MobileNetV3): any name passes, the model judges it
    make = _torchvision_builder("mobilenet_v3_small")
    assert option_names(make)[1]
    check_options("tv:mobilenet_v3_small", make, {"reduced_tail": True})


def test_torchvision_models_build_with_the_requested_classes() -> None:
    model = build("tv:resnet18", 10)
    assert model.fc.out_features == 10
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(UserError, match="tv:resnet18"):
        build("tv:resnet19", 10)
    with pytest.raises(UserError, match="'bogus'"):
        build("tv:resnet18", 10, bogus=1)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed: nothing to test")
def test_timm_without_timm_says_how_to_install_it() -> None:
    with pytest.raises(UserError, match="pip install timm"):
        build("timm:resnet18", 10)


def test_timm_prefix_calls_create_model_without_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("timm")
    fake.list_models = lambda: ["resnet18", "vit_tiny_patch16_224"]
    fake.is_model = lambda name: name in fake.list_models()
    fake.create_model = lambda name, **kw: calls.append((name, kw)) or nn.Linear(1, kw["num_classes"])
    monkeypatch.setitem(sys.modules, "timm", fake)
    assert build("timm:resnet18", 5, drop_rate=0.1).out_features == 5
    assert calls == [("resnet18", {"pretrained": False, "num_classes": 5, "drop_rate": 0.1})]
    with pytest.raises(UserError, match="timm:resnet18"):
        build("timm:resnet19", 5)


@pytest.fixture
def resnet8() -> nn.Module:
    torch.manual_seed(0)
    return build("resnet8", 10).eval()


def all_hooks(model: nn.Module) -> list[dict]:
    return [h for m in model.modules() for h in (m._forward_hooks, m._forward_pre_hooks) if h]


def test_tap_features_equal_the_submodule_outputs(resnet8: nn.Module) -> None:
    x = torch.randn(2, 3, 32, 32)
    with FeatureTap(resnet8, ["layer2", "layer3.0.conv1"]) as tap:
        logits = resnet8(x)
        feats = tap.features
    m = resnet8
    with torch.no_grad():
        layer2 = m.layer2(m.layer1(torch.relu(m.bn1(m.conv1(x)))))
        torch.testing.assert_close(feats["layer2"], layer2)
        torch.testing.assert_close(feats["layer3.0.conv1"], m.layer3[0].conv1(layer2))
        torch.testing.assert_close(logits, m(x))
    assert not all_hooks(resnet8)
    assert tap.features == {}  # the tap drops its references on exit; `feats` stays valid


def test_tap_is_reusable_and_removes_hooks_on_errors(resnet8: nn.Module) -> None:
    x1, x2 = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with pytest.raises(RuntimeError, match="boom"), FeatureTap(resnet8, ["layer1"]) as tap:
        resnet8(x1)
        first = tap.features
        resnet8(x2)
        second = tap.features
        assert first is not second and not torch.equal(first["layer1"], second["layer1"])
        stem = torch.relu(resnet8.bn1(resnet8.conv1(x2)))
        torch.testing.assert_close(second["layer1"], resnet8.layer1(stem))
        raise RuntimeError("boom")
    assert not all_hooks(resnet8)


def test_gradients_flow_through_a_tapped_feature(resnet8: nn.Module) -> None:
    logits, feats = extract_features(resnet8, torch.randn(2, 3, 16, 16), ["layer2"])
    assert logits.shape == (2, 10)
    feats["layer2"].pow(2).mean().backward()
    assert resnet8.conv1.weight.grad.abs().sum() > 0
    assert resnet8.layer3[0].conv1.weight.grad is None  # after the feature: untouched
    assert not all_hooks(resnet8)


def test_unknown_path_names_the_nearest_paths(resnet8: nn.Module) -> None:
    with pytest.raises(UserError, match=r"layer2\.0\.conv1"):
        FeatureTap(resnet8, ["layer2.0.con1"])
    with pytest.raises(UserError, match="layer3"):
        resolve_module(resnet8, "layer4")
    assert not all_hooks(resnet8)
