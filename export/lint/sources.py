"""Where every lint rule comes from: one entry per document, with the version and date we read it at.

Each rule in `rules.py` names one of these keys; a Problem carries its `cite` line, so a user can open the
very page a rule was taken from. Read on 2026-12-01 (the onnx-tensorrt tables from the repository's
published `docs/operators.md`, NVIDIA's pages from docs.nvidia.com and github.com/NVIDIA/TensorRT).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleSource:
    """A document a rule is taken from."""

    key: str
    title: str
    version: str
    date: str
    url: str

    @property
    def cite(self) -> str:
        """One line: title, version and date (what `kdforge check` prints after each problem)."""
        return f"{self.title}, {self.version} ({self.date})"


SOURCES: dict[str, RuleSource] = {
    source.key: source
    for source in (
        RuleSource(
            "trt10-table",
            "onnx-tensorrt docs/operators.md",
            "TensorRT 10.15 GA table: opset 9-24",
            "release 2026-02-02",
            "https://github.com/onnx/onnx-tensorrt/blob/release/10.15-GA/docs/operators.md",
        ),
        RuleSource(
            "trt10.0-table",
            "onnx-tensorrt docs/operators.md",
            "TensorRT 10.0 table (tag release/10.1-GA, commit 96e7811): opset 9-20",
            "2024-06-17",
            "https://github.com/onnx/onnx-tensorrt/blob/release/10.1-GA/docs/operators.md",
        ),
        RuleSource(
            "trt10-parser",
            "onnx-tensorrt parser source: ModelImporter.cpp (importModel, importInput), onnxOpCheckers.cpp, "
            "onnxOpImporters.cpp, importerUtils.cpp (convertDtype, poolingHelper, elementwiseCheck)",
            "tag release/10.1-GA, commit 96e7811 (TensorRT 10.1 GA)",
            "2024-06-17",
            "https://github.com/onnx/onnx-tensorrt/tree/96e7811",
        ),
        RuleSource(
            "trt10.6-parser",
            "onnx-tensorrt docs/Changelog.md (10.3: tensor axes for Slice; 10.4: tensor axes for Pad) and "
            "onnxOpImporters.cpp Pad importer (tensor axes as the slice layer's input 5)",
            "commit 0137504e, changelog up to TensorRT 10.6 GA",
            "2024-11-01",
            "https://github.com/onnx/onnx-tensorrt/blob/0137504e2b25fe5253bd85d26b073378fb67805b/docs/Changelog.md",
        ),
        RuleSource(
            "trt10-changelog",
            "onnx-tensorrt docs/Changelog.md",
            "entries 10.0 GA to 10.15 GA",
            "2024-04-25 to 2026-02-02",
            "https://github.com/onnx/onnx-tensorrt/blob/release/10.15-GA/docs/Changelog.md",
        ),
        RuleSource(
            "trt11-notes",
            "NVIDIA/TensorRT release notes, parser sections",
            "11.0 (Swish), 11.2 (DFT, 5-D GridSample), 11.5 (opset 25, ONNX 1.22) over the 10.15 table",
            "2026-06-02 to 2026-11-18",
            "https://github.com/NVIDIA/TensorRT/releases/tag/v11.5",
        ),
        RuleSource(
            "trt-quant-guide",
            "TensorRT Developer Guide, Working with Quantized Types (explicit quantization)",
            "10.x and 11.0.0 editions",
            "read 2026-12-01",
            "https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/inference-library/work-quantized-types.html",
        ),
        RuleSource(
            "trt-parser-qdq",
            "onnx-tensorrt onnxOpImporters.cpp, QuantDequantLinearHelper",
            "release/10.1-GA",
            "2024-06-17",
            "https://github.com/onnx/onnx-tensorrt/blob/release/10.1-GA/onnxOpImporters.cpp",
        ),
        RuleSource(
            "trt-issue-850",
            "onnx/onnx-tensorrt#850 and microsoft/onnxruntime#14229 (int32 bias DequantizeLinear: "
            "'only activation types allowed as input to this layer')",
            "TensorRT 8.4-10.x reports",
            "2022-06-14, 2023-01-11",
            "https://github.com/onnx/onnx-tensorrt/issues/850",
        ),
        RuleSource(
            "trt-plugin-fallback",
            "onnx-tensorrt README, operator support / plugins (a node the parser has no importer for is "
            "looked up as a TensorRT plugin of the same name)",
            "10.x",
            "read 2026-12-01",
            "https://github.com/onnx/onnx-tensorrt#operator-support",
        ),
        RuleSource(
            "ort-qdq-options",
            "onnxruntime/quantization/qdq_quantizer.py (DedicatedQDQPair: 'In TRT, QDQ pair can't be shared "
            "between nodes')",
            "onnxruntime 1.32.0",
            "installed here",
            "https://github.com/microsoft/onnxruntime/blob/main/onnxruntime/python/tools/quantization/qdq_quantizer.py",
        ),
        RuleSource(
            "trt-builder",
            "TensorRT Developer Guide, Working with Dynamic Shapes (optimization profiles)",
            "10.x and 11.0.0 editions",
            "read 2026-12-01",
            "https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-dynamic-shapes.html",
        ),
        RuleSource(
            "ort-installed",
            "ONNX Runtime CPU execution provider installed here (InferenceSession and its kernel registry)",
            "installed version",
            "checked at lint time",
            "https://onnxruntime.ai/docs/reference/operators/OperatorKernels.html",
        ),
        RuleSource(
            "ort-versioning",
            "ONNX Runtime compatibility: opsets 7 and above are supported",
            "onnxruntime docs, Compatibility",
            "read 2026-12-01",
            "https://onnxruntime.ai/docs/reference/compatibility.html",
        ),
    )
}
