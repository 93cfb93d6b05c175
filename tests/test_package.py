"""kdforge is one import package: `kdforge.compress`, `kdforge.kernels`, `kdforge.export`, and files written
before the move (checkpoints and ONNX store no module paths) still load and give the same outputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WRITTEN_BEFORE = REPO / "tests" / "data" / "written_before_kdforge_package"


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", ["compress", "kernels", "export"])
def test_no_top_level_package_is_installed(name: str, tmp_path: Path) -> None:
    outside = _python(f"import {name}", tmp_path)
    assert outside.returncode != 0
    assert f"No module named '{name}'" in outside.stderr
    inside = _python(f"import {name}", REPO)  # the checkout's root on sys.path: the folder refuses
    assert inside.returncode != 0
    assert f"import kdforge.{name}, not {name}" in inside.stderr
    assert _python(f"import kdforge.{name}", tmp_path).returncode == 0


def test_short_public_entry_points(tmp_path: Path) -> None:
    code = "from kdforge.kernels import kd_loss, dkd_loss, dist_loss; from kdforge.export import to_onnx, "
    code += "reparameterize; print(kd_loss.__module__, to_onnx.__module__, reparameterize.__module__)"
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "kdforge.kernels.kd",
        "kdforge.export.onnx.export",
        "kdforge.compress.reparam.merge",
    ]


def test_a_checkpoint_written_before_the_package_move_loads_and_predicts_the_same() -> None:
    from kdforge.compress.train.checkpoint import load_model

    model, checkpoint = load_model(WRITTEN_BEFORE / "best.safetensors")
    assert checkpoint.meta["model"]["arch"] == "resnet8"
    images = torch.from_numpy(np.load(WRITTEN_BEFORE / "input.npy"))
    with torch.no_grad():
        logits = model.eval()(images).numpy()
    np.testing.assert_allclose(logits, np.load(WRITTEN_BEFORE / "logits.npy"), rtol=1e-5, atol=1e-5)


def test_an_onnx_file_written_before_the_package_move_runs_and_matches_its_checkpoint() -> None:
    from kdforge.export.onnx import onnx_metadata, ort_session

    path = WRITTEN_BEFORE / "resnet8-fp32.onnx"
    assert onnx_metadata(path)["arch"] == "resnet8"
    session = ort_session(path)
    images = np.load(WRITTEN_BEFORE / "input.npy")
    (logits,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(logits, np.load(WRITTEN_BEFORE / "logits.npy"), rtol=1e-4, atol=1e-4)


def test_kdforge_eval_reads_a_checkpoint_written_before_the_package_move() -> None:
    from kdforge.cli import main

    assert main(["eval", str(WRITTEN_BEFORE / "best.safetensors"), "--set", "device=cpu"]) == 0


def _docs() -> list[Path]:
    return [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "recipes").rglob("*.md")),
    ]


def test_docs_link_only_to_files_inside_the_repository() -> None:
    import re

    for doc in _docs():
        text = doc.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, (
            f"{doc.name} names a folder outside the repo"
        )
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://", target):
                continue
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(REPO), f"{doc.name} links outside the repository: {target}"
            assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    roots = {folder: name for name, folder in config["package-dir"].items()}
    found = {
        ".".join([roots[init.relative_to(REPO).parts[0]], *init.relative_to(REPO).parts[1:-1]])
        for root in roots
        for init in (REPO / root).rglob("__init__.py")
    }
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"


def test_static_tools_see_every_folder_under_its_installed_name() -> None:
    """The Makefile's import tree links every package-dir folder, and [tool.pyright] looks there: pyright and
    IDEs cannot follow the editable install's import hook, so a folder missing here is unresolved for them."""
    import re
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    folders = {f for name, f in config["setuptools"]["package-dir"].items() if name != "kdforge"}
    makefile = (REPO / "Makefile").read_text()
    tree = re.search(r"^IMPORT_TREE\s*:=\s*(\S+)", makefile, re.M)
    linked = re.search(r"for folder in ([\w ]+); do ln -s", makefile)
    assert tree and linked, "the Makefile no longer builds the import tree"
    assert set(linked.group(1).split()) == folders
    assert config["pyright"]["extraPaths"] == [tree.group(1)]
    assert "basedpyright" in makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0], "make lint runs the checker"
    assert re.search(r"^test: lint\b", makefile, re.M), "make test runs make lint first"
