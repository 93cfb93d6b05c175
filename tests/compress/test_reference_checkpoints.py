"""Checkpoints as the CIFAR distillation reference code writes them load onto the zoo with the same
logits: CRD's `ckpt_epoch_240.pth` (`{epoch, model, accuracy, optimizer}`, the pre-zip pickle format, CUDA
tensors read on a CPU machine), `module.` prefixes, other wrapper keys, and mdistiller's whole-run files
(`module.student.*` / `module.teacher.*`) split on request; a file that does not fit is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kdforge.compress.config import NetworkConfig
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.compress.networks import weights_network
from torch import nn

from tests.crd_files import crd_checkpoint, legacy_oversized_file, legacy_payload_file
from tests.export.conftest import randomise_batchnorm

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _trained(arch: str, seed: int) -> nn.Module:
    """A zoo network with non-trivial weights and BN statistics (resnet20 has the reference's names)."""
    torch.manual_seed(seed)
    return randomise_batchnorm(build(arch, 100), seed=seed).eval()


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(X)


@pytest.mark.parametrize("legacy", [True, False], ids=["pre-zip-cuda", "zip"])
def test_a_crd_checkpoint_loads_with_the_same_logits(tmp_path: Path, legacy: bool) -> None:
    model = _trained("resnet20", 0)
    path = crd_checkpoint(model, tmp_path / "ckpt_epoch_240.pth", X, legacy=legacy, prefix="module.")
    for fmt in ("auto", "crd"):
        loaded = weights_network(path, NetworkConfig(arch="resnet20", weights_format=fmt), 100, "teacher")
        assert torch.allclose(_logits(loaded), _logits(model), atol=1e-6, rtol=0)


def test_an_mdistiller_run_file_gives_the_network_asked_for(tmp_path: Path) -> None:
    student, teacher = _trained("resnet20", 1), _trained("resnet32", 2)
    state = {f"module.student.{k}": v for k, v in student.state_dict().items()}
    state |= {f"module.teacher.{k}": v for k, v in teacher.state_dict().items()}
    state["module.conv_reg.weight"] = torch.zeros(4, 4, 1, 1)  # a distiller's own module (FitNet)
    path = tmp_path / "latest"
    torch.save({"epoch": 3, "model": state, "optimizer": {}, "best_acc": 70.1}, path)
    for arch, fmt, want in (
        ("resnet20", "mdistiller-student", student),
        ("resnet32", "mdistiller-teacher", teacher),
    ):
        loaded = weights_network(path, NetworkConfig(arch=arch, weights_format=fmt), 100, "teacher")
        assert torch.equal(_logits(loaded), _logits(want))
    with pytest.raises(UserError, match=r"whole mdistiller run .*mdistiller-student or mdistiller-teacher"):
        weights_network(path, NetworkConfig(arch="resnet20"), 100, "student")
    plain = tmp_path / "plain.pth"
    torch.save(student.state_dict(), plain)
    with pytest.raises(UserError, match=r"not an mdistiller run checkpoint: it has no 'teacher\.' tensors"):
        weights_network(plain, NetworkConfig(arch="resnet20", weights_format="mdistiller-teacher"), 100, "t")


def test_a_checkpoint_that_does_not_fit_names_the_first_tensor(tmp_path: Path) -> None:
    model = _trained("resnet20", 3)
    state = model.state_dict()
    del state["layer2.0.bn1.running_var"]
    path = tmp_path / "missing.pth"
    torch.save({"model": state, "epoch": 1, "best_acc": 1.0}, path)
    with pytest.raises(
        UserError, match=r"does not fit resnet20: it has no tensor 'layer2\.0\.bn1\.running_var'$"
    ):
        weights_network(path, NetworkConfig(arch="resnet20"), 100, "teacher")
    with pytest.raises(
        UserError, match=r"does not fit resnet32: it has no tensor 'layer1\.3\.conv1\.weight'$"
    ):
        weights_network(
            crd_checkpoint(model, tmp_path / "r20.pth", X, legacy=False),
            NetworkConfig(arch="resnet32"),
            100,
            "teacher",
        )


def test_a_hostile_pre_zip_file_runs_nothing_and_allocates_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    payload = legacy_payload_file(tmp_path / "ckpt_epoch_240.pth", marker)
    with pytest.raises(UserError, match=r"refused without running anything: it holds objects other than"):
        weights_network(payload, NetworkConfig(arch="resnet20"), 100, "teacher")
    assert not marker.exists()
    oversized = legacy_oversized_file(tmp_path / "big.pth", 1 << 40)  # 4 TiB of float32 claimed
    with pytest.raises(UserError, match=r"big\.pth' cannot be read as a PyTorch state dict \("):
        weights_network(oversized, NetworkConfig(arch="resnet20"), 100, "teacher")
