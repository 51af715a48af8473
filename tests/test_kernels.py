"""Each kernel of ``spade_tf.kernels`` computes what its plain form computes.

Float64 checks leave only rounding (bounds 1e-12 relative for the primitives). The whole
networks with every option are compared in tests/test_performance.py; speed itself is measured
by scripts/benchmark.py, not here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.kernels.class_tables import class_lookup
from spade_tf.kernels.conv_gradients import input_gradient_as_conv
from spade_tf.kernels.norm_gradients import modulate
from spade_tf.kernels.onehot_conv import onehot_conv, onehot_indices
from spade_tf.kernels.regions import (REGION_MAX_FRACTION, class_hidden_features, label_regions,
                                      regional_conv)
from spade_tf.layers import InstanceNormalization, SpectralConv2D, TorchBatchNorm, conv2d
from spade_tf.perf import PLAIN

from conftest import block_labels, copy_weights as _same_weights, rel_error as _rel


# ----------------------------------------------------------------------------- onehot_conv

@pytest.mark.parametrize("method", ["segment_sum", "gather"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_onehot_conv_equals_the_dense_conv_and_its_kernel_gradient(method, k):
    rng = np.random.default_rng(k)
    c, f = 7, 5
    idx = rng.integers(0, c + 1, (2, 9, 6)).astype(np.int32)  # c = a pixel with no class
    onehot = tf.one_hot(idx, c, dtype=tf.float64)  # index c -> all zeros
    np.testing.assert_array_equal(onehot_indices(onehot).numpy(), idx)
    kernel = tf.constant(rng.standard_normal((k, k, c, f)))
    dy = tf.constant(rng.standard_normal((2, 9, 6, f)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(kernel)
        dense = tf.nn.conv2d(onehot, kernel, 1, "SAME")
        lookup = onehot_conv(tf.constant(idx), kernel, method)
        l_dense, l_lookup = tf.reduce_sum(dense * dy), tf.reduce_sum(lookup * dy)
    assert _rel(lookup, dense) < 1e-12
    g_dense, g_lookup = tape.gradient(l_dense, kernel), tape.gradient(l_lookup, kernel)
    assert np.abs(g_dense.numpy()).max() > 0
    assert _rel(g_lookup, g_dense) < 1e-12



# ----------------------------------------------------------------------------- class_tables

@pytest.mark.parametrize("dtype", [tf.float64, tf.float32, tf.float16])
def test_clade_lookup_as_a_onehot_conv_equals_the_gathers_and_their_gradients(dtype):
    """perf.clade_lookup: on a one-hot map the 1x1 conv picks each pixel's table rows bit for
    bit as argmax + gather does (one nonzero product per output), in every float type, and
    the tables' gradients agree to rounding (summed in another order)."""
    rng = np.random.default_rng(5)
    classes, widths = 6, (4, 3)
    label = rng.integers(0, classes, (2, 7, 5))
    onehot = tf.one_hot(label, classes, dtype=dtype)
    tables = [tf.constant(rng.uniform(-2, 2, (classes, c)), dtype) for c in widths]
    dys = [tf.constant(rng.standard_normal((2, 7, 5, c)), dtype) for c in widths]
    results = {}
    for method in ("gather", "onehot_conv"):
        with tf.GradientTape() as tape:
            tape.watch(tables)
            rows = class_lookup(onehot, tables, method)
            loss = sum(tf.reduce_sum(r * dy) for r, dy in zip(rows, dys))
        results[method] = ([r.numpy() for r in rows],
                           [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, tables)])
    for t, r_gather, r_conv in zip(tables, *(results[m][0] for m in results)):
        np.testing.assert_array_equal(r_gather, t.numpy()[label])  # the definition
        np.testing.assert_array_equal(r_conv, r_gather)
    if dtype == tf.float64:
        for g_gather, g_conv in zip(*(results[m][1] for m in results)):
            assert np.abs(g_gather).max() > 0
            assert _rel(g_conv, g_gather) < 1e-12


# ----------------------------------------------------------------------------- regions

