"""Measure where the model ships: `write_bundle` makes a folder that times candidate files on a device that
cannot run kdforge (a Jetson): the files, manifest.json, the native runner's sources and measure.sh (POSIX
shell, no Python); `import_rows` reads back the rows measure.sh left in results/, as hostile input.

Layout: manifest.json, measure.sh, models/<name>.onnx|.pt2 (+ .pt2.json sidecar), native/ (runner sources),
and on the device build/ and results/ (machine.txt, <name>.sha256, <name>.json or <name>.trtexec.json)."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any

from kdforge.compress.atomic import atomic_path
from kdforge.compress.digest import sha256_file
from kdforge.compress.errors import UserError
from kdforge.compress.layout import LOCK_NAME
from kdforge.compress.runlock import run_lock
from kdforge.compress.text import printable, shown
from kdforge.export.bench.candidate_timing import check_input_shape, checked_file
from kdforge.export.bench.schema import ROW_FIELDS, read_rows
from kdforge.export.bench.target import Target, check_target, target_problem
from kdforge.export.bench.timing import TimingPolicy
from kdforge.export.bench.trtexec import trtexec_row, trtexec_samples, trtexec_version

BUNDLE_FORMAT = "kdforge-latency-bundle"
BUNDLE_VERSION = 1
MANIFEST, SCRIPT, MODELS, NATIVE, RESULTS = "manifest.json", "measure.sh", "models", "native", "results"
BUNDLE_ENTRIES = {LOCK_NAME, MANIFEST, SCRIPT, MODELS, NATIVE, RESULTS, "build"}
TEMPLATE = Path(__file__).with_name("bundle_script.sh")
SOURCE_PATTERNS = ("*.cpp", "*.h", "*.cmake", "CMakeLists.txt")  # what `kdforge build-native` builds from
TOOLS = {"aoti": ("runner",), "onnxruntime": ("runner",), "tensorrt": ("runner", "trtexec")}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,99}")  # a file stem: no dot, no separator
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_RESULT_BYTES = 32 * 2**20
MAX_MANIFEST_BYTES = 4 * 2**20
MAX_CANDIDATES = 10_000


def write_bundle(
    out: Path, files: dict[str, Path], target: Target, input_shape: tuple[int, ...], policy: TimingPolicy
) -> Path:
    """Write the bundle timing `files` (name -> ONNX in the target precision, or .pt2) on `target` into
    `out`: a new or empty folder, or this same bundle (then nothing changes and its results stay)."""
    check_target(target, here=False)
    if target.backend not in TOOLS:
        raise UserError(
            f"a bundle times {', '.join(TOOLS)} targets without Python; {target.backend} needs kdforge on "
            "the device: run `kdforge run --budget` there"
        )
    shape = check_input_shape(input_shape)
    if not files:
        raise UserError("no candidate files to bundle")
    candidates = [_candidate(name, Path(path), target, shape) for name, path in files.items()]
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "target": dataclasses.asdict(target),
        "label": target.label(),
        "input_shape": list(shape),
        "policy": dataclasses.asdict(policy),
        "tools": list(TOOLS[target.backend]),
        "candidates": candidates,
    }
    out = Path(out)
    _check_folder(out)
    with run_lock(out):  # one writer; the lock file also marks the folder as kdforge's
        if (out / MANIFEST).exists() or (out / MANIFEST).is_symlink():
            try:
                same = read_manifest(out) == manifest
            except UserError:
                same = False
            if same:
                return out
            raise UserError(
                f"{_where(out)} holds another bundle (other candidates, target or policy); choose a new "
                "folder for this one or delete it"
            )
        for candidate, path in zip(candidates, files.values(), strict=True):
            _copy(Path(path), out / candidate["file"])
            if "sidecar" in candidate:
                _copy(Path(f"{path}.json"), out / candidate["sidecar"])
        for source in _runner_sources():
            _copy(source, out / NATIVE / source.name)
        with atomic_path(out / SCRIPT) as tmp:
            tmp.write_text(_script(target, policy, candidates))
            os.chmod(tmp, 0o755)
        with atomic_path(out / MANIFEST) as tmp:  # last: a bundle with a manifest is complete
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _where(path: Path) -> str:
    return repr(str(path)[:200])


def _candidate(name: str, path: Path, target: Target, shape: tuple[int, int, int]) -> dict[str, Any]:
    """The manifest entry of one candidate file, after checking it is what `target` runs at `shape`."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UserError(
            f"candidate name {shown(name)} cannot name bundle files; use letters, digits, _, + and - "
            "(at most 100, no dot)"
        )
    checked_file(name, path, target)
    suffix = path.suffix.lower()
    entry: dict[str, Any] = {
        "name": name,
        "file": f"{MODELS}/{name}{suffix}",
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "trtexec_shapes": "",
    }
    if suffix == ".pt2":
        from kdforge.export.aoti.package import package_metadata

        meta = package_metadata(path)  # the sidecar (the runner reads it) matches the package
        low, high = meta["batch_range"]
        if tuple(meta["input_shape"]) != shape or not low <= target.batch <= high:
            raise UserError(
                f"candidate {name}: {path.name} takes input {tuple(meta['input_shape'])} at batches {low}-"
                f"{high}, not {shape} at batch {target.batch}; compile it for those"
            )
        entry["sidecar"] = f"{MODELS}/{name}{suffix}.json"
        return entry
    input_name, dims = _onnx_input(name, path)
    if dims[1:] != list(shape) or dims[0] not in (-1, target.batch):
        raise UserError(
            f"candidate {name}: {path.name} takes input {dims} (-1: any batch), not batch {target.batch} of "
            f"{shape}; export it for those"
        )
    if target.backend == "tensorrt" and dims[0] == -1:
        entry["trtexec_shapes"] = f"{input_name}:{'x'.join(map(str, (target.batch, *shape)))}"
    return entry


