"""Which ops of a ``.tflite`` file the TFLite GPU delegate and XNNPACK take.

TensorFlow's own check cannot be trusted: ``tf.lite.experimental.Analyzer.analyze(...,
gpu_compatibility=True)`` in TF 2.21 says "looks compatible with GPU delegate" for every file,
even one made of ``TOPK_V2`` and ``LOGICAL_OR`` (docs/mobile.md). So:

- **GPU delegate**: each op is checked here against the rules of
  ``tensorflow/lite/tools/versioning/gpu_compatibility.cc`` (``GPU_RULES``: the version read),
  written out in Python from that file, with the delegate's offline flag (enhanced
  broadcasting), plus the delegate's tensor shapes: BHWC, so no tensor above rank 4. No GPU
  runs here, so these are rules, not a measurement; an op the rules do not name is refused.
- **XNNPACK**: measured, not ruled: the file is loaded in LiteRT with its default delegate,
  and an op counts as taken when it lies inside one of the delegate's partitions (each
  ``DELEGATE`` node's outputs traced back to its inputs).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

from spade_tf.tf_internals import litert_nodes, tflite_schema

GPU_RULES = ("tensorflow/lite/tools/versioning/gpu_compatibility.cc at tensorflow/tensorflow "
             "03a5e4e19a9c8200e13c85f1c637877fdf589be6")

# ActivationFunctionType: the GPU delegate takes every fused activation but SIGN_BIT (5)
_SIGN_BIT = 5
# TensorType values used by the rules
_FLOAT32, _FLOAT16, _INT32, _BOOL, _INT16 = 0, 1, 2, 6, 7
_FLOATS = (_FLOAT32, _FLOAT16)

_UNARY = {"ABS", "CEIL", "COS", "ELU", "EXP", "FLOOR", "GELU", "LOG", "LOGISTIC", "NEG", "RSQRT",
          "SIGN", "SIN", "SQRT", "SQUARE", "TANH"}
_BINARY = {"ATAN2", "DIV", "EQUAL", "FLOOR_DIV", "FLOOR_MOD", "GREATER", "GREATER_EQUAL",
           "LOGICAL_AND", "LESS", "LESS_EQUAL", "MAXIMUM", "MINIMUM", "NOT_EQUAL", "POW",
           "SQUARED_DIFFERENCE", "SUB"}
_ALWAYS = {"PACK", "RELU_N1_TO_1", "PRELU", "SPLIT", "SPLIT_V", "RELU", "RELU6", "LEAKY_RELU",
           "CONCATENATION", "BATCH_MATMUL"}
_ONE_RUNTIME_INPUT = {"RESHAPE", "TILE", "TRANSPOSE", "RESIZE_BILINEAR",
                      "RESIZE_NEAREST_NEIGHBOR", "QUANTIZE", "HARD_SWISH"}
_REDUCE = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"}
_CUSTOM = {"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"}
MAX_GPU_RANK = 4


class _Tensor:
    def __init__(self, shape, dtype, const):
        self.dims, self.type, self.const = list(shape), dtype, const


def _broadcastable(a, b) -> bool:
    """``CheckIsBroadcastable``: numpy rules on the trailing dims."""
    for x, y in zip(reversed(a), reversed(b)):
        if x != y and x != 1 and y != 1:
            return False
    return True


def gpu_reason(op: str, inputs: list, outputs: list, options) -> str | None:
    """Why the GPU delegate refuses one op (None: it takes it), after ``gpu_compatibility.cc``.

    Args:
        op: the builtin name (``CONV_2D``) or a custom op's name.
        inputs, outputs: the op's tensors (``_Tensor``: dims, type, const); None for an absent
            optional input.
        options: the op's builtin options object (or None).
    """
    present = [t for t in inputs if t is not None]
    runtime = [t for t in present if not t.const]
    consts = [t for t in present if t.const]
    for t in present + outputs:
        if len(t.dims) > MAX_GPU_RANK:
            return f"a rank-{len(t.dims)} tensor (the delegate's tensors are at most 4-D, BHWC)"
    act = getattr(options, "fusedActivationFunction", 0)
    if act == _SIGN_BIT:
        return "fused SIGN_BIT activation"

    def io(n_runtime, n_out=1, n_const=None):
        if len(runtime) != n_runtime or len(outputs) != n_out or (
                n_const is not None and len(consts) != n_const):
            return (f"needs {n_runtime} runtime input(s)"
                    + (f" and {n_const} constant(s)" if n_const is not None else "")
                    + f", has {len(runtime)} runtime and {len(consts)} constant")
        return None

    if op in _ALWAYS:
        return None
    if op in _ONE_RUNTIME_INPUT:
        return io(1)
    if op in ("ADD", "MUL"):
        if len(present) != 2:
            return f"{op} with {len(present)} inputs"
        a, b = present[0].dims, present[1].dims
        if len(a) != len(b):
            if len(a) > 1 and len(b) > 1 and not _broadcastable(a, b):
                return f"cannot broadcast {a} with {b}"
        elif op == "MUL":
            if any(x < y for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
                return f"MUL of {a} and {b}: neither is at least as large as the other"
        return None
    if op == "ADD_N":
        return None if len(present) == 2 else "ADD_N with more than 2 inputs"
    if op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return io(1)
    if op == "CAST":
        bad = io(1)
        if bad:
            return bad
        i, o = present[0].type, outputs[0].type
        if (i == _BOOL and o in _FLOATS) or (i in _FLOATS and o == _BOOL) or (
                i in (_FLOAT32, _INT32) and o in (_FLOAT32, _INT32)):
            return None
        return f"CAST from type {i} to type {o}"
    if op in ("CONV_2D", "TRANSPOSE_CONV"):
        return None if len(runtime) <= 2 and len(outputs) == 1 else "more than 2 runtime inputs"
    if op == "DEPTHWISE_CONV_2D":
        if len(runtime) > 2:
            return "more than 2 runtime inputs"
        if any(len(t.dims) != 4 for t in present[:2] + outputs):
            return "input, filter and output must be 4-D"
        dm = getattr(options, "depthMultiplier", 1)
        if dm != 1 and present[0].dims[3] != 1:
            return "depth_multiplier != 1 with more than one input channel"
        return None
    if op in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH"):
        bad = io(1)
        return bad or (None if getattr(options, "blockSize", 2) > 1 else "block_size <= 1")
    if op == "DEQUANTIZE":
        return "int16 DEQUANTIZE" if present and present[0].type == _INT16 else None
    if op == "FULLY_CONNECTED":
        if getattr(options, "weightsFormat", 0) != 0:
            return "a shuffled weights format"
        if len(runtime) > 2:
            return "more than 2 runtime inputs"
        if present[0].const:
            return "a constant input"
        if getattr(options, "keepNumDims", False) and len(present[0].dims) != len(outputs[0].dims):
            return "keep_num_dims with another rank"
        return None
    if op == "GATHER":
        if io(2, n_const=0) and io(1, n_const=1):
            return "needs 1 or 2 operands"
        if present[0].type == _INT32:
            return "int32 params"
        if len(present[1].dims) != 1:
            return f"{len(present[1].dims)}-D indices (only 1-D)"
        return None if present[1].type == _INT32 else "indices not int32"
    if op in _REDUCE:
        bad = io(1)
        if bad:
            return bad
        axes = present[1] if len(present) > 1 else None
        return None if axes is not None and axes.const and axes.type == _INT32 else \
            "axes must be a constant int32 tensor"
    if op == "ONE_HOT":
        if present[0].type != _INT32:
            return "indices not int32"
        dims = present[0].dims
        for i, d in enumerate(dims[:-1]):
            if not (len(dims) > 3 and i == 0) and d != 1:
                return f"non-singleton index dim {i} ({dims})"
        on, off = present[2], present[3]
        if on.type != _FLOAT32 or off.type != _FLOAT32 or not (on.const and off.const):
            return "on/off values must be constant float32 scalars"
        return None
    if op in ("SELECT", "SELECT_V2"):
        c, a, b = present
        if c.type not in (_BOOL,) + _FLOATS or a.type not in _FLOATS or b.type not in _FLOATS:
            return "condition must be bool or float, branches float"
        for t in (a, b):
            if t.dims and t.dims != outputs[0].dims and (len(t.dims) > 1 or t.dims[0] > 1):
                return "a branch neither output-shaped nor a scalar"
        return None
    if op == "SLICE":
        return None if len(present[0].dims) in (3, 4) else "only 3-D or 4-D input"
    if op == "SOFTMAX":
        return None if getattr(options, "beta", 1.0) == 1.0 else "beta != 1"
    if op == "STRIDED_SLICE":
        for mask in ("ellipsisMask", "newAxisMask", "shrinkAxisMask"):
            if getattr(options, mask, 0):
                return f"{mask} set"
        if len(present) < 4:
            return "fewer than 4 inputs"
        return None if len(present[0].dims) in (3, 4) else "only 3-D or 4-D input"
    if op in ("PAD", "PADV2", "MIRROR_PAD"):
        if op == "MIRROR_PAD" and getattr(options, "mode", 0) != 0:
            return "only REFLECT mirror padding"
        bad = io(1)
        if bad:
            return bad
        pads = present[1].dims if len(present) > 1 else []
        return None if len(pads) == 2 and pads[0] in (3, 4) and pads[1] == 2 else \
            f"paddings of shape {pads} (only 3x2 or 4x2)"
    if op in _UNARY:
        return io(1, n_const=0)
    if op in _BINARY:
        return None if not (io(2, n_const=0) and io(1, n_const=1)) else "needs 1 or 2 operands"
    if op == "CUMSUM":
        ok = (present[0].type in _FLOATS and outputs[0].type == present[0].type
              and present[1].type == _INT32 and present[1].const)
        return None if ok else "float input and a constant int32 axis"
    if op == "DENSIFY":
        return io(0)
    if op in _CUSTOM:
        return None
    return f"not an op the GPU delegate supports ({op})"


def _builtin_names(schema) -> dict:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _const(model, tensor) -> bool:
    buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buf is not None and (buf.data is not None and len(buf.data) > 0 or bool(buf.offset))


def _xnnpack_nodes(blob: bytes) -> set:
    """The indices of the ops that LiteRT's default delegate (XNNPACK) took, measured."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob, num_threads=1)
    interpreter.allocate_tensors()
    nodes = litert_nodes(interpreter)
    producer = {}
    for n in nodes:
        if n["op_name"] != "DELEGATE":
            for t in n["outputs"]:
                producer[int(t)] = n["index"]
    taken = set()
    for d in (n for n in nodes if n["op_name"] == "DELEGATE"):
        inputs = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen = set()
        while stack:
            t = stack.pop()
            if t in seen or t in inputs or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            if node not in taken:
                taken.add(node)
                stack.extend(int(i) for i in nodes[node]["inputs"] if i >= 0)
    return taken


