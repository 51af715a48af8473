"""Multiply-add counts of a traced model, from the convolutions and matmuls in its graph."""

from __future__ import annotations

import math


def graph_multiply_adds(concrete_function) -> dict[str, int]:
    """Multiply-adds per op type (``Conv2D``, ``MatMul``, ...) in a concrete function's graph.

    A convolution costs (output elements) x (kernel height x width x input channels); a
    matmul [m, k] x [k, n] costs m*k*n. Shapes must be static (trace with a fixed input
    signature). Lookups, elementwise ops and reductions count as zero: the count is the work
    of the dense layers, the usual basis of "GFLOP/s" (2 FLOPs per multiply-add).
    """
    counts: dict[str, int] = {}

    def add(kind, n):
        counts[kind] = counts.get(kind, 0) + int(n)

    def visit(graph):
        for op in graph.get_operations():
            if op.type in ("Conv2D", "DepthwiseConv2dNative"):
                out, k = op.outputs[0].shape, op.inputs[1].shape
                if not (out.is_fully_defined() and k.is_fully_defined()):
                    raise ValueError(f"{op.name}: shapes are not static ({out}, {k}); trace "
                                     f"with a fixed input signature")
                per_output = k[0] * k[1] * (k[2] if op.type == "Conv2D" else 1)
                add(op.type, math.prod(out) * per_output)
            elif op.type in ("MatMul", "BatchMatMulV2"):
                a, out = op.inputs[0].shape, op.outputs[0].shape
                transpose_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
                inner = a[-2] if transpose_a else a[-1]
                add(op.type, math.prod(out) * inner)
        for fn in getattr(graph, "_functions", {}).values():  # nested function bodies
            if hasattr(fn, "graph"):
                visit(fn.graph)

    visit(concrete_function.graph)
    return counts