def _onnx_input(name: str, path: Path) -> tuple[str, list[int]]:
    """The one image input of an ONNX file (name, dims with -1 for a symbolic one); a file that keeps
    weights outside itself is refused, as the bundle carries one file per candidate."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise UserError(
            f"candidate {name}: {path.name} is not a readable ONNX file ({type(exc).__name__})"
        ) from None
    graph = model.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise UserError(
            f"candidate {name}: {path.name} keeps its weights in another file; export it as one file"
        )
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise UserError(
            f"candidate {name}: {path.name} has {len(inputs)} inputs; a bundle times one-input networks"
        )
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def _check_folder(out: Path) -> None:
    """Refuse (one line) a folder that is neither new, empty, nor a bundle kdforge wrote."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{_where(out)} is not a folder; choose a new or empty folder for the bundle")
    entries = sorted(os.listdir(out))[:1000]
    foreign = [
        e for e in entries if e not in BUNDLE_ENTRIES and not (e.startswith(".") and e.endswith(".tmp"))
    ]
    if entries and (foreign or LOCK_NAME not in entries):
        held = ", ".join(repr(e[:40]) for e in (foreign or entries)[:3])
        raise UserError(
            f"{_where(out)} holds files kdforge did not write for a bundle ({held}); choose a new or empty "
            "folder for the bundle"
        )
    for entry in (MODELS, NATIVE):
        if (out / entry).is_symlink() or ((out / entry).exists() and not (out / entry).is_dir()):
            raise UserError(f"{_where(out / entry)} is not a folder of the bundle; choose a new folder")


def _copy(source: Path, dest: Path) -> None:
    """`source` copied to `dest` atomically (a link planted at `dest` is replaced, never followed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)


def _runner_sources() -> list[Path]:
    """The native runner's sources and CMake files, as `kdforge build-native` builds them."""
    from kdforge.export.native.build import SOURCE_DIR

    found = sorted({p for pattern in SOURCE_PATTERNS for p in SOURCE_DIR.glob(pattern) if p.is_file()})
    if not any(p.name == "CMakeLists.txt" for p in found):
        raise UserError(f"no CMakeLists.txt in {SOURCE_DIR}: this kdforge install lacks the runner's sources")
    return found


