"""Issue 22 items 1 and 2: no file a user is handed runs code. The probes of tests/hostile/code.py run
through `kdforge` and must end in one error line with no marker written; the unit tests pin the trust rule
(signed by this user's kdforge, or --trust-code) and the clean-up of extraction folders."""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import pytest
from kdforge.compress.errors import UserError
from kdforge.export import trust
from kdforge.export.sidecar import read_sidecar, write_sidecar

from tests.hostile import run_in_process
from tests.hostile.code import (
    PROBES,
    attacker_sidecar,
    exported_program,
    marker,
    native_package,
    payload_pickle,
    rewrite,
)


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "kdforge-home"
    monkeypatch.setenv("KDFORGE_HOME", str(home))
    return home


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_hostile_code_probe(probe, tmp_path: Path) -> None:
    _, outcome, problems = run_in_process(probe, tmp_path / "probe")
    assert problems == [], (problems, outcome.stderr)
    assert not marker(outcome.root).exists()


def test_the_payload_is_live(tmp_path: Path) -> None:
    """The marker the probes look for is written when the payload is unpickled (so its absence means)."""
    import pickle

    (tmp_path / "outside").mkdir()
    pickle.loads(payload_pickle(tmp_path))
    assert marker(tmp_path).read_text() == "ran"


def test_a_plain_program_still_loads_and_a_shadowed_duplicate_is_refused(tmp_path: Path) -> None:
    import torch
    from kdforge.compress.weights.exported import load_exported

    base = exported_program(tmp_path / "base.pt2")
    teacher, provenance = load_exported(base, (3, 16, 16), 10)
    assert teacher(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    assert provenance.format == "torch.export"
    with zipfile.ZipFile(base) as archive:
        config = archive.read("base/data/weights/model_weights_config.json")
    twin = rewrite(base, tmp_path / "twin.pt2", {}, [("base/data/weights/model_weights_config.json", config)])
    with pytest.raises(UserError, match="a duplicate"):
        load_exported(twin, (3, 16, 16), 10)


def test_a_program_calling_a_non_operator_is_refused(tmp_path: Path) -> None:
    from kdforge.compress.weights.exported import load_exported

    base = exported_program(tmp_path / "base.pt2")
    with zipfile.ZipFile(base) as archive:
        program = json.loads(archive.read("base/models/model.json"))
    program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"
    bad = rewrite(base, tmp_path / "bad.pt2", {"models/model.json": json.dumps(program).encode()}, [])
    with pytest.raises(UserError, match="not an operator"):
        load_exported(bad, (3, 16, 16), 10)
    program["range_constraints"] = {"__import__('os').system('x')": {"min_val": 0, "max_val": None}}
    bad = rewrite(base, tmp_path / "bad2.pt2", {"models/model.json": json.dumps(program).encode()}, [])
    with pytest.raises(UserError, match="refused without running anything"):
        load_exported(bad, (3, 16, 16), 10)


def test_signed_sidecar_is_trusted_and_a_tampered_one_is_not(tmp_path: Path, _private_home: Path) -> None:
    artifact = tmp_path / "model.engine"
    artifact.write_bytes(b"engine bytes")
    write_sidecar(artifact, {"kind": "tensorrt-engine", "precision": "fp16"})
    key = _private_home / "trust.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    record = read_sidecar(artifact, "rebuild")
    assert trust.signed_here(record)
    trust.require_trusted(artifact, record, False, "a TensorRT engine")
    assert not trust.signed_here({**record, "precision": "fp32"})
    with pytest.raises(UserError, match=r"did not build here.*--trust-code"):
        trust.require_trusted(artifact, {**record, "precision": "fp32"}, False, "a TensorRT engine")
    trust.require_trusted(artifact, {**record, "signature": "0" * 64}, True, "a TensorRT engine")


def test_another_users_key_does_not_sign_for_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = tmp_path / "model.engine"
    artifact.write_bytes(b"engine bytes")
    write_sidecar(artifact, {"kind": "tensorrt-engine"})
    monkeypatch.setenv("KDFORGE_HOME", str(tmp_path / "someone-else"))
    assert not trust.signed_here(read_sidecar(artifact, "rebuild"))


def test_a_key_others_can_read_is_refused(_private_home: Path) -> None:
    assert trust.user_key(create=True) == trust.user_key()
    os.chmod(_private_home / "trust.key", 0o644)
    with pytest.raises(UserError, match="chmod 600"):
        trust.user_key()


def test_engine_from_elsewhere_is_refused_before_tensorrt(tmp_path: Path) -> None:
    from kdforge.export.tensorrt import TensorRTEngine

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    data = engine.read_bytes()
    import hashlib

    sidecar = {"kind": "tensorrt-engine", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    engine.with_name("model.engine.json").write_text(json.dumps(sidecar))
    with pytest.raises(UserError, match=r"a TensorRT engine .*did not build here"):
        TensorRTEngine(engine)


def _extraction_folders() -> set[str]:
    found = set()
    for pattern in ("aotinductor_*", "kdforge-aoti-*"):
        found |= set(glob.glob(os.path.join(tempfile.gettempdir(), pattern)))
    return found


def test_trust_code_loads_an_unsigned_package_and_cleans_up_when_it_fails(tmp_path: Path) -> None:
    from kdforge.export.aoti import AotiPackage

    root = tmp_path / "attack"
    for sub in ("files", "outside"):
        (root / sub).mkdir(parents=True)
    package = native_package(root)
    before = _extraction_folders()
    with pytest.raises(UserError, match="did not build here"):
        AotiPackage(package)
    assert not marker(root).exists()
    with pytest.raises(UserError, match=r"cannot load model\.pt2"):  # a constructor, but no model in it
        AotiPackage(package, trust_code=True)
    assert _extraction_folders() == before
    if shutil.which("cc") or shutil.which("gcc"):  # a real constructor: the flag did let it run
        assert marker(root).read_text() == "ran"


def test_a_path_escaping_entry_is_refused_even_with_trust_code(tmp_path: Path) -> None:
    from kdforge.export.aoti import AotiPackage

    package = tmp_path / "model.pt2"
    with zipfile.ZipFile(package, "w") as out:
        out.writestr("model/archive_format", "pt2")
        out.writestr("model/data/aotinductor/model/x.so", b"")
        out.writestr("model/data/aotinductor/model/../../../../escaped", b"x")
    attacker_sidecar(package)
    with pytest.raises(UserError, match="outside its folder"):
        AotiPackage(package, trust_code=True)
    assert not (tmp_path / "escaped").exists()