def inspect_tflite(model: bytes | str | os.PathLike, xnnpack: bool = True) -> dict:
    """Every op of the file's main graph, with what the GPU delegate's rules and XNNPACK say.

    Returns:
        ``{"ops": [{"index", "op", "gpu": None or the reason it falls back, "xnnpack": bool
        or None}], "summary": delegate_summary's dict}``.
    """
    schema, flatbuffer_utils = tflite_schema()
    blob = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    if bytes(blob[4:8]) != b"TFL3":  # the flatbuffer's file identifier
        raise ValueError(f"{model if not isinstance(model, (bytes, bytearray)) else 'model'}: "
                         f"not a TFLite file (no 'TFL3' identifier at byte 4)")
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    names = _builtin_names(schema)
    graph = obj.subgraphs[0]
    tensors = [_Tensor(list(t.shape) if t.shape is not None else [], t.type, _const(obj, t))
               for t in graph.tensors]
    # fp16 files: the delegate reads each float16 weight through its DEQUANTIZE as the
    # constant it is (FP16GraphPartitionHelper::RemapFp16InputTensors,
    # tensorflow/lite/delegates/utils.cc), and runs those DEQUANTIZEs itself
    fp16_weight = {}
    for op in graph.operators:
        code = obj.operatorCodes[op.opcodeIndex]
        if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) == "DEQUANTIZE":
            src = tensors[op.inputs[0]]
            if src.const and src.type == _FLOAT16:
                fp16_weight[op.outputs[0]] = src
    taken = _xnnpack_nodes(bytes(blob)) if xnnpack else None
    ops = []
    for i, op in enumerate(graph.operators):
        code = obj.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        ins = [fp16_weight.get(j, tensors[j]) if j >= 0 else None for j in op.inputs]
        outs = [tensors[j] for j in op.outputs]
        ops.append({"index": i, "op": name, "gpu": gpu_reason(name, ins, outs, op.builtinOptions),
                    "xnnpack": None if taken is None else i in taken})
    return {"ops": ops, "summary": _summary(ops)}