def _script(target: Target, policy: TimingPolicy, candidates: list[dict[str, Any]]) -> str:
    """measure.sh: the template with this bundle's settings and candidates, every value shell-quoted."""
    if not TEMPLATE.is_file():
        raise UserError(f"{TEMPLATE.name} is missing from this kdforge install; reinstall kdforge")
    settings = {
        "BACKEND": target.backend,
        "PRECISION": target.precision,
        "BATCH": str(target.batch),
        "THREADS": "" if target.threads is None else str(target.threads),
        "WARMUP_MS": f"{1000 * policy.warmup_s:.3f}",  # kdforge-runner's flags, as run_native passes them
        "MIN_ITERS": str(policy.min_iterations),
        "MIN_MS": f"{1000 * policy.min_duration_s:.3f}",
        "TRT_WARMUP_MS": str(round(1000 * policy.warmup_s)),  # trtexec takes whole ms and seconds
        "TRT_DURATION_S": str(max(1, math.ceil(policy.min_duration_s))),
        "TOOLS": " ".join(TOOLS[target.backend]),
        "RUNNER_BACKEND": target.backend,
    }
    lines = "\n".join(f"{key}={shlex.quote(value)}" for key, value in settings.items())
    calls = "\n".join(
        shlex.join(["measure", c["name"], c["file"], c["sha256"], c["trtexec_shapes"]]) for c in candidates
    )
    return TEMPLATE.read_text().replace("@SETTINGS@", lines).replace("@CANDIDATES@", calls)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked manifest.json of the bundle in `folder`; one line when it is not one kdforge wrote."""
    path = Path(folder) / MANIFEST
    text = _read_bounded(path, MAX_MANIFEST_BYTES)
    hint = "write the bundle again with kdforge"
    try:
        manifest = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise UserError(f"{_where(path)} is not JSON; {hint}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise UserError(f"{_where(path)} is not a kdforge bundle manifest; {hint}")
    if manifest.get("version") != BUNDLE_VERSION:
        raise UserError(
            f"{_where(path)} is bundle version {shown(manifest.get('version'))}, not {BUNDLE_VERSION}; {hint}"
        )
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise UserError(f"{_where(path)}: {problem}; {hint}")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's target, input shape, policy or candidates (None: nothing)."""
    given = manifest.get("target")
    fields = {f.name for f in dataclasses.fields(Target)}
    if not isinstance(given, dict) or set(given) != fields:
        return "its target is not a target"
    target = Target(**given)
    if target_problem(target) is not None or target.backend not in TOOLS:
        return f"its target {shown(given)} is not one a bundle times"
    shape = manifest.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3 or not all(type(d) is int and d > 0 for d in shape):
        return "its input_shape is not (C, H, W)"
    policy = manifest.get("policy")
    policy_fields = {f.name for f in dataclasses.fields(TimingPolicy)}
    if (
        not isinstance(policy, dict)
        or set(policy) != policy_fields
        or not all(type(v) in (int, float) and v >= 0 for v in policy.values())
    ):
        return "its policy is not a timing policy"
    candidates = manifest.get("candidates")
    if not isinstance(candidates, list) or not 0 < len(candidates) <= MAX_CANDIDATES:
        return "it lists no candidates"
    names = set()
    for candidate in candidates:
        if not isinstance(candidate, dict) or not isinstance(candidate.get("name"), str):
            return "a candidate is not a record with a name"
        name = candidate["name"]
        suffix = ".pt2" if target.backend == "aoti" else ".onnx"
        if not NAME.fullmatch(name) or name in names:
            return f"candidate name {shown(name)} is not a plain, unique name"
        if candidate.get("file") != f"{MODELS}/{name}{suffix}":
            return f"candidate {name}'s file is not {MODELS}/{name}{suffix}"
        if not isinstance(candidate.get("sha256"), str) or not SHA256.fullmatch(candidate["sha256"]):
            return f"candidate {name}'s sha256 is not a SHA-256"
        names.add(name)
    return None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number kdforge writes")


