"""The TensorRT layer: one-line refusals without TensorRT or a GPU, sidecar checks of engine files (which need
no TensorRT), our calls against a fake of TensorRT's documented Python API, and, where TensorRT and a GPU are
present, real engines compared with ONNX Runtime."""

from __future__ import annotations

import enum
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.export.onnx import onnx_metadata, ort_session, to_onnx
from kdforge.export.sidecar import PREPROCESSING_KEYS, sha256, sidecar_path, write_sidecar
from kdforge.export.tensorrt import (
    INSTALL_HINT,
    REBUILD_HINT,
    EngineOptions,
    TensorRTEngine,
    build_engine,
    engine_metadata,
    require_tensorrt,
    tensorrt_status,
)

METADATA = {
    "classes": [f"c{i}" for i in range(10)],
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
    "input_shape": [3, 16, 16],
    "arch": "resnet8",
}


def one_line(message: str) -> str:
    assert "\n" not in message, f"expected one line, got {message!r}"
    return message


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (dynamic-batch) ONNX file exported by the repo from a small network."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("trt-onnx")
    return to_onnx(
        build("resnet8", num_classes=10).eval(), folder / "m.onnx", (1, 3, 16, 16), metadata=METADATA
    )


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import tensorrt` fails here, as on a machine without it (None in sys.modules halts the import)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


# ---------------------------------------------------------------------------------------------------------
# Without TensorRT


def test_require_tensorrt_without_tensorrt_is_one_line_naming_the_install(no_tensorrt: None) -> None:
    with pytest.raises(UserError) as caught:
        require_tensorrt()
    message = one_line(str(caught.value))
    assert "TensorRT is not installed" in message and "pip install 'kdforge[tensorrt]'" in message
    usable, detail = tensorrt_status()
    assert usable is False and one_line(detail) == message
    assert INSTALL_HINT in detail


def test_build_engine_without_tensorrt_leaves_nothing_behind(
    no_tensorrt: None, small_onnx: Path, tmp_path: Path
):
    engine = tmp_path / "out" / "m.engine"
    with pytest.raises(UserError, match="pip install 'kdforge\\[tensorrt\\]'") as caught:
        build_engine(small_onnx, engine, "fp32")
    one_line(str(caught.value))
    assert not engine.exists() and not sidecar_path(engine).exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (EngineOptions(min_batch=0), "min_batch must be at least 1"),
        (EngineOptions(min_batch=8, opt_batch=4, max_batch=16), "min <= opt <= max"),
        (EngineOptions(opt_batch=512, max_batch=256), "min <= opt <= max"),
        (EngineOptions(min_batch=32, max_batch=16), "min <= opt <= max"),
        (EngineOptions(workspace_mb=0), "workspace_mb must be at least 1"),
        (EngineOptions(optimization_level=6), "optimization_level must be 0-5"),
        (EngineOptions(optimization_level=-1), "optimization_level must be 0-5"),
        (EngineOptions(max_batch=2.5), "max_batch must be an integer"),  # type: ignore[arg-type]
        (EngineOptions(opt_batch=True), "opt_batch must be an integer or None"),
    ],
)
def test_engine_options_refuse_bad_values_in_one_line(options: EngineOptions, expected: str) -> None:
    with pytest.raises(UserError, match=expected) as caught:
        options.check()
    one_line(str(caught.value))


def test_engine_options_default_opt_batch_is_clamped_into_the_range() -> None:
    EngineOptions().check()
    assert EngineOptions().opt == 64
    assert EngineOptions(max_batch=16).opt == 16
    assert EngineOptions(min_batch=128, max_batch=256).opt == 128
    assert EngineOptions(opt_batch=8).opt == 8


# ---------------------------------------------------------------------------------------------------------
# Engine files checked against their sidecars (no TensorRT needed)


@pytest.fixture
def engine_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.engine"
    path.write_bytes(bytes(range(256)) * 4)
    write_sidecar(path, {"kind": "tensorrt-engine", "tensorrt": "10.9.0", "gpu": "Some GPU", **METADATA})
    return path


def test_engine_metadata_returns_the_checked_record(engine_file: Path) -> None:
    record = engine_metadata(engine_file)
    assert record["kind"] == "tensorrt-engine" and record["classes"] == METADATA["classes"]
    assert record["sha256"] == sha256(engine_file) and record["bytes"] == 1024


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip], ids=["truncated", "flipped-byte"])
def test_a_damaged_engine_is_called_corrupt_in_one_line(engine_file: Path, damage) -> None:
    damage(engine_file)
    with pytest.raises(UserError) as caught:
        engine_metadata(engine_file)
    message = one_line(str(caught.value))
    assert "m.engine is corrupt" in message and message.endswith(REBUILD_HINT)


def test_sidecar_missing_garbage_or_of_another_kind_is_one_line(engine_file: Path) -> None:
    sidecar = sidecar_path(engine_file)
    record = json.loads(sidecar.read_text())

    sidecar.write_text(json.dumps({**record, "kind": "aoti-package"}))
    with pytest.raises(UserError, match=r"is not a TensorRT engine .*'aoti-package'") as caught:
        engine_metadata(engine_file)
    one_line(str(caught.value))

    sidecar.write_text("{not json")
    with pytest.raises(UserError, match="not a kdforge sidecar") as caught:
        engine_metadata(engine_file)
    one_line(str(caught.value))

    sidecar.unlink()
    with pytest.raises(UserError, match=r"has no sidecar m\.engine\.json") as caught:
        engine_metadata(engine_file)
    assert one_line(str(caught.value)).endswith(REBUILD_HINT)

    with pytest.raises(UserError, match="not found") as caught:
        engine_metadata(engine_file.with_name("absent.engine"))
    one_line(str(caught.value))


def test_engine_checks_corruption_before_it_needs_tensorrt(engine_file: Path, no_tensorrt: None) -> None:
    _truncate(engine_file)
    with pytest.raises(UserError) as caught:
        TensorRTEngine(engine_file)
    message = one_line(str(caught.value))
    assert "corrupt" in message and "not installed" not in message
    # an intact file gets past the check and only then asks for TensorRT
    write_sidecar(engine_file, {"kind": "tensorrt-engine"})
    with pytest.raises(UserError, match="TensorRT is not installed"):
        TensorRTEngine(engine_file)


# ---------------------------------------------------------------------------------------------------------
# Our calls against TensorRT's documented Python API.
#
# The fake below implements only the documented surface build_engine uses (names from NVIDIA's Python API
# reference for TensorRT 10.x/11.x) and records what it is given. It checks our calls against that API
# surface, not TensorRT itself: it builds nothing. It has no BuilderFlag and no set_flag, as TensorRT 11
# has no FP16/INT8 flags, so a call to them fails here.

CACHE_MAGIC = b"FAKE-TRT-TIMING-CACHE"


def make_fake_tensorrt(
    *,
    strongly_typed_value: int = 1,
    version: str = "10.9.0.34",
    parse_error: str | None = None,
    build_fails: bool = False,
    engine_bytes: bytes = b"\x00fake serialized engine\xff" * 8,
) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    calls: dict[str, Any] = {"loaded_caches": []}
    trt.calls = calls

    class Logger:
        WARNING = "WARNING"

        def __init__(self, min_severity: str = "WARNING") -> None:
            calls["logger_severity"] = min_severity

    class NetworkDefinitionCreationFlag(enum.IntEnum):  # pybind11 enums convert with int() like this
        STRONGLY_TYPED = strongly_typed_value

    class MemoryPoolType(enum.Enum):  # members are passed as themselves, never as integers
        WORKSPACE = "workspace"

    class TensorIOMode(enum.Enum):
        INPUT = "input"
        OUTPUT = "output"

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.inputs: list[types.SimpleNamespace] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, index: int) -> types.SimpleNamespace:
            return self.inputs[index]

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

    class OnnxParser:
        def __init__(self, network: Network, logger: Logger) -> None:
            self.network, self.errors = network, []

        def _read(self, model: onnx.ModelProto) -> bool:
            if parse_error is not None:
                self.errors.append(ParserError(parse_error))
                return False
            weights = {t.name for t in model.graph.initializer}
            for value in model.graph.input:
                if value.name not in weights:  # symbolic dims become -1, as in TensorRT
                    dims = tuple(
                        d.dim_value if d.HasField("dim_value") else -1
                        for d in value.type.tensor_type.shape.dim
                    )
                    self.network.inputs.append(types.SimpleNamespace(name=value.name, shape=dims))
            return True

        def parse_from_file(self, model: str) -> bool:
            calls["parsed_file"] = model
            return self._read(onnx.load(model))

        def parse(self, model: bytes, path: str | None = None) -> bool:
            calls["parsed_bytes"] = len(model)
            return self._read(onnx.load_from_string(bytes(model)))

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> ParserError:
            return self.errors[index]

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
            self.shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class TimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob or CACHE_MAGIC

        def serialize(self) -> memoryview:  # IHostMemory: a buffer
            return memoryview(self.blob)

    class BuilderConfig:
        def __init__(self) -> None:
            self.profiles: list[OptimizationProfile] = []
            self.pools: dict[MemoryPoolType, int] = {}
            self.builder_optimization_level = 3
            self.timing_cache: TimingCache | None = None

        def add_optimization_profile(self, profile: OptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
            assert isinstance(pool, MemoryPoolType)
            self.pools[pool] = pool_size

        def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCache | None:
            blob = bytes(serialized_timing_cache)
            if blob and not blob.startswith(CACHE_MAGIC):
                return None  # a blob TensorRT cannot verify
            calls["loaded_caches"].append(blob)
            return TimingCache(blob)

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.timing_cache

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            calls["network"] = Network(flags)
            return calls["network"]

        def create_builder_config(self) -> BuilderConfig:
            calls["config"] = BuilderConfig()
            return calls["config"]

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> memoryview | None:
            calls["built_network"] = network
            if build_fails:
                return None
            if config.timing_cache is not None:  # building adds timings to the attached cache
                config.timing_cache.blob += b"|timed"
            return memoryview(engine_bytes)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine: bytes) -> None:
            calls["deserialized"] = len(serialized_engine)
            return None  # what TensorRT returns for an engine from another version or GPU

    for cls in (
        Logger,
        NetworkDefinitionCreationFlag,
        MemoryPoolType,
        TensorIOMode,
        OnnxParser,
        Builder,
        Runtime,
    ):
        setattr(trt, cls.__name__, cls)
    trt.engine_bytes = engine_bytes
    return trt


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))


def install(monkeypatch: pytest.MonkeyPatch, **kw: Any) -> types.ModuleType:
    fake = make_fake_tensorrt(**kw)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def test_require_tensorrt_needs_a_gpu_and_a_supported_version(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(
        UserError, match=r"needs a CUDA GPU .*torch\.cuda\.is_available\(\) is False"
    ) as caught:
        require_tensorrt()
    one_line(str(caught.value))
    assert tensorrt_status()[0] is False

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    install(monkeypatch, version="8.6.1")
    with pytest.raises(UserError, match=r"TensorRT 8\.6\.1 is not supported; .*10\.x and 11\.x") as caught:
        require_tensorrt()
    one_line(str(caught.value))


@pytest.mark.parametrize("version", ["10.3.0", "11.0.0"])
def test_tensorrt_status_names_version_and_gpu(monkeypatch: pytest.MonkeyPatch, fake_gpu: None, version: str):
    fake = install(monkeypatch, version=version)
    assert require_tensorrt() is fake
    assert tensorrt_status() == (True, f"tensorrt {version}: GPU Fake GPU (compute capability 9.0)")


@pytest.mark.parametrize("strongly_typed_value", [1, 0], ids=["flag-bit-1", "flag-bit-0"])
def test_build_engine_calls_the_documented_api(
    monkeypatch: pytest.MonkeyPatch,
    fake_gpu: None,
    small_onnx: Path,
    tmp_path: Path,
    strongly_typed_value: int,
) -> None:
    fake = install(monkeypatch, strongly_typed_value=strongly_typed_value)
    options = EngineOptions(min_batch=2, opt_batch=8, max_batch=32, workspace_mb=256, optimization_level=4)
    engine = build_engine(small_onnx, tmp_path / "engines" / "m.engine", "fp16", options)

    calls = fake.calls
    assert calls["network"].flags == 1 << strongly_typed_value  # only the STRONGLY_TYPED bit
    assert calls["parsed_file"] == str(small_onnx) and calls["built_network"] is calls["network"]
    config = calls["config"]
    (profile,) = config.profiles
    assert profile.shapes == {"input": ((2, 3, 16, 16), (8, 3, 16, 16), (32, 3, 16, 16))}
    assert config.pools == {fake.MemoryPoolType.WORKSPACE: 256 * 2**20}
    assert config.builder_optimization_level == 4
    assert calls["logger_severity"] == fake.Logger.WARNING

    assert engine.read_bytes() == fake.engine_bytes
    record = engine_metadata(engine)
    assert record["kind"] == "tensorrt-engine" and record["precision"] == "fp16"
    assert record["tensorrt"] == "10.9.0.34" and record["gpu"] == "Fake GPU"
    assert record["compute_capability"] == "9.0"
    assert record["profile"] == {
        "input": {"min": [2, 3, 16, 16], "opt": [8, 3, 16, 16], "max": [32, 3, 16, 16]}
    }
    assert record["options"]["max_batch"] == 32 and record["options"]["workspace_mb"] == 256
    assert record["source_onnx"] == "m.onnx" and record["source_onnx_sha256"] == sha256(small_onnx)
    assert record["built_seconds"] >= 0
    assert record["sha256"] == sha256(engine)
    for key in (*PREPROCESSING_KEYS, "arch"):
        assert record[key] == onnx_metadata(small_onnx)[key] == METADATA[key]
    assert "name" not in record  # copied only when the ONNX has it

    cache = tmp_path / "engines" / "timing.cache"
    assert cache.read_bytes() == CACHE_MAGIC + b"|timed"
    assert calls["loaded_caches"] == [b""]  # the first build starts a new cache


def test_a_second_build_loads_the_timing_cache_and_a_corrupt_one_is_ignored(
    monkeypatch: pytest.MonkeyPatch, fake_gpu: None, small_onnx: Path, tmp_path: Path
) -> None:
    fake = install(monkeypatch)
    cache = tmp_path / "timing.cache"
    build_engine(small_onnx, tmp_path / "a.engine", "fp32")
    written = cache.read_bytes()
    fake = install(monkeypatch)
    build_engine(small_onnx, tmp_path / "b.engine", "fp32")
    assert fake.calls["loaded_caches"] == [written]
    assert cache.read_bytes() == written + b"|timed"

    cache.write_bytes(b"\x00garbage")
    fake = install(monkeypatch)
    with pytest.warns(UserWarning, match="ignoring timing cache .*timing.cache"):
        build_engine(small_onnx, tmp_path / "c.engine", "fp32")
    assert fake.calls["loaded_caches"] == [b""] and cache.read_bytes() == CACHE_MAGIC + b"|timed"

    fake = install(monkeypatch)
    cache.unlink()
    build_engine(small_onnx, tmp_path / "d.engine", "fp32", EngineOptions(timing_cache=False))
    assert fake.calls["config"].timing_cache is None and not cache.exists()


def test_parser_and_builder_failures_are_one_line_and_write_nothing(
    monkeypatch: pytest.MonkeyPatch, fake_gpu: None, small_onnx: Path, tmp_path: Path
) -> None:
    engine = tmp_path / "m.engine"
    install(monkeypatch, parse_error="In node 3 (Conv):\n UNSUPPORTED_NODE: no importer for op Foo")
    with pytest.raises(UserError) as caught:
        build_engine(small_onnx, engine, "fp32")
    message = one_line(str(caught.value))
    assert (
        message == "TensorRT cannot parse m.onnx: In node 3 (Conv): UNSUPPORTED_NODE: no importer for op Foo"
    )

    install(monkeypatch, build_fails=True)
    with pytest.raises(
        UserError, match=r"TensorRT could not build an engine from m\.onnx on Fake GPU"
    ) as caught:
        build_engine(small_onnx, engine, "fp32")
    one_line(str(caught.value))
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(UserError, match="not 'int8-u8'") as caught:
        build_engine(small_onnx, engine, "int8-u8")
    one_line(str(caught.value))


def test_an_engine_this_tensorrt_cannot_deserialize_names_both_versions(
    monkeypatch: pytest.MonkeyPatch, fake_gpu: None, engine_file: Path
) -> None:
    fake = install(monkeypatch, version="10.3.0")
    with pytest.raises(UserError) as caught:
        TensorRTEngine(engine_file)
    message = one_line(str(caught.value))
    assert fake.calls["deserialized"] == 1024
    assert message == (
        "m.engine cannot be deserialized by TensorRT 10.3.0 on this GPU (Fake GPU) "
        f"(built with TensorRT 10.9.0 on Some GPU); {REBUILD_HINT}"
    )


# ---------------------------------------------------------------------------------------------------------
# Real TensorRT on a GPU


REAL_TENSORRT = pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available(),
    reason="needs TensorRT and a CUDA GPU (skipped before any fixture work: no ONNX export)",
)


def _real_tensorrt() -> None:
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed here (its wheels need an NVIDIA GPU host)"
    )
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU and torch.cuda.is_available() is False here")


@pytest.fixture(scope="module")
def real_engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _real_tensorrt()  # skip with the reason before any work (the ONNX export below)
    small_onnx = request.getfixturevalue("small_onnx")
    from kdforge.export.quantize import to_fp16

    folder = tmp_path_factory.mktemp("trt-engines")
    options = EngineOptions(min_batch=1, opt_batch=8, max_batch=16, optimization_level=1)
    half = to_fp16(small_onnx, folder / "m-fp16.onnx")
    return {
        "fp32": build_engine(small_onnx, folder / "m-fp32.engine", "fp32", options),
        "fp16": build_engine(half, folder / "m-fp16.engine", "fp16", options),
    }


@pytest.mark.tensorrt
@pytest.mark.gpu
@REAL_TENSORRT
@pytest.mark.parametrize(("precision", "rtol", "atol"), [("fp32", 1e-3, 1e-4), ("fp16", 2e-2, 2e-2)])
def test_real_engine_matches_onnx_runtime(
    real_engines: dict[str, Path], small_onnx: Path, precision: str, rtol: float, atol: float
) -> None:
    engine = TensorRTEngine(real_engines[precision])
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    got = engine.infer(images)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    expected = ort_session(small_onnx).run(None, {"input": images.numpy().astype(np.float32)})[0]
    np.testing.assert_allclose(got.numpy(), expected, rtol=rtol, atol=atol)
    assert (got.numpy().argmax(1) == expected.argmax(1)).mean() >= 0.75
    description = engine.describe()
    assert description["precision"] == precision and description["copies_included"] is False


@pytest.mark.tensorrt
@pytest.mark.gpu
@REAL_TENSORRT
def test_real_engine_cuda_graph_replay_equals_plain_execution(real_engines: dict[str, Path]) -> None:
    outputs = []
    for cuda_graph in (False, True):
        engine = TensorRTEngine(real_engines["fp32"], cuda_graph=cuda_graph)
        torch.manual_seed(3)  # the same random input for both
        run = engine.prepare(4)
        first = run()
        engine.sync()
        result = first.clone()
        again = run()
        engine.sync()
        torch.testing.assert_close(again, result)  # a replay writes the same output buffer again
        outputs.append(result)
        assert result.shape == (4, 10)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)


@pytest.mark.tensorrt
@pytest.mark.gpu
@REAL_TENSORRT
def test_real_engine_refuses_batches_outside_its_profile(real_engines: dict[str, Path]) -> None:
    engine = TensorRTEngine(real_engines["fp32"])
    with pytest.raises(UserError, match="takes batches 1-16") as caught:
        engine.prepare(17)
    one_line(str(caught.value))
    assert engine.infer(torch.randn(40, 3, 16, 16)).shape == (40, 10)  # larger inputs run in chunks
