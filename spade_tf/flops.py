"""Multiply-add counts of a traced model, from the convolutions and matmuls in its graph."""

from __future__ import annotations

import math

from spade_tf.tf_internals import nested_function_graphs, op_is_stateful


def _used_ops(graph) -> set[str]:
    """Names of the ops that the graph's outputs or its stateful ops (variable updates and the
    like) depend on, through data and control inputs."""
    seeds = [t.op for t in graph.outputs] + [op for op in graph.get_operations()
                                             if op_is_stateful(op)]
    seen, stack = set(), list(seeds)
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen


def _static(op, *shapes):
    for s in shapes:
        if not s.is_fully_defined():
            raise ValueError(f"{op.name}: shapes are not static ({', '.join(map(str, shapes))}); "
                             f"trace with a fixed input signature")
    return shapes


def _op_multiply_adds(op) -> int | None:
    """The op's multiply-adds, or None for an op that is not a conv or a matmul."""
    t = op.type
    if t in ("Conv2D", "DepthwiseConv2dNative"):
        out, k = _static(op, op.outputs[0].shape, op.inputs[1].shape)
        return math.prod(out) * k[0] * k[1] * (k[2] if t == "Conv2D" else 1)
    if t == "Conv2DBackpropInput":  # (dy elements) x (kh x kw x C_in)
        k, dy = _static(op, op.inputs[1].shape, op.inputs[2].shape)
        return math.prod(dy) * math.prod(k[:3])
    if t == "Conv2DBackpropFilter":  # (dy elements) x (kh x kw x C_in)
        dy, dk = _static(op, op.inputs[2].shape, op.outputs[0].shape)
        return math.prod(dy) * math.prod(dk[:3])
    if t in ("MatMul", "BatchMatMulV2"):
        a, out = _static(op, op.inputs[0].shape, op.outputs[0].shape)
        transpose_a = op.get_attr("transpose_a" if t == "MatMul" else "adj_x")
        return math.prod(out) * (a[-2] if transpose_a else a[-1])
    return None


def graph_multiply_adds(concrete_function, used_only: bool = False) -> dict[str, int]:
    """Multiply-adds per op type (``Conv2D``, ``MatMul``, ...) in a concrete function's graph
    and the function bodies nested in it.

    A convolution costs (output elements) x (kernel height x width x input channels), and so do
    its gradient ops ``Conv2DBackpropInput`` / ``Conv2DBackpropFilter``, per element of the
    output gradient; a matmul [m, k] x [k, n] costs m*k*n. Shapes must be static (trace with a
    fixed input signature). Lookups, elementwise ops and reductions count as zero: the count is
    the work of the dense layers, the usual basis of "GFLOP/s" (2 FLOPs per multiply-add).

    ``used_only``: count only the ops that the outputs or the stateful ops depend on. A traced
    training step holds gradient ops whose result nothing uses (e.g. D's kernel gradients in
    the G step), which the runtime prunes and does not run.
    """
    counts: dict[str, int] = {}

    def visit(graph):
        used = _used_ops(graph) if used_only else None
        for op in graph.get_operations():
            if used is not None and op.name not in used:
                continue
            n = _op_multiply_adds(op)
            if n is not None:
                counts[op.type] = counts.get(op.type, 0) + int(n)
        for body in nested_function_graphs(graph):
            visit(body)

    visit(concrete_function.graph)
    return counts
