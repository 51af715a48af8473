"""Touches every private TensorFlow / Keras API that ``spade_tf.tf_internals`` wraps, so that an
upgrade that moves one fails here, by name."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from spade_tf import tf_internals


@pytest.mark.slow
@pytest.mark.parametrize("setting,expected", [("0", False), ("1", True)])
def test_onednn_enabled_reads_tensorflows_decision(setting, expected):
    # TensorFlow fixes it per process from TF_ENABLE_ONEDNN_OPTS: a fresh process for each.
    code = ("from tensorflow.python.util import _pywrap_util_port; "
            "from spade_tf.tf_internals import onednn_enabled; "
            "from spade_tf.perf import resolve_perf, Device; "
            "print(onednn_enabled(), resolve_perf(None, Device.CPU).filter_gradient.value)")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    assert out == [str(expected), "native" if expected else "swapped"]


def test_sublayers_walks_nested_layers():
    from spade_tf.layers import SPADEResBlock

    blk = SPADEResBlock(8, spectral=False, spade_hidden_filters=4, name="blk")
    blk.build((1, 4, 4, 6), (1, 4, 4, 3))
    names = [layer.name for layer in tf_internals.sublayers(blk)]
    assert names[0] == "blk" and "mlp_shared" in names and "param_free_norm" in names
    assert "conv_s" in names  # 6 -> 8 channels: a learned shortcut


def test_adam_slots_are_kerass_moments():
    v = tf.Variable(np.ones(3, np.float32))
    opt = keras.optimizers.Adam(0.1)
    opt.build([v])
    opt.apply([tf.constant([1.0, 2.0, 3.0])], [v])
    m, s = tf_internals.adam_slots(opt, v)
    np.testing.assert_allclose(m.numpy(), 0.1 * np.array([1.0, 2.0, 3.0]), rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), 0.001 * np.array([1.0, 4.0, 9.0]), rtol=1e-5)


def test_op_is_stateful_and_nested_function_graphs():
    v = tf.Variable(1.0)

    @tf.function
    def f(x):
        v.assign_add(x)
        return tf.cond(x > 0, lambda: x * 2.0, lambda: x * 3.0)

    graph = f.get_concrete_function(tf.TensorSpec((), tf.float32)).graph
    stateful = {op.type for op in graph.get_operations() if tf_internals.op_is_stateful(op)}
    assert "AssignAddVariableOp" in stateful
    assert "AddV2" not in stateful
    bodies = tf_internals.nested_function_graphs(graph)
    assert len(bodies) >= 2  # the cond's branches
    assert all(isinstance(b, tf.Graph) for b in bodies)


def test_tflite_schema_reads_and_writes_a_model():
    schema, flatbuffer_utils = tf_internals.tflite_schema()
    fn = tf.function(lambda x: x + 1.0, input_signature=[tf.TensorSpec((1, 2), tf.float32)])
    model = tf.lite.TFLiteConverter.from_concrete_functions(
        [fn.get_concrete_function()], fn).convert()
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    obj.buffers.append(schema.BufferT())
    assert len(flatbuffer_utils.convert_object_to_bytearray(obj)) > 0
    assert hasattr(schema, "MetadataT")


def test_the_fit_hook_that_multiworker_fit_fixes_overrides_still_exists():
    assert callable(getattr(keras.Model, "_maybe_symbolic_build", None))
    assert "_maybe_symbolic_build" in vars(tf_internals.MultiWorkerFitFixes)


def test_variables_to_constants_inlines_the_variables():
    import tensorflow as tf

    from spade_tf.tf_internals import variables_to_constants

    v = tf.Variable([1.0, 2.0])
    fn = tf.function(lambda x: x * v)
    frozen = variables_to_constants(fn.get_concrete_function(tf.TensorSpec([2])))
    ops = {n.op for n in frozen.graph.as_graph_def().node}
    assert "ReadVariableOp" not in ops and "Const" in ops, ops
    v.assign([5.0, 5.0])  # the frozen function kept the values it was frozen with
    assert frozen(tf.constant([1.0, 1.0]))[0].numpy().tolist() == [1.0, 2.0]
