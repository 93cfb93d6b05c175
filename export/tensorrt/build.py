"""`build_engine`: an ONNX file -> a serialized TensorRT engine plus its JSON sidecar.

Networks are strongly typed: the precision lives in the ONNX graph (fp32, fp16, or explicit Q/DQ int8), so
no FP16/INT8 builder flag is ever set (TensorRT 11 removed them). Enum members are named, never given as
integers, so the same code drives TensorRT 10.x and 11.x.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdforge.compress.atomic import atomic_write_bytes
from kdforge.compress.errors import UserError
from kdforge.export.sidecar import PREPROCESSING_KEYS, sha256, write_sidecar
from kdforge.export.tensorrt.availability import gpu_description, require_tensorrt, trt_logger

PRECISIONS = ("fp32", "fp16", "int8")  # int8: symmetric Q/DQ; ONNX Runtime CPU's int8-u8 form is not for TRT
DEFAULT_OPT_BATCH = 64
MAX_OPTIMIZATION_LEVEL = 5
TIMING_CACHE_NAME = "timing.cache"


@dataclass
class EngineOptions:
    """The batch range an engine accepts and how hard the builder works for it."""

    min_batch: int = 1
    opt_batch: int | None = None  # the batch TensorRT tunes for; None: 64 clamped into [min, max]
    max_batch: int = 256
    workspace_mb: int = 1024
    optimization_level: int = 3  # TensorRT's builder_optimization_level, 0 (fast build) to 5
    timing_cache: bool = True

    @property
    def opt(self) -> int:
        """The batch to tune for: `opt_batch`, or the default clamped into [min_batch, max_batch]."""
        if self.opt_batch is not None:
            return self.opt_batch
        return min(max(DEFAULT_OPT_BATCH, self.min_batch), self.max_batch)

    def check(self) -> None:
        """One UserError line for the first value out of range."""
        for name in ("min_batch", "max_batch", "workspace_mb", "optimization_level"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UserError(f"engine option {name} must be an integer, got {value!r}")
        if self.opt_batch is not None and (
            not isinstance(self.opt_batch, int) or isinstance(self.opt_batch, bool)
        ):
            raise UserError(f"engine option opt_batch must be an integer or None, got {self.opt_batch!r}")
        if self.min_batch < 1:
            raise UserError(f"engine option min_batch must be at least 1, got {self.min_batch}")
        if not self.min_batch <= self.opt <= self.max_batch:
            raise UserError(
                f"engine batches must satisfy min <= opt <= max, got min {self.min_batch}, opt {self.opt}, "
                f"max {self.max_batch}"
            )
        if self.workspace_mb < 1:
            raise UserError(f"engine option workspace_mb must be at least 1, got {self.workspace_mb}")
        if not 0 <= self.optimization_level <= MAX_OPTIMIZATION_LEVEL:
            raise UserError(
                f"engine option optimization_level must be 0-{MAX_OPTIMIZATION_LEVEL}, "
                f"got {self.optimization_level}"
            )


def _one_line(text: str) -> str:
    """Collapse whitespace (parser errors can span lines) so a message stays on one line."""
    return " ".join(str(text).split())[:300]


def _parse(trt: Any, builder: Any, onnx_path: Path) -> tuple[Any, Any]:
    """A strongly typed network holding the parsed ONNX graph, and its parser."""
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, trt_logger(trt))
    if not parser.parse_from_file(str(onnx_path)):
        first = _one_line(parser.get_error(0).desc()) if parser.num_errors > 0 else "no parser error reported"
        raise UserError(f"TensorRT cannot parse {onnx_path.name}: {first}")
    return network, parser  # the caller keeps the parser alive while the network is used


def _profile(builder: Any, network: Any, options: EngineOptions, onnx_name: str) -> tuple[Any, dict]:
    """An optimization profile over the batch range for every input, and its record for the sidecar."""
    profile = builder.create_optimization_profile()
    record: dict[str, dict[str, list[int]]] = {}
    if network.num_inputs < 1:
        raise UserError(f"{onnx_name} has no inputs; re-export it with `kdforge deploy`")
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        dims = [int(d) for d in tensor.shape]
        if len(dims) < 1 or any(d < 0 for d in dims[1:]):
            raise UserError(
                f"{onnx_name}: input {tensor.name} has shape {dims}; only the batch (first) dimension may be "
                "dynamic"
            )
        rest = dims[1:]
        if dims[0] < 0:
            batches = (options.min_batch, options.opt, options.max_batch)
        else:  # a fixed-batch export: the engine takes exactly that batch
            batches = (dims[0], dims[0], dims[0])
        low, opt, high = ([b, *rest] for b in batches)
        profile.set_shape(tensor.name, low, opt, high)
        record[tensor.name] = {"min": low, "opt": opt, "max": high}
    return profile, record


def _timing_cache(trt: Any, config: Any, path: Path) -> None:
    """Attach the timing cache stored at `path` (a fresh one if absent, corrupt or from another setup)."""
    data = b""
    if path.is_file():
        data = path.read_bytes()
    reason = "corrupt, or from another TensorRT version or GPU"
    try:
        cache = config.create_timing_cache(data)
    except Exception as exc:  # the bindings may raise on a malformed blob rather than return None
        cache, reason = None, _one_line(str(exc) or type(exc).__name__)
    if cache is None or not config.set_timing_cache(cache, False):
        if data:
            warnings.warn(f"ignoring timing cache {path} ({reason}); starting a new one", stacklevel=3)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)


def build_engine(
    onnx_path: str | Path, engine_path: str | Path, precision: str, options: EngineOptions | None = None
) -> Path:
    """Build `engine_path` from `onnx_path` (its graph already carries `precision`); write its sidecar."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    options = options or EngineOptions()
    options.check()
    if precision not in PRECISIONS:
        raise UserError(
            f"TensorRT engines are built for precision {', '.join(PRECISIONS)}, not {precision!r} "
            "(int8-u8 is ONNX Runtime CPU's form)"
        )
    if not onnx_path.is_file():
        raise UserError(f"{str(onnx_path)!r} not found; export the ONNX file first")
    trt = require_tensorrt()
    from kdforge.export.onnx import onnx_metadata

    metadata = onnx_metadata(onnx_path)
    gpu, capability = gpu_description()

    builder = trt.Builder(trt_logger(trt))
    network, _parser = _parse(trt, builder, onnx_path)
    config = builder.create_builder_config()
    profile, shapes = _profile(builder, network, options, onnx_path.name)
    config.add_optimization_profile(profile)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * 2**20)
    config.builder_optimization_level = options.optimization_level
    cache_path = engine_path.parent / TIMING_CACHE_NAME
    if options.timing_cache:
        _timing_cache(trt, config, cache_path)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    built_seconds = time.perf_counter() - started
    if serialized is None:
        raise UserError(
            f"TensorRT could not build an engine from {onnx_path.name} on {gpu} (its errors are printed "
            f"above); try a larger workspace_mb than {options.workspace_mb}"
        )
    atomic_write_bytes(engine_path, bytes(serialized))
    if options.timing_cache:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    first_input = next(iter(shapes.values()))
    info: dict[str, Any] = {
        key: metadata[key] for key in (*PREPROCESSING_KEYS, "name", "arch") if key in metadata
    }
    info.setdefault("input_shape", first_input["min"][1:])
    info.update(
        {
            "kind": "tensorrt-engine",
            "tensorrt": str(trt.__version__),
            "gpu": gpu,
            "compute_capability": capability,
            "precision": precision,
            "profile": shapes,
            "options": asdict(options),
            "source_onnx": onnx_path.name,
            "source_onnx_sha256": sha256(onnx_path),
            "built_seconds": round(built_seconds, 3),
        }
    )
    write_sidecar(engine_path, info)
    return engine_path
