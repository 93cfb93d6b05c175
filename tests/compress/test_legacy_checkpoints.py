"""kdforge checkpoints written before the CIFAR zoo became the reference models still load, with the same
logits: the old default WRN (post-activation) as `preact: false`, the old `preact: true` WRN under the
reference's names, the renamed ShuffleNetV2 / MobileNetV2 classifiers, and VGG without conv biases."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from kdforge.compress.config import NetworkConfig, load_recipe
from kdforge.compress.data import build_data
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.compress.networks import start_network
from kdforge.compress.train.checkpoint import load_model, save_checkpoint
from kdforge.compress.train.meta import network_meta
from torch import nn

from tests.export.conftest import randomise_batchnorm

REPO = Path(__file__).resolve().parents[2]
X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _old_preact(key: str) -> str:
    key = re.sub(r"^(block\d)\.layer\.(\d+)\.", r"\1.\2.", key)
    return re.sub(r"^bn1\.", "bn_out.", key.replace(".convShortcut.", ".shortcut."))


def _moved(old: str, new: str) -> Callable[[str], str]:
    return lambda key: old + key[len(new) :] if key.startswith(new) else key


class _Written(nn.Module):
    """Stands for the network an older kdforge saved: save_checkpoint stores its state dict as given."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.tensors = tensors

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self.tensors


def _zero_conv_biases(model: nn.Module) -> set[str]:
    dropped = set()
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.bias is not None:
            nn.init.zeros_(module.bias)
            dropped.add(f"{path}.bias")
    return dropped


# (arch, options today's network is built with, options the old checkpoint recorded, old name of a key)
CASES = [
    ("wrn_16_1", {"preact": False}, {}, lambda key: key),
    ("wrn_16_1", {}, {"preact": True}, _old_preact),
    ("shufflenetv2", {}, {}, _moved("fc.", "linear.")),
    ("mobilenetv2", {}, {}, _moved("classifier.", "classifier.0.")),
    ("vgg8", {}, {}, lambda key: key),
]


def _old_checkpoint(
    folder: Path, arch: str, today: dict, recorded: dict, old_name: Callable[[str], str]
) -> tuple[Path, nn.Module]:
    """A checkpoint as an older kdforge wrote it (its names and recorded options), and today's network."""
    config = load_recipe(str(REPO / "recipes" / "digits.yaml"), ["device=cpu"])
    data = build_data(config.data)
    torch.manual_seed(0)
    model = randomise_batchnorm(build(arch, data.num_classes, **today), seed=0).eval()
    dropped = _zero_conv_biases(model) if arch.startswith("vgg") else set()
    tensors = {old_name(k): v for k, v in model.state_dict().items() if k not in dropped}
    meta = network_meta(NetworkConfig(arch=arch, options=recorded), data, "student", "ce", config)
    return save_checkpoint(folder, "best", _Written(tensors), meta), model


@pytest.mark.parametrize(
    ("arch", "today", "recorded", "old_name"), CASES, ids=[c[0] + str(c[2]) for c in CASES]
)
def test_a_checkpoint_of_the_older_zoo_loads_with_the_same_logits(
    tmp_path: Path, arch: str, today: dict, recorded: dict, old_name: Callable[[str], str]
) -> None:
    path, model = _old_checkpoint(tmp_path, arch, today, recorded, old_name)
    loaded, checkpoint = load_model(path)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(X), model(X))
    assert checkpoint.meta["model"]["options"] == (today or recorded)
    if (
        arch == "wrn_16_1" and not recorded
    ):  # as --init: the recipe must build the old design, one line says so
        with pytest.raises(
            UserError, match=r"post-activation wrn_16_1, .* --set student\.options\.preact=false$"
        ):
            start_network(NetworkConfig(arch=arch, init=str(path)), 10, "student")
    started, _ = start_network(NetworkConfig(arch=arch, options=dict(today), init=str(path)), 10, "student")
    with torch.no_grad():
        assert torch.equal(started.eval()(X), model(X))