def _read_bounded(path: Path, limit: int, optional: bool = False) -> str | None:
    """The UTF-8 text of the regular file at `path` (not a link), at most `limit` bytes; None when it is
    absent and `optional`; everything else one line."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if optional:
            return None
        raise UserError(
            f"{_where(path)} not found; run the bundle's measure.sh on the device first"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(
                f"{_where(path)} is a symbolic link; kdforge reads only real files from a bundle: put the "
                "file itself there"
            ) from None
        raise UserError(f"cannot read {_where(path)}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{_where(path)} is not a regular file; put the file itself there")
        data = handle.read(limit + 1) if info.st_size <= limit else None
    if data is None or len(data) > limit:  # too big, or grew while read
        raise UserError(
            f"{_where(path)} is over {limit >> 20} MiB, more than a bundle's files hold; time again"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{_where(path)} is not UTF-8 text") from None


def import_rows(results: Path, manifest_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """name -> latency row (time_files' form, plus `imported`: the file it came from) of every candidate of
    the bundle in `manifest_dir` (default: the parent of `results`) that measure.sh timed. Candidate names
    come from the manifest only; every file is bounded, every row checked; results of another file than
    the manifest's (its SHA-256) are refused. kdforge-runner's results win over trtexec's."""
    results = Path(results)
    manifest = read_manifest(Path(manifest_dir) if manifest_dir is not None else results.parent)
    if results.is_symlink() or not results.is_dir():
        raise UserError(
            f"{_where(results)} is not a results folder; run the bundle's measure.sh on the device"
        )
    machine = " ".join(
        (_read_bounded(results / "machine.txt", 4096, optional=True) or "unknown device").split()
    )
    rows = {}
    for candidate in manifest["candidates"]:
        name = candidate["name"]
        runner, trtexec = results / f"{name}.json", results / f"{name}.trtexec.json"
        if runner.exists() or runner.is_symlink():
            source, row = runner, _runner_row(runner, candidate, manifest)
        elif trtexec.exists() or trtexec.is_symlink():
            source, row = trtexec, _trtexec_row(trtexec, manifest)
        else:
            continue
        digest = (_read_bounded(results / f"{name}.sha256", 256, optional=True) or "").strip()
        if digest != candidate["sha256"]:
            raise UserError(
                f"results of {name} are of another file than the manifest's {candidate['file']} (results/"
                f"{name}.sha256 {'differs' if digest else 'is missing'}); run this bundle's measure.sh again"
            )
        rows[name] = {**_finished(row, candidate, manifest, machine), "imported": str(source)}
    if not rows:
        raise UserError(
            f"{_where(results)} holds no results of this bundle's candidates; run its measure.sh on the "
            "device first (docs/budget.md)"
        )
    return rows


def _runner_row(path: Path, candidate: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The checked kdforge-runner row of one candidate at the bundle's batch."""
    text = _read_bounded(path, MAX_RESULT_BYTES) or ""
    source = f"results/{path.name}"
    try:
        rows = read_rows(text, source, "; run measure.sh again")
        version = json.loads(text).get("version")
    except (ValueError, RecursionError):
        raise UserError(f"{source} is not a kdforge-runner report; run measure.sh again") from None
    target = manifest["target"]
    row = next((r for r in rows if r["batch"] == target["batch"]), None)
    if row is None:
        raise UserError(f"{source} has no row at batch {target['batch']}; run measure.sh again")
    expected = (
        f"{candidate['name']}.engine" if target["backend"] == "tensorrt" else Path(candidate["file"]).name
    )
    if row.get("file") != expected:
        raise UserError(f"{source} times {shown(row.get('file'))}, not {expected}; run measure.sh again")
    if row.get("precision") not in (None, target["precision"]):
        raise UserError(f"{source} times precision {shown(row.get('precision'))}, not {target['precision']}")
    _require_finite(row, source)
    version = printable(version, 40) if isinstance(version, str) else "unknown"
    return {
        **row,
        "backend": f"native-{row['backend']}",
        "tool": "kdforge-runner",
        "backend_version": f"kdforge-runner {version}",
    }


def _trtexec_row(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """The row of one candidate's trtexec --exportTimes file (its version from trtexec's log)."""
    text = _read_bounded(path, MAX_RESULT_BYTES) or ""
    samples, field = trtexec_samples(text, f"results/{path.name}")
    log = _read_bounded(
        path.with_name(path.name.removesuffix(".json") + ".log"), MAX_RESULT_BYTES, optional=True
    )
    row = trtexec_row(samples, manifest["target"]["batch"], field)
    return {**row, "tool": "trtexec", "backend_version": trtexec_version(log or "")}


def _require_finite(row: dict[str, Any], source: str) -> None:
    """Refuse a row with an infinite or NaN figure (JSON from a file may hold them)."""
    numbers = [row[k] for k, kind in ROW_FIELDS.items() if kind == (int, float)] + list(row["samples_ms"])
    if not all(math.isfinite(v) for v in numbers):
        raise UserError(f"{source} holds a figure that is not finite; run measure.sh again")


def _finished(
    row: dict[str, Any], candidate: dict[str, Any], manifest: dict[str, Any], machine: str
) -> dict[str, Any]:
    """A row in time_files' form: scalar fields only (strings made printable), without samples."""
    kept = {
        key: printable(value, 200) if isinstance(value, str) else value
        for key, value in row.items()
        if key != "samples_ms" and (value is None or isinstance(value, str | int | float | bool))
    }
    target = manifest["target"]
    kept.setdefault("threads", target["threads"])
    return {
        **kept,
        "precision": target["precision"],
        "cached": False,
        "sha256": candidate["sha256"],
        "machine": printable(machine, 200),
        "input_shape": manifest["input_shape"],
        "policy": manifest["policy"],
    }
