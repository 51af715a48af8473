"""Every access to a private TensorFlow / Keras API, in one place.

Each function says what it reaches, why no public API does it, and what it falls back to.
``tests/test_tf_internals.py`` touches every one, so a TensorFlow or Keras upgrade that moves
one of them fails there, by name, rather than somewhere inside a training run. Nothing else in
``spade_tf`` imports ``tensorflow.python`` or ``keras.src``, or reads an underscored attribute
of a TensorFlow or Keras object. (``GauGAN._maybe_symbolic_build`` in ``gan.py`` is an
*override* of a private hook; ``MultiWorkerFitFixes`` below is where it lives.)

Written against TensorFlow 2.21 and Keras 3.15.
"""

from __future__ import annotations

import os


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU kernels through oneDNN in this process.

    TensorFlow decides once per process: ``TF_ENABLE_ONEDNN_OPTS`` when set, otherwise by CPU
    (on by default on the AVX-512 machines we measured, off on the AVX2 EPYC). Reached through
    ``tensorflow.python.util._pywrap_util_port.IsMklEnabled``: no public API reports it. Where
    that is missing, the variable decides and unset counts as off.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0").strip().lower() in ("1", "true")


def sublayers(layer) -> list:
    """Every layer inside ``layer`` (recursively, ``layer`` first), through Keras'
    ``Layer._flatten_layers``: Keras 3 has no public recursive walk of a subclassed layer's
    children (``Model.layers`` is one level, and only on models)."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def adam_slots(optimizer, variable):
    """(m, v) of ``variable`` in a Keras 3 ``Adam``: ``_get_variable_index``, ``_momentums``
    and ``_velocities`` are Keras' own names for them; the fused update (``FusedAdam``) must
    write them in place so that the checkpoints stay Keras Adam's."""
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


def op_is_stateful(op) -> bool:
    """``tf.Operation._is_stateful``: whether an op has side effects (variable updates, random
    state); the graph walk of ``spade_tf.flops`` keeps those ops' inputs as used. The op def's
    ``is_stateful`` is the public equivalent for registered ops, but not for function calls."""
    return bool(op._is_stateful)


def nested_function_graphs(graph) -> list:
    """The graphs of the functions defined inside ``graph`` (``FuncGraph._functions``): the
    bodies of ``tf.cond`` / ``tf.while_loop`` branches and custom gradients, which
    ``spade_tf.flops`` must count too. No public API lists them."""
    return [fn.graph for fn in getattr(graph, "_functions", {}).values() if hasattr(fn, "graph")]


def variables_to_constants(concrete_function):
    """``concrete_function`` with every variable it reads inlined as a constant
    (``tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2``,
    which the TFLite converter and ``freeze_graph`` use). The public API freezes only through
    the TFLite converter; ``spade_tf.frozen_graph`` needs the frozen TensorFlow graph itself."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    return convert_variables_to_constants_v2(concrete_function)


def tflite_schema():
    """(schema, flatbuffer_utils): TFLite's generated flatbuffer classes and their helpers
    (``tensorflow.lite.python.schema_py_generated``, ``tensorflow.lite.tools.flatbuffer_utils``).
    The only way to add a metadata buffer to a ``.tflite`` file from Python without the
    ``tflite-support`` package, which does not install beside TensorFlow 2.21."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils
    return schema, flatbuffer_utils


def litert_nodes(interpreter) -> list:
    """Every node of a LiteRT ``Interpreter`` after its delegates were applied: the file's ops,
    then one ``DELEGATE`` node per partition a delegate took, each with its input and output
    tensor indices (``Interpreter._get_ops_details``). LiteRT's Python API has no public
    listing of what a delegate took; ``spade_tf.tflite_compat`` measures XNNPACK's share with
    it."""
    return interpreter._get_ops_details()


class MultiWorkerFitFixes:
    """A mixin for a ``keras.Model`` whose networks are built before ``fit``.

    Keras 3 ``fit`` under ``MultiWorkerMirroredStrategy`` fails (keras-team/keras#20585) in two
    private places; this overrides the first, ``Trainer._maybe_symbolic_build``, which would pull
    a batch and run a symbolic build of a model that is already built. (The second, the step
    logs' reduction, is handled with public code in ``GauGAN._track``.)
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return
