"""Hostile files that run code (issue 22 items 1 and 2): .pt2 teachers whose loading unpickles a payload
(a legacy weights entry, a config or sample inputs that torch reads under one name while a check reads a
benign copy under a non-normalised one), and AOTInductor packages whose entries escape the extraction
folder or whose sidecar the attacker wrote. Every payload writes a marker under outside/ if it runs."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

from tests.hostile import Attack, Outcome, Probe
from tests.hostile.runs import SETS


def marker(root: Path) -> Path:
    """The file every payload of this area writes if it runs."""
    return root / "outside" / "pwned"


class _Exec:
    """Unpickling this runs `code` (pickle calls builtins.exec)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return (exec, (self.code,))


def payload_pickle(root: Path) -> bytes:
    """A pickle whose loading writes the marker."""
    return pickle.dumps(_Exec(f"open({str(marker(root))!r}, 'w').write('ran')"), protocol=2)


def exported_program(path: Path) -> Path:
    """A real torch.export.save program (a tiny linear classifier over 3x16x16 images, 10 classes)."""
    import torch

    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 10)).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(network, (torch.zeros(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def rewrite(
    source: Path, target: Path, change: dict[str, bytes | None], extra: list[tuple[str, bytes]]
) -> Path:
    """A copy of the zip `source` with entries (inner names) replaced or dropped by `change` and the
    exact-named entries `extra` appended after the others."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            inner = info.filename.split("/", 1)[1]
            data = change.get(inner, archive.read(info.filename))
            if data is not None:
                out.writestr(info.filename, data)
        for name, data in extra:
            out.writestr(name, data)
    return target


def _teacher_attack(root: Path, teacher: Path) -> Attack:
    recipe = root / "files" / "recipe.yaml"
    recipe.write_text("name: victim\n")
    return Attack(["compress", str(recipe), "--teacher", str(teacher), *SETS], check=_no_marker)


def _no_marker(outcome: Outcome) -> str | None:
    return "the payload ran (its marker exists)" if marker(outcome.root).exists() else None


def _pt2_legacy_weights(root: Path) -> Attack:
    base = exported_program(root / "base.pt2")
    teacher = rewrite(
        base, root / "files" / "teacher.pt2", {}, [("base/data/weights/model.pt", payload_pickle(root))]
    )
    return _teacher_attack(root, teacher)


def _weights_config(use_pickle: bool, base: Path) -> bytes:
    with zipfile.ZipFile(base) as archive:
        config = json.loads(archive.read("base/data/weights/model_weights_config.json"))
    for entry in config["config"].values():
        entry["use_pickle"] = use_pickle
    return json.dumps(config).encode()


def _pt2_shadowed_use_pickle(root: Path) -> Attack:
    base = exported_program(root / "base.pt2")
    with zipfile.ZipFile(base) as archive:
        benign = archive.read("base/data/weights/model_weights_config.json")
    change = {"data/weights/model_weights_config.json": _weights_config(True, base)}
    change |= {"data/weights/weight_0": payload_pickle(root), "data/weights/weight_1": payload_pickle(root)}
    # torch reads base/data/...; a check keyed on normalised names sees the benign copy appended last
    extra = [("base//data/weights/model_weights_config.json", benign)]
    return _teacher_attack(root, rewrite(base, root / "files" / "teacher.pt2", change, extra))


def _pt2_pickled_samples(root: Path) -> Attack:
    base = exported_program(root / "base.pt2")
    with zipfile.ZipFile(base) as archive:
        benign = archive.read("base/data/sample_inputs/model.pt")
    change = {"data/sample_inputs/model.pt": payload_pickle(root)}
    extra = [("base//data/sample_inputs/model.pt", benign)]
    return _teacher_attack(root, rewrite(base, root / "files" / "teacher.pt2", change, extra))


def aoti_archive(path: Path, entries: dict[str, bytes]) -> Path:
    """A hand-made AOTInductor-style package: the archive header entries plus `entries` (inner names)."""
    root = path.stem
    with zipfile.ZipFile(path, "w") as out:
        out.writestr(f"{root}/archive_format", "pt2")
        out.writestr(f"{root}/archive_version", "0")
        for name, data in entries.items():
            out.writestr(name if name.startswith(f"{root}/") or "/../" in name else f"{root}/{name}", data)
    return path


def attacker_sidecar(package: Path) -> None:
    """The sidecar an attacker writes for their package: right size, right SHA-256, no kdforge signature."""
    data = package.read_bytes()
    record = {
        "kind": "aoti-package",
        "device": "cpu",
        "batch_range": [1, 64],
        "input_shape": [3, 16, 16],
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "classes": [str(i) for i in range(10)],
        "file": package.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    package.with_name(package.name + ".json").write_text(json.dumps(record))


def image(root: Path) -> Path:
    from PIL import Image

    path = root / "files" / "cat.png"
    Image.new("RGB", (16, 16), (120, 30, 200)).save(path)
    return path


def zip_slip_package(root: Path, signed: bool = False) -> Path:
    """A package with an entry that climbs out of the extraction folder to outside/pwned. `signed`: its
    sidecar carries a valid signature under root/home's key (what the attack's KDFORGE_HOME points at), so
    only the entry-name check stands between the package and the write."""
    package = root / "files" / "model.pt2"
    climb = "model/data/aotinductor/model/" + "../" * 24 + str(marker(root)).lstrip("/")
    aoti_archive(package, {"data/aotinductor/model/model.wrapper.so": b"\x7fELF", climb: b"ran"})
    attacker_sidecar(package)
    if signed:
        sign_sidecar(package, root / "home")
    return package


def sign_sidecar(package: Path, home: Path) -> None:
    """Sign the package's sidecar with the key under `home` (as kdforge does for what it builds there)."""
    try:
        from kdforge.export import trust
    except ImportError:  # a kdforge before signing (the probe run against the old code): nothing to sign
        return
    sidecar = package.with_name(package.name + ".json")
    saved = os.environ.get("KDFORGE_HOME")
    os.environ["KDFORGE_HOME"] = str(home)
    try:
        sidecar.write_text(json.dumps(trust.sign(json.loads(sidecar.read_text()))))
    finally:
        if saved is None:
            os.environ.pop("KDFORGE_HOME", None)
        else:
            os.environ["KDFORGE_HOME"] = saved


def _aoti_slip_predict(root: Path) -> Attack:
    argv = ["predict", str(zip_slip_package(root, signed=True)), str(image(root))]
    return Attack(argv, check=_no_marker, env={"KDFORGE_HOME": str(root / "home")})


def _aoti_slip_bench(root: Path) -> Attack:
    argv = ["bench", str(zip_slip_package(root)), "--batches", "1", "--trust-code"]
    return Attack(argv, check=_no_marker)


def constructor_library(root: Path, target: Path) -> bool:
    """A shared library whose constructor writes the marker (False when no C compiler is here)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return False
    source = target.with_suffix(".c")
    source.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void run(void) {\n"
        f'  FILE *f = fopen("{marker(root)}", "w"); if (f) {{ fputs("ran", f); fclose(f); }}\n}}\n'
    )
    done = subprocess.run([compiler, "-shared", "-fPIC", "-o", str(target), str(source)], capture_output=True)
    source.unlink()
    return done.returncode == 0


def native_package(root: Path) -> Path:
    """A package whose .so runs a constructor (a stand-in when no compiler is here), with the attacker's
    correct but unsigned sidecar."""
    library = root / "files" / "lib.so"
    if not constructor_library(root, library):
        library.write_bytes(b"\x7fELF not really")
    package = root / "files" / "model.pt2"
    metadata = json.dumps({"AOTI_DEVICE_KEY": "cpu"}).encode()
    aoti_archive(
        package,
        {
            "data/aotinductor/model/model.wrapper.so": library.read_bytes(),
            "data/aotinductor/model/model.wrapper_metadata.json": metadata,
            "data/aotinductor/model/model.wrapper.cpp": b"// nothing\n",
        },
    )
    library.unlink()
    attacker_sidecar(package)
    return package


def _aoti_unsigned_predict(root: Path) -> Attack:
    return Attack(["predict", str(native_package(root)), str(image(root))], check=_refused_unsigned)


def _aoti_unsigned_bench(root: Path) -> Attack:
    return Attack(["bench", str(native_package(root)), "--batches", "1"], check=_refused_unsigned)


def _refused_unsigned(outcome: Outcome) -> str | None:
    if "did not build here" not in outcome.stderr or "--trust-code" not in outcome.stderr:
        return "the error does not say kdforge did not build it and name --trust-code"
    return _no_marker(outcome)


PROBES: list[Probe] = [
    Probe(
        "pt2-legacy-weights",
        1,
        "a .pt2 teacher with a pickled legacy data/weights/model.pt",
        _pt2_legacy_weights,
    ),
    Probe(
        "pt2-shadowed-use-pickle",
        1,
        "use_pickle weights config, a benign copy under root//data/... for the check",
        _pt2_shadowed_use_pickle,
    ),
    Probe(
        "pt2-shadowed-sample-inputs",
        1,
        "pickled sample inputs, a benign copy under root//data/... for the check",
        _pt2_pickled_samples,
    ),
    Probe(
        "aoti-zip-slip-predict", 2, "predict on a package signed here with a ../ entry", _aoti_slip_predict
    ),
    Probe("aoti-zip-slip-bench", 2, "bench --trust-code on a package with a ../ entry", _aoti_slip_bench),
    Probe(
        "aoti-unsigned-predict", 2, "predict on a package whose .so has a constructor", _aoti_unsigned_predict
    ),
    Probe("aoti-unsigned-bench", 2, "bench on a package whose .so has a constructor", _aoti_unsigned_bench),
]
