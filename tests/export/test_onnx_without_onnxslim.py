"""ONNX export on a machine without onnxslim (the lent GPU images have none): a valid, unsimplified file and
one warning line, not an ImportError."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from kdforge.compress.models import build
from kdforge.export.onnx import onnx_metadata, to_onnx


def test_export_without_onnxslim_warns_once_and_writes_a_checked_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # `import onnxslim` raises ImportError
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = to_onnx(
            build("resnet8", num_classes=10).eval(), tmp_path / "m.onnx", (1, 3, 16, 16), metadata={"a": 1}
        )
    messages = [str(w.message) for w in caught if "onnxslim" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0] and "unsimplified" in messages[0]
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert onnx_metadata(path) == {"a": 1}