def _summary(ops: list) -> dict:
    gpu_out = collections.Counter(o["op"] for o in ops if o["gpu"] is not None)
    out = {"ops": len(ops), "gpu_delegate_ops": len(ops) - sum(gpu_out.values()),
           "gpu_fallback": dict(sorted(gpu_out.items())), "gpu_rules": GPU_RULES}
    if ops and ops[0]["xnnpack"] is not None:
        out["xnnpack_ops"] = sum(bool(o["xnnpack"]) for o in ops)
    return out


def delegate_summary(model: bytes | str | os.PathLike) -> dict:
    """How many of the file's ops the GPU delegate (rules) and XNNPACK (measured) take, and
    which ops fall back from the GPU (for the export report)."""
    return inspect_tflite(model)["summary"]


def format_report(result: dict, path: str = "") -> str:
    """The ``spade-tf inspect`` table: one line per op, then the counts."""
    lines = [f"{'#':>4}  {'op':<26} {'GPU delegate':<14} XNNPACK   why the GPU delegate refuses it"]
    for o in result["ops"]:
        x = "-" if o["xnnpack"] is None else ("yes" if o["xnnpack"] else "no")
        lines.append(f"{o['index']:>4}  {o['op']:<26} {'yes' if o['gpu'] is None else 'NO':<14} "
                     f"{x:<9} {o['gpu'] or ''}".rstrip())
    s = result["summary"]
    lines.append("")
    lines.append(f"{path + ': ' if path else ''}{s['ops']} ops; the GPU delegate's rules take "
                 f"{s['gpu_delegate_ops']}" + (f", XNNPACK took {s['xnnpack_ops']}"
                                               if "xnnpack_ops" in s else ""))
    if s["gpu_fallback"]:
        lines.append("falling back from the GPU: " + ", ".join(
            f"{k} x{v}" for k, v in s["gpu_fallback"].items()))
    lines.append(f"rules: {s['gpu_rules']}")
    return "\n".join(lines)