def test_label_regions_mark_every_pixel_within_reach_of_another_label():
    """The boundary is every pixel with another class, a nonzero instance edge or the image
    border within 2·(K//2) pixels (numpy, pixel by pixel); the rest is uniform."""
    rng = np.random.default_rng(3)
    idx = block_labels(rng, 2, 20, 23, 3, 6, noise=4)
    edge = np.zeros((2, 20, 23, 1))
    edge[1, 10, 4] = 1.0
    for k in (1, 3, 5):
        r = 2 * (k // 2)
        regions = label_regions(tf.constant(idx), tf.constant(edge), k)
        got = np.zeros(idx.shape, bool)
        got[tuple(regions.boundary.numpy().T)] = True
        want = np.zeros(idx.shape, bool)
        for n, i, j in np.ndindex(*idx.shape):
            lo_i, hi_i, lo_j, hi_j = i - r, i + r + 1, j - r, j + r + 1
            if lo_i < 0 or lo_j < 0 or hi_i > 20 or hi_j > 23:
                want[n, i, j] = True
                continue
            win = idx[n, lo_i:hi_i, lo_j:hi_j]
            want[n, i, j] = (win != win[r, r]).any() or edge[n, lo_i:hi_i, lo_j:hi_j].any()
        np.testing.assert_array_equal(got, want, err_msg=f"K={k}")
        assert bool(regions.worth) == (want.mean() < REGION_MAX_FRACTION)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_regional_conv_equals_the_dense_conv_and_its_gradients(k):
    """SPADE's label branch, relu(conv(one-hot + edge channel)) then a conv, with the second
    conv by ``regional_conv``: the same output and the same gradients w.r.t. both kernels and
    biases as two dense convs (float64, < 1e-12), with dontcare, empty (all-zero) pixels, an
    instance edge and the image border in the map."""
    rng = np.random.default_rng(k)
    c, hidden_c, out_c, h, w = 5, 6, 4, 40, 37
    idx = block_labels(rng, 2, h, w, c + 1, 16)  # index c: no class (an all-zero pixel)
    onehot = tf.one_hot(idx, c, dtype=tf.float64)
    edge = np.zeros((2, h, w, 1))
    edge[0, 20, 3:9] = 1.0
    seg = tf.concat([onehot, tf.constant(edge)], -1)
    regions = label_regions(onehot_indices(onehot), tf.constant(edge), k)
    assert 0 < regions.boundary.shape[0] < idx.size  # both forms of pixel present
    w1 = tf.Variable(rng.standard_normal((k, k, c + 1, hidden_c)))
    b1 = tf.Variable(rng.standard_normal(hidden_c))
    w2 = tf.Variable(rng.standard_normal((k, k, hidden_c, out_c)))
    b2 = tf.Variable(rng.standard_normal(out_c))
    dy = tf.constant(rng.standard_normal((2, h, w, out_c)))
    results = []
    for regional in (False, True):
        with tf.GradientTape() as tape:
            hidden = tf.nn.relu(tf.nn.conv2d(seg, w1, 1, "SAME") + b1)
            if regional:
                y = regional_conv(hidden, w2, b2, class_hidden_features(w1, b1, c), regions)
            else:
                y = tf.nn.conv2d(hidden, w2, 1, "SAME") + b2
            loss = tf.reduce_sum(y * dy)
        results.append([y] + tape.gradient(loss, [w1, b1, w2, b2]))
    for name, a, b in zip(["output", "w1", "b1", "w2", "b2"], results[1], results[0]):
        assert _rel(a, b) < 1e-12, name


# ----------------------------------------------------------------------------- conv_gradients

@pytest.mark.parametrize("k,stride,pad,batch", [(3, 1, 1, 1), (3, 1, 1, 2), (1, 1, 0, 2),
                                               (4, 2, 2, 2), (4, 1, 2, 1), (3, 2, 1, 1)])
def test_swapped_filter_gradient_equals_conv2d_backprop_filter(k, stride, pad, batch):
    rng = np.random.default_rng(k * 10 + stride)
    x = tf.constant(rng.standard_normal((batch, 11, 8, 5)))
    kernel = tf.constant(rng.standard_normal((k, k, 5, 6)))
    ref = tf.nn.conv2d(tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), kernel, stride, "VALID")
    dy = tf.constant(rng.standard_normal(ref.shape))
    grads, outs = [], []
    for swapped in (False, True):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv2d(x, kernel, stride, pad, swapped_gradients=swapped)
            loss = tf.reduce_sum(y * dy)
        outs.append(y)
        grads.append(tape.gradient(loss, [x, kernel]))
    assert _rel(outs[0], ref) < 1e-12 and _rel(outs[1], ref) < 1e-12
    assert _rel(grads[1][0], grads[0][0]) < 1e-12  # input gradient
    assert _rel(grads[1][1], grads[0][1]) < 1e-12  # kernel gradient


