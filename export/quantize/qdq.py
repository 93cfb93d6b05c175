"""Graph passes on a Q/DQ model after ONNX Runtime's quantizer, for the form TensorRT builds best.

- `fuse_residual_adds`: TensorRT fuses an element-wise Add into the convolution that produces one of its
  inputs when that input is *not* quantized and the other (the residual) is; the developer guide's Q/DQ
  placement advice is "quantize the residual input", and NVIDIA Model Optimizer's ONNX PTQ emits exactly
  that. ONNX Runtime's quantizer puts a Q/DQ pair on both Add inputs; this removes the pair on the input
  a weighted operator produces (the first such input when both are).
- `drop_unused_opsets`: the quantizer's pre-processing imports every domain ONNX Runtime knows
  (com.microsoft, ...); a file should import only the domains its nodes use.
"""

from __future__ import annotations

import onnx

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output if output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                users.setdefault(name, []).append(node)
    return users


def _pair_from_weighted(
    tensor: str, producers: dict[str, onnx.NodeProto], users: dict[str, list[onnx.NodeProto]]
) -> tuple[onnx.NodeProto, onnx.NodeProto, str] | None:
    """(Q, DQ, float tensor) when `tensor` is the DQ of a Q of a weighted op's output, used only here."""
    dq = producers.get(tensor)
    if dq is None or dq.op_type != "DequantizeLinear" or len(users.get(tensor, [])) != 1:
        return None
    q = producers.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear" or len(users.get(q.output[0], [])) != 1:
        return None
    source = producers.get(q.input[0])
    if source is None or source.op_type not in WEIGHTED:
        return None
    return q, dq, q.input[0]


def fuse_residual_adds(model: onnx.ModelProto) -> int:
    """Unquantize, on each Add, the input a weighted operator produces (in place); returns how many."""
    graph = model.graph
    producers, users = _producers(graph), _consumers(graph)
    removed: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        pairs = [_pair_from_weighted(name, producers, users) for name in node.input]
        quantized = [
            producers.get(name) is not None and producers[name].op_type == "DequantizeLinear"
            for name in node.input
        ]
        if not all(quantized):
            continue  # only rewrite an Add whose inputs are both quantized
        index = next((i for i, pair in enumerate(pairs) if pair is not None), None)
        if index is None:
            continue
        q, dq, tensor = pairs[index]  # type: ignore[misc]
        node.input[index] = tensor
        removed += [q, dq]
    keep = [n for n in graph.node if all(n is not r for r in removed)]
    del graph.node[:]
    graph.node.extend(keep)
    _drop_unused_initializers(graph)
    return len(removed) // 2


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Keep only the ai.onnx import and the domains some node (or local function) uses (in place)."""
    used = {node.domain for node in model.graph.node} | {f.domain for f in model.functions}
    for function in model.functions:
        used |= {node.domain for node in function.node}
    keep = [o for o in model.opset_import if o.domain in ("", "ai.onnx") or o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
