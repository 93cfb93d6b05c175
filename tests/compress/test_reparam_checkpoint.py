"""One loader for every checkpoint form: `load_model` returns the plain, multi-branch and merged networks
of kdforge checkpoints; `save_merged` writes the merged form; nothing else reads the form flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.compress.reparam import MultiBranchConv, expand, network_form, save_merged
from kdforge.compress.train.checkpoint import load_model, read_checkpoint, save_checkpoint
from kdforge.compress.weights import read_state_dict
from torch import nn

from tests.export.conftest import randomise_batchnorm

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def _model_meta(**extra: object) -> dict:
    return {"role": "student", "model": {"arch": "resnet8", "options": {}, "num_classes": 10, **extra}}


def _multi_branch(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    multi = randomise_batchnorm(expand(build("resnet8", 10), extra=("1x1",)), seed=3).eval()
    return multi, save_checkpoint(tmp_path, "best", multi, _model_meta(rep={"extra": ["1x1"]}))


def test_load_model_returns_the_network_of_every_form(tmp_path: Path) -> None:
    multi, best = _multi_branch(tmp_path)
    merged = save_merged(best)
    x = torch.randn(2, 3, 16, 16)
    loaded_multi, multi_checkpoint = load_model(best)
    loaded_merged, merged_checkpoint = load_model(merged, num_classes=10)
    assert network_form(multi_checkpoint.meta) == "multi-branch"
    assert network_form(merged_checkpoint.meta) == "merged"
    assert any(isinstance(m, MultiBranchConv) for m in loaded_multi.modules())
    assert not any(isinstance(m, (MultiBranchConv, nn.BatchNorm2d)) for m in loaded_merged.modules())
    assert not loaded_merged.training
    with torch.no_grad():
        reference = multi(x)
        torch.testing.assert_close(loaded_multi.eval()(x), reference, rtol=0, atol=0)
        torch.testing.assert_close(loaded_merged(x), reference, **TOLERANCE)
    assert merged_checkpoint.meta["merged_from"] == "best.safetensors"


def test_a_plain_checkpoint_loads_as_the_plain_architecture(tmp_path: Path) -> None:
    plain = randomise_batchnorm(build("resnet8", 10)).eval()
    path = save_checkpoint(tmp_path, "best", plain, _model_meta())
    loaded, checkpoint = load_model(path)
    assert network_form(checkpoint.meta) == "plain"
    assert [type(m) for m in loaded.modules()] == [type(m) for m in plain.modules()]


def test_a_merged_checkpoint_is_still_refused_as_starting_weights(tmp_path: Path) -> None:
    _, best = _multi_branch(tmp_path)
    with pytest.raises(UserError, match=r"merged \(deployable\) network; start from its training checkpoint"):
        read_state_dict(save_merged(best))


def test_a_merged_checkpoint_keeps_the_class_count_check(tmp_path: Path) -> None:
    _, best = _multi_branch(tmp_path)
    with pytest.raises(UserError, match="predicts 10 classes but the data set has 5"):
        load_model(save_merged(best), num_classes=5)
    assert read_checkpoint(best).meta["model"]["rep"] == {"extra": ["1x1"]}


def test_only_the_form_reader_reads_the_form_flag() -> None:
    """The merged flag is read in compress/reparam/checkpoint.py alone; every caller asks load_model."""
    readers = [
        str(path.relative_to(REPO))
        for folder in ("compress", "export", "kdforge")
        for path in (REPO / folder).rglob("*.py")
        if re.search(r"""["']reparameterized["']""", path.read_text(encoding="utf-8"))
    ]
    assert readers == ["compress/reparam/checkpoint.py"]