@pytest.mark.parametrize("k,batch,c_in,c_out", [(3, 1, 5, 6), (3, 2, 5, 6), (5, 1, 4, 7),
                                                (1, 2, 6, 5)])
def test_input_gradient_as_a_flipped_conv_equals_conv2d_backprop_input(k, batch, c_in, c_out):
    # 17 x 16 = 272 >= 256 pixels and c_out <= 4 c_in: the flipped form is chosen.
    rng = np.random.default_rng(k * 100 + batch)
    x = tf.constant(rng.standard_normal((batch, 17, 16, c_in)))
    kernel = tf.constant(rng.standard_normal((k, k, c_in, c_out)))
    assert input_gradient_as_conv(x.shape, kernel.shape, 1, "SAME")
    dy = tf.constant(rng.standard_normal((batch, 17, 16, c_out)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = conv2d(x, kernel, 1, k // 2, swapped_gradients=True)
    dx = tape.gradient(y, x, output_gradients=dy)
    ref = tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=kernel, out_backprop=dy,
                                         strides=[1, 1, 1, 1], padding="SAME")
    assert np.abs(ref.numpy()).max() > 1
    assert _rel(dx, ref) < 1e-12


def test_input_gradient_rule_keeps_the_native_form_where_it_was_faster():
    assert not input_gradient_as_conv((1, 8, 8, 1024), (3, 3, 1024, 1024), 1, "SAME")  # small
    assert not input_gradient_as_conv((1, 64, 64, 128), (3, 3, 128, 1024), 1, "SAME")  # 8x wider
    assert not input_gradient_as_conv((1, 64, 64, 128), (4, 4, 128, 128), 2, "VALID")  # strided
    assert not input_gradient_as_conv((1, None, None, 128), (3, 3, 128, 128), 1, "SAME")
    assert input_gradient_as_conv((1, 256, 256, 64), (3, 3, 64, 3), 1, "SAME")  # conv_img


# ----------------------------------------------------------------------------- norm_gradients


@pytest.mark.parametrize("layer", ["batch", "affine_batch", "instance"])
def test_closed_form_norm_gradient_equals_autodiff(float64, layer):
    """The norms' hand-written training gradient against differentiating the two-pass
    statistics op by op (one replica here; the two-worker test runs the synchronized form)."""
    def make(closed_form):
        perf = dataclasses.replace(PLAIN, closed_form_gradients=closed_form)
        if layer == "instance":
            return InstanceNormalization(perf=perf, name="norm")
        return TorchBatchNorm(affine=layer == "affine_batch", perf=perf, name="norm")

    rng = np.random.default_rng(3)
    x = tf.constant(rng.standard_normal((2, 5, 4, 3)) * 2 + 1)
    dy = tf.constant(rng.standard_normal((2, 5, 4, 3)))
    layers = [make(False), make(True)]
    for norm in layers:
        norm.build(x.shape)
    _same_weights(layers[1], layers[0])
    results = []
    for norm in layers:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = norm(x, training=True)
            loss = tf.reduce_sum(y * dy)
        grads = tape.gradient(loss, [x] + norm.trainable_variables)
        results.append([y.numpy()] + [g.numpy() for g in grads]
                       + [v.numpy() for v in norm.non_trainable_variables])
    for a, b in zip(*results):
        assert _rel(a, b) < 1e-12
    assert np.abs(results[0][1]).max() > 1e-3  # the input gradient is not trivially zero


@pytest.mark.parametrize("slope", [None, 0.2])
def test_modulate_gradient_equals_autodiff(float64, slope):
    rng = np.random.default_rng(4)
    y, gamma, beta, dout = (tf.constant(rng.standard_normal((2, 6, 5, 4))) for _ in range(4))
    y = tf.tensor_scatter_nd_update(y, [[0, 0, 0, 0]], [0.0])  # an output of exactly 0 ...
    beta = tf.tensor_scatter_nd_update(beta, [[0, 0, 0, 0]], [0.0])  # ... takes the slope side
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([y, gamma, beta])
        ref = y * (1.0 + gamma) + beta
        if slope is not None:
            ref = tf.nn.leaky_relu(ref, slope)
        out = modulate(y, gamma, beta, slope)
        l_ref, l_out = tf.reduce_sum(ref * dout), tf.reduce_sum(out * dout)
    assert _rel(out, ref) < 1e-15
    for a, b in zip(tape.gradient(l_out, [y, gamma, beta]), tape.gradient(l_ref, [y, gamma, beta])):
        assert _rel(a, b) < 1e-15


@pytest.mark.parametrize("training", [False, True])
def test_spectral_conv_scaling_the_output_equals_scaling_the_kernel(float64, training):
    # 1x1 output of a 3x3x6x8 conv: the output (8 values) is smaller than the kernel, so the
    # layer divides the output by sigma; the plain form divides the kernel.
    layer = SpectralConv2D(8, 3, padding=0)
    x = tf.constant(np.random.default_rng(0).standard_normal((1, 3, 3, 6)))
    layer.build(x.shape)
    u0, v0 = layer.u.numpy(), layer.v.numpy()
    with tf.GradientTape() as tape:
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * tf.range(8, dtype=tf.float64))
    g = tape.gradient(loss, layer.kernel_orig)
    layer.u.assign(u0), layer.v.assign(v0)
    with tf.GradientTape() as tape:
        kernel = layer.effective_kernel(training=training)
        y_ref = tf.nn.conv2d(x, kernel, 1, "VALID") + layer.bias
        loss_ref = tf.reduce_sum(y_ref * tf.range(8, dtype=tf.float64))
    g_ref = tape.gradient(loss_ref, layer.kernel_orig)
    assert _rel(y, y_ref) < 1e-12
    assert _rel(g, g_ref) < 1e-12


# ----------------------------------------------------------------------------- whole networks


# ----------------------------------------------------------------------------- delegate_forms

def test_resize_upsampling_repeats_every_pixel_as_the_repeats_do_with_the_same_gradient():
    """The GPU graph's RESIZE_NEAREST_NEIGHBOR (legacy index) picks the pixels that two
    ``repeat``s pick; its gradient sums each 2 x 2 block as theirs does."""
    from spade_tf.kernels.delegate_forms import resize_nearest_2x
    from spade_tf.layers import upsample_nearest_2x

    x = tf.constant(np.random.default_rng(0).standard_normal((2, 5, 7, 3)))
    w = tf.constant(np.random.default_rng(1).standard_normal((2, 10, 14, 3)))
    outs, grads = [], []
    for fn in (upsample_nearest_2x, resize_nearest_2x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(y * w)
        outs.append(y.numpy())
        grads.append(tape.gradient(loss, x).numpy())
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)
    assert upsample_nearest_2x(x, resize_op=True).shape == (2, 10, 14, 3)


def test_instance_edges_from_float_ops_equal_the_plain_edges():
    from spade_tf.kernels.delegate_forms import instance_edges_arithmetic
    from spade_tf.semantics import instance_edges

    rng = np.random.default_rng(0)
    inst = rng.integers(0, 4, (3, 9, 11)).astype(np.int32)
    inst[0] = 7  # a map without edges
    for dtype in (tf.float32, tf.float16):
        got = instance_edges_arithmetic(inst, dtype).numpy()[..., 0]
        np.testing.assert_array_equal(got, instance_edges(inst).numpy())


def test_float_levels_are_the_rounded_levels_but_on_exact_ties():
    from spade_tf.export import to_uint8
    from spade_tf.kernels.delegate_forms import float_levels

    x = np.concatenate([np.linspace(-1.2, 1.2, 20001), [-1.0, 1.0, 0.0]]).astype(np.float32)
    got = float_levels(x).numpy()
    want = to_uint8(x).numpy().astype(np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, np.round(got))
    diff = np.abs(got - want)
    ties = np.abs((x * 127.5 + 127.5) % 1.0 - 0.5) < 1e-6
    assert diff.max() <= 1 and not diff[~ties].any(), x[diff > 0][:5]
