"""A traced inference function whose weights are graph constants, every weight-only
computation folded into them at export.

Why: TensorFlow's oneDNN convolution reorders its filter into the blocked layout of the CPU's
kernel (for AMX: ``AcdB16b64a2b``) on every call, unless the filter is a ``Const`` node; then it
reorders once and keeps the result. A SavedModel reads its weights from variables, and the
generator computes from them at every call what only depends on them: spectral norm's sigma and,
in bfloat16, the cast of each float32 kernel. Measured on a Xeon with AMX (TensorFlow 2.21, 2
cores): a 1024->1024 3x3 bfloat16 conv at 16x16 takes 21.7 ms from a cast variable, 14.6 ms from
a bfloat16 variable and 5.3 ms from a constant; in float32 the constant gains nothing (96.1 against
95.4 ms: its filter layout needs no reorder). So ``spade-tf export --precision bf16`` serves
this form (docs/performance.md), and float32 keeps variables.

Grappler's own constant folding does not do this: it skips results over 10 MB, which is where
the gain is (ade20k's 1024-channel kernels are 18.9 MB in bfloat16).

``freeze(fn)``: the variables become constants; then every tensor that an input-dependent op
reads and that does not itself depend on an input (a cast kernel, a sigma) is evaluated once
and replaced by a constant; what only fed those is dropped. The arithmetic is the same ops on
the same values, so the outputs are the same up to the order oneDNN sums in (tested).
"""

from __future__ import annotations

import tensorflow as tf

from spade_tf.tf_internals import op_is_stateful, variables_to_constants


def _source(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def _tensor_name(name: str) -> str:
    return name if ":" in name else name + ":0"


def _input_dependent(graph_def) -> set[str]:
    """Names of the nodes that depend on a Placeholder (through data or control edges)."""
    consumers: dict[str, list[str]] = {}
    for node in graph_def.node:
        for i in node.input:
            consumers.setdefault(_source(i), []).append(node.name)
    dependent, stack = set(), [n.name for n in graph_def.node if n.op == "Placeholder"]
    while stack:
        name = stack.pop()
        if name not in dependent:
            dependent.add(name)
            stack += consumers.get(name, [])
    return dependent


def _keep_only_needed(graph_def, names: set[str]) -> None:
    """Removes, in place, the nodes that ``names`` do not reach through their inputs."""
    nodes = {n.name: n for n in graph_def.node}
    needed, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack += [_source(i) for i in nodes[name].input]
    keep = [n for n in graph_def.node if n.name in needed]
    del graph_def.node[:]
    graph_def.node.extend(keep)


def _import(graph_def):
    return tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), [])


def freeze(concrete_function):
    """``concrete_function`` (a traced inference function) as a function of its inputs alone:
    weights and every weight-only result as constants. Returns a ``ConcreteFunction`` taking
    the same inputs (positionally) and returning the list of its flattened outputs."""
    frozen = variables_to_constants(concrete_function)
    graph_def = frozen.graph.as_graph_def()
    if any(f.node_def for f in graph_def.library.function):
        # a function call or a functional loop would hide its weights from the walk below
        raise ValueError("frozen_graph.freeze: the function calls other functions; only flat "
                         "graphs are folded")
    nodes = {n.name: n for n in graph_def.node}
    dependent = _input_dependent(graph_def)
    frontier = sorted({_tensor_name(i) for n in graph_def.node if n.name in dependent
                       for i in n.input if not i.startswith("^") and _source(i) not in dependent
                       and nodes[_source(i)].op != "Const"})
    evaluate = _import(graph_def)
    stateful = sorted(n.name for n in graph_def.node if n.name not in dependent
                      and op_is_stateful(evaluate.graph.get_operation_by_name(n.name)))
    if stateful:
        raise ValueError(f"frozen_graph.freeze: ops with side effects that no input reaches: "
                         f"{stateful[:5]}")
    # Control edges into the inputs' cone from outside it only ordered the weights' reads
    # (tf.function's automatic control dependencies); with constant weights and no side
    # effects there (checked above) they order nothing, and would keep every float32 weight.
    for node in graph_def.node:
        if node.name in dependent:
            keep = [i for i in node.input if not (i.startswith("^") and _source(i) not in dependent)]
            del node.input[:]
            node.input.extend(keep)
    if frontier:
        values = evaluate.prune([], [evaluate.graph.get_tensor_by_name(t) for t in frontier])()
        folded = {}
        for tensor, value in zip(frontier, values):
            node = graph_def.node.add()
            node.name = tensor.replace(":", "/folded_")
            node.op = "Const"
            node.attr["dtype"].type = value.dtype.as_datatype_enum
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.numpy()))
            folded[tensor] = node.name
        for node in graph_def.node:
            for k, i in enumerate(node.input):
                if not i.startswith("^") and _tensor_name(i) in folded:
                    node.input[k] = folded[_tensor_name(i)]
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    _keep_only_needed(graph_def, {_source(t) for t in inputs + outputs})
    folded_fn = _import(graph_def)
    get = folded_fn.graph.get_tensor_by_name
    return folded_fn.prune([get(t) for t in inputs], [get(t) for t in outputs])
