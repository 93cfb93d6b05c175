"""ONNX Runtime (CPU) readiness of an ONNX model, asked of the installed ONNX Runtime itself: its opset
range, its CPU kernel registry (every node, not only the first failure), then an InferenceSession on the
CPU execution provider, which is the authoritative answer."""

from __future__ import annotations

import functools
import re

import onnx
from kdforge.export.lint.graph import GraphView, default_opset, walk
from kdforge.export.lint.problem import Problem, make_problem

ORT_MIN_OPSET = 7  # "All versions of ONNX Runtime support ONNX opsets ... opset version 7 and higher"
_DOMAIN_ALIASES = {"ai.onnx": ""}
# Operators ONNX Runtime handles in its graph layer, never as a kernel: onnxruntime/core/graph/graph.cc
# turns every Constant node (main graph and subgraphs) into an initializer when it loads the model. The
# only other default-domain operators without a CPU kernel have function bodies, which it inlines.
ORT_GRAPH_LEVEL = {("", "Constant")}


def _session_options():  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


@functools.cache
def ort_max_opset() -> int:
    """The highest ai.onnx opset the installed ONNX Runtime loads a model at (probed once, a few ms)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    starts = [k.version_range[0] for k in state.get_all_opkernel_def() if k.domain == ""]
    opset = max(starts, default=ORT_MIN_OPSET)
    while True:
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
        graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset + 1)])
        model.ir_version = 8
        try:
            ort.InferenceSession(
                model.SerializeToString(), _session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception:  # ONNX Runtime raises its own Fail / InvalidGraph types
            return opset
        opset += 1


@functools.cache
def _cpu_kernels() -> dict[tuple[str, str], list[tuple[int, int]]]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    kernels: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for kernel in state.get_all_opkernel_def():
        if kernel.provider == "CPUExecutionProvider":
            kernels.setdefault((kernel.domain, kernel.op_name), []).append(tuple(kernel.version_range))
    return kernels


def _schema(op: str, opset: int, domain: str) -> onnx.defs.OpSchema | None:
    try:
        return onnx.defs.get_schema(op, opset, domain)
    except onnx.defs.SchemaError:
        return None


def check_onnxruntime(model: onnx.ModelProto, path: str | None = None) -> list[Problem]:
    """Every reason the installed ONNX Runtime's CPU provider would refuse `model`."""
    import onnxruntime as ort

    version = ort.__version__
    problems: list[Problem] = []
    opset = default_opset(model)
    highest = ort_max_opset()
    if opset is not None and not ORT_MIN_OPSET <= opset <= highest:
        problems.append(
            make_problem(
                "ort-opset", f"opset {opset}: onnxruntime {version} runs opsets {ORT_MIN_OPSET}-{highest}"
            )
        )
    problems += _kernels(model, version)
    if problems:
        return problems  # the session would fail on the first of these; they already name every node
    try:
        payload = str(path) if path is not None else model.SerializeToString()
        ort.InferenceSession(payload, _session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own Fail / InvalidGraph / NotImplemented types
        text = " ".join(str(exc).split())
        text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
        node = re.search(r"node with name '([^']*)'", text)
        problems.append(
            make_problem("ort-session", f"onnxruntime {version}: {text[:300]}", node.group(1) if node else "")
        )
    return problems


def _kernels(model: onnx.ModelProto, version: str) -> list[Problem]:
    view = GraphView(model)
    kernels = _cpu_kernels()
    local = {(f.domain, f.name) for f in model.functions}
    imports = {_DOMAIN_ALIASES.get(o.domain, o.domain): int(o.version) for o in model.opset_import}
    problems = []
    for node in walk(model.graph):
        domain = _DOMAIN_ALIASES.get(node.domain, node.domain)
        if (node.domain, node.op_type) in local or (domain, node.op_type) in ORT_GRAPH_LEVEL:
            continue
        ranges = kernels.get((domain, node.op_type))
        schema = _schema(node.op_type, imports.get(domain, 1), domain) if domain == "" else None
        if schema is not None and (schema.has_function or schema.has_context_dependent_function):
            continue  # ONNX Runtime inlines the operator's function body when it has no kernel
        if not ranges:
            where = f"domain '{domain}'" if domain else "ai.onnx"
            problems.append(
                make_problem(
                    "ort-kernel",
                    f"onnxruntime {version} has no CPU kernel for {node.op_type} ({where})",
                    view.name(node),
                    node.op_type,
                )
            )
            continue
        if schema is not None and not any(lo <= schema.since_version <= hi for lo, hi in ranges):
            problems.append(
                make_problem(
                    "ort-kernel",
                    f"onnxruntime {version} has no CPU kernel for {node.op_type} "
                    f"version {schema.since_version} "
                    f"(kernels cover {', '.join(f'{lo}-{hi}' for lo, hi in sorted(ranges))})",
                    view.name(node),
                    node.op_type,
                )
            )
    return problems
