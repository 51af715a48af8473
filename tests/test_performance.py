"""The performance options compute what the plain forms compute (issue: performance).

Each optimisation is compared with its plain form on the same weights and inputs. Float64 checks
leave only rounding (bounds 1e-9 relative, seen ~1e-15); the float32 check is the issue's 1e-5.
Speed itself is measured by scripts/benchmark.py, not here.
"""

from __future__ import annotations

import dataclasses
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from spade_tf import layers as spade_layers
from spade_tf.config import PerfConfig, load_config
from spade_tf.layers import (REGION_MAX_FRACTION, InstanceNormalization, SpectralConv2D,
                             TorchBatchNorm, _input_gradient_as_conv, class_hidden_features,
                             conv2d, label_regions, modulate, onehot_conv, onehot_indices,
                             regional_conv)
from spade_tf.networks import build_networks
from spade_tf.semantics import to_semantics

PLAIN = PerfConfig(label_conv="dense", fuse_gamma_beta=False, share_label_features=False,
                   filter_gradient="native", closed_form_gradients=False,
                   split_discriminator_input=False, sequential_inference=False,
                   uniform_regions=False)
ALL_ON = PerfConfig(label_conv="segment_sum", fuse_gamma_beta=True, share_label_features=True,
                    filter_gradient="swapped", closed_form_gradients=True,
                    split_discriminator_input=True, sequential_inference=True,
                    uniform_regions=True)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ----------------------------------------------------------------------------- primitives


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


def _block_labels(rng, n, h, w, classes, block, noise=3):
    """Piecewise-constant labels (``block``-pixel squares of random classes) with ``noise``
    single pixels of another class: a map with uniform regions, as real label maps have."""
    lab = np.kron(rng.integers(0, classes, (n, -(-h // block), -(-w // block))),
                  np.ones((block, block), np.int64))[:, :h, :w]
    for _ in range(noise):
        lab[rng.integers(n), rng.integers(h), rng.integers(w)] = rng.integers(classes)
    return lab.astype(np.int32)


def test_label_regions_mark_every_pixel_within_reach_of_another_label():
    """The boundary is every pixel with another class, a nonzero instance edge or the image
    border within 2·(K//2) pixels (numpy, pixel by pixel); the rest is uniform."""
    rng = np.random.default_rng(3)
    idx = _block_labels(rng, 2, 20, 23, 3, 6, noise=4)
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
    idx = _block_labels(rng, 2, h, w, c + 1, 16)  # index c: no class (an all-zero pixel)
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
            y = conv2d(x, kernel, stride, pad, swapped_filter_gradient=swapped)
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
    assert _input_gradient_as_conv(x.shape, kernel.shape, 1, "SAME")
    dy = tf.constant(rng.standard_normal((batch, 17, 16, c_out)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = conv2d(x, kernel, 1, k // 2, swapped_filter_gradient=True)
    dx = tape.gradient(y, x, output_gradients=dy)
    ref = tf.raw_ops.Conv2DBackpropInput(input_sizes=x.shape, filter=kernel, out_backprop=dy,
                                         strides=[1, 1, 1, 1], padding="SAME")
    assert np.abs(ref.numpy()).max() > 1
    assert _rel(dx, ref) < 1e-12


def test_input_gradient_rule_keeps_the_native_form_where_it_was_faster():
    assert not _input_gradient_as_conv((1, 8, 8, 1024), (3, 3, 1024, 1024), 1, "SAME")  # small
    assert not _input_gradient_as_conv((1, 64, 64, 128), (3, 3, 128, 1024), 1, "SAME")  # 8x wider
    assert not _input_gradient_as_conv((1, 64, 64, 128), (4, 4, 128, 128), 2, "VALID")  # strided
    assert not _input_gradient_as_conv((1, None, None, 128), (3, 3, 128, 128), 1, "SAME")
    assert _input_gradient_as_conv((1, 256, 256, 64), (3, 3, 64, 3), 1, "SAME")  # conv_img


def test_auto_filter_gradient_follows_onednn(monkeypatch):
    """``auto`` picks the swapped forms only on a CPU without oneDNN (measured: with oneDNN the
    backward kernels are the faster ones); explicit modes are kept."""
    import spade_tf.layers as layers

    assert not tf.config.list_logical_devices("GPU")  # this suite runs on CPU
    monkeypatch.setattr(layers, "onednn_enabled", lambda: True)
    assert not layers.use_swapped_filter_gradient("auto")
    assert layers.use_swapped_filter_gradient("swapped")
    monkeypatch.setattr(layers, "onednn_enabled", lambda: False)
    assert layers.use_swapped_filter_gradient("auto")
    assert not layers.use_swapped_filter_gradient("native")


@pytest.mark.slow
@pytest.mark.parametrize("setting,expected", [("0", False), ("1", True)])
def test_onednn_enabled_reads_tensorflows_decision(setting, expected):
    # TensorFlow fixes it per process from TF_ENABLE_ONEDNN_OPTS: a fresh process for each.
    import os
    import subprocess
    import sys

    code = ("from spade_tf.layers import onednn_enabled, use_swapped_filter_gradient; "
            "print(onednn_enabled(), use_swapped_filter_gradient('auto'))")
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout.split()
    assert out == [str(expected), str(not expected)]


@pytest.mark.parametrize("layer", ["batch", "affine_batch", "instance"])
def test_closed_form_norm_gradient_equals_autodiff(float64, layer):
    """The norms' hand-written training gradient against differentiating the two-pass
    statistics op by op (one replica here; the two-worker test runs the synchronized form)."""
    def make(closed_form):
        if layer == "instance":
            return InstanceNormalization(closed_form_gradient=closed_form, name="norm")
        return TorchBatchNorm(affine=layer == "affine_batch", closed_form_gradient=closed_form,
                              name="norm")

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


def _same_weights(target, source):
    for a, b in zip(target.weights, source.weights):
        assert a.path == b.path
        a.assign(b)


def _run_generator(nets, seg, real_dy):
    g = nets.generator
    with tf.GradientTape() as tape:
        y = g(seg, training=True)
        loss = tf.reduce_sum(y * real_dy)
    grads = tape.gradient(loss, g.trainable_variables)
    state = [v.numpy() for v in g.non_trainable_variables]  # BN statistics, u, v after the step
    return y.numpy(), g(seg, training=False).numpy(), [t.numpy() for t in grads], state


def _compare_generators(config, variants, bound, float_dtype, grad_floor=1e-3, regions=False,
                        grad_bound=None, state=True):
    """``regions``: a label map with uniform regions (16-pixel squares, 32-pixel instances), on
    which perf.uniform_regions takes its regional form; else random classes per pixel.
    ``grad_bound``: the bound on the weight gradients (default ``bound``; 0 skips them);
    ``state``: also compare the updated BN statistics and spectral-norm vectors."""
    grad_bound = bound if grad_bound is None else grad_bound
    m = config.model
    h, w = m.output_hw
    rng = np.random.default_rng(0)
    if regions:
        label = _block_labels(rng, 2, h, w, m.num_classes, 16)
        inst = _block_labels(rng, 2, h, w, 3, 32, noise=0) if m.use_instance else None
    else:
        label = rng.integers(0, m.num_classes, (2, h, w)).astype(np.int32)
        inst = rng.integers(0, 3, (2, h, w)).astype(np.int32) if m.use_instance else None
    label[:, :8, :8] = 255  # dontcare
    seg = to_semantics(label, inst, config=config, dtype=float_dtype)
    dy = tf.constant(rng.standard_normal((2, h, w, 3)), float_dtype)
    # Seeded weights, so that a run's draw is repeatable (in float32 the draw decides where a
    # kink is crossed: test_all_generator_optimisations_agree_to_float32_rounding).
    keras.utils.set_random_seed(0)
    ref_nets = build_networks(config, perf=PLAIN, discriminator=False, encoder=False, seed=0)
    if regions:  # the regional form runs at some resolution (it is exercised, not skipped)
        g = build_networks(config, perf=ALL_ON, discriminator=False, encoder=False).generator
        used = [hw for hw, r in g.label_regions(g.resized_label_maps(seg)).items()
                if bool(r.worth)]
        assert used, "no resolution takes the regional form on this map"
    initial = [v.numpy() for v in ref_nets.generator.weights]
    ref = _run_generator(ref_nets, seg, dy)
    for name, perf in variants.items():
        nets = build_networks(config, perf=perf, discriminator=False, encoder=False, seed=0)
        for v, value in zip(nets.generator.weights, initial):
            v.assign(value)
        out = _run_generator(nets, seg, dy)
        assert _rel(out[0], ref[0]) < bound, (name, "train-mode output")
        assert _rel(out[1], ref[1]) < bound, (name, "eval-mode output")
        scale = max(np.abs(r).max() for r in ref[2])
        if grad_bound:
            for var, a, b in zip(nets.generator.trainable_variables, out[2], ref[2]):
                # Biases in front of a batch norm have a zero gradient up to rounding: a gradient
                # is compared with its own size, but at least grad_floor times the largest one.
                err = np.abs(a - b).max() / max(np.abs(b).max(), grad_floor * scale)
                assert err < grad_bound, (name, var.path, err)
        if state:
            for var, a, b in zip(nets.generator.non_trainable_variables, out[3], ref[3]):
                assert _rel(a, b) < bound, (name, var.path)


VARIANTS = {
    "segment_sum": dataclasses.replace(PLAIN, label_conv="segment_sum"),
    "gather": dataclasses.replace(PLAIN, label_conv="gather"),
    "fuse_gamma_beta": dataclasses.replace(PLAIN, fuse_gamma_beta=True),
    "share_label_features": dataclasses.replace(PLAIN, share_label_features=True),
    "share+gather": dataclasses.replace(PLAIN, share_label_features=True, label_conv="gather"),
    "swapped filter gradient": dataclasses.replace(PLAIN, filter_gradient="swapped"),
    "closed-form gradients": dataclasses.replace(PLAIN, closed_form_gradients=True),
    "sequential inference": dataclasses.replace(PLAIN, sequential_inference=True),
    "all on": ALL_ON,
}


def test_every_generator_optimisation_is_exact_in_float64(float64):
    """Outputs (train and eval mode), every weight gradient and the updated BN statistics and
    spectral-norm vectors, with each option alone and all together (tiny config: dontcare and
    instance-edge channels, 'normal' upsampling, learned shortcuts)."""
    _compare_generators(load_config("tiny"), VARIANTS, 1e-9, tf.float64)


REGION_VARIANTS = {
    "uniform regions": dataclasses.replace(PLAIN, uniform_regions=True),
    "uniform regions, unfused": dataclasses.replace(ALL_ON, fuse_gamma_beta=False),
    "uniform regions, dense label conv": dataclasses.replace(ALL_ON, label_conv="dense"),
    "all on": ALL_ON,
}


def test_uniform_regions_are_exact_in_float64(float64):
    """perf.uniform_regions on a label map with uniform regions (where it takes the regional
    form: checked), alone and with the other options, in training and inference mode:
    outputs, gradients, BN statistics and spectral-norm vectors as the plain form."""
    _compare_generators(load_config("tiny"), REGION_VARIANTS, 1e-9, tf.float64, regions=True)


FLOAT32_CASES = {
    "random classes, 'more' upsampling (2x2 latent)":
        (["model.num_upsampling_layers=more", "model.crop_size=128"], False),
    "uniform regions, 'normal' upsampling (4x4 latent)": (["model.crop_size=128"], True),
}


@pytest.mark.parametrize("case", FLOAT32_CASES)
def test_all_generator_optimisations_agree_to_float32_rounding(monkeypatch, case):
    """Float32 at 128 px, every option on against the plain form: outputs (train and eval mode)
    and the updated BN statistics within 1e-5 relative; every weight gradient within 5e-5 of
    the largest gradient, in the generator with its leaky ReLUs made linear (slope 1).

    Why the gradients are compared without kinks: in float32, a leaky-ReLU input within the
    rounding of 0 (a few in a million at 128 px) lands on either side in either form, and the
    derivative at that pixel is then 1 instead of 0.2; the batch norms of the 2x2 / 4x4 latent
    amplify that on the way to fc, whose kernel gradient then moves by up to 1.6e-3 of the
    largest gradient. Which form crosses depends on the machine's kernels (CI saw 6.3e-3 on a
    draw that agreed to 2e-6 here) and on the weight draw (1 in 6 draws, from either form:
    ``scripts/float32_drift.py [--regions]``). Neither form is less accurate: float64 with every
    weight moved by float32's rounding moves the gradients by 2e-7. The forward pass is
    continuous in the kinks, so outputs and statistics are compared with the real slope (not
    the statistics of the linear generator: a channel mean near 0 is a cancellation).
    Without kinks the two float32 forms agree to 1.2e-5 (12 draws, 2026-12-02; each is within
    7e-6 of float64), and an accidental float16 or bfloat16 step (5e-4, 4e-3) would show. The
    float64 tests check the real slope exactly."""
    overrides, regions = FLOAT32_CASES[case]
    config = load_config("tiny", overrides)
    _compare_generators(config, {"all on": ALL_ON}, 1e-5, tf.float32, regions=regions,
                        grad_bound=0)
    monkeypatch.setattr(spade_layers, "LRELU_SLOPE", 1.0)
    _compare_generators(config, {"all on": ALL_ON}, 1e-5, tf.float32, grad_floor=1.0,
                        regions=regions, grad_bound=5e-5, state=False)


def _ancestors(op):
    """Every op that ``op`` waits for, through data and control inputs."""
    seen, stack = set(), [op]
    while stack:
        o = stack.pop()
        for parent in [t.op for t in o.inputs] + list(o.control_inputs):
            if parent.name not in seen:
                seen.add(parent.name)
                stack.append(parent)
    return seen


def _op(graph, *parts):
    """The one op whose name has the layer-name ``parts`` in order (Keras adds _N suffixes)."""
    pattern = re.compile("/".join(rf"{re.escape(p)}(_\d+)?" for p in parts[:-1]) + "/" + parts[-1] + "$")
    found = [o for o in graph.get_operations() if pattern.search(o.name)]
    assert len(found) == 1, (parts, [o.name for o in found])
    return found[0]


@pytest.mark.parametrize("perf", [ALL_ON, dataclasses.replace(ALL_ON, uniform_regions=False),
                                  PLAIN], ids=["sequential", "sequential, dense", "parallel"])
def test_sequential_inference_orders_each_label_branch_after_its_input(perf):
    """In inference mode each SPADE layer's gamma conv waits for the layer's input (norm_1:
    conv_0's output; norm_0 of a learned-shortcut block: conv_s's output), so that one layer's
    maps are live at a time. Without the option nothing orders them (the memory peak that
    scripts/memory_peak.py --inference shows). With perf.uniform_regions the conv is the
    regional-or-dense cond, which must wait too (its predicate reads the input)."""
    config = load_config("tiny")
    g = build_networks(config, perf=perf, discriminator=False, encoder=False).generator
    h, w = config.model.output_hw
    spec = tf.TensorSpec((1, h, w, config.model.semantic_channels))
    graph = tf.function(lambda s: g(s, training=False)).get_concrete_function(spec).graph
    sequential = perf.sequential_inference
    checked = conds = 0
    for blk in g.blocks:
        pairs = [("norm_1", "conv_0")] + ([("norm_0", "conv_s")] if blk.learned_shortcut else [])
        for norm, before in pairs:
            regional = bool(perf.uniform_regions) and any(
                re.search(rf"{blk.name}(_\d+)?/{norm}(_\d+)?/cond$", o.name)
                for o in graph.get_operations())
            gamma = (_op(graph, blk.name, norm, "cond") if regional
                     else _op(graph, blk.name, norm, "mlp_gamma", "Conv2D"))
            conv = _op(graph, blk.name, before, "Conv2D")
            assert (conv.name in _ancestors(gamma)) == sequential, (blk.name, norm, before)
            checked += 1
            conds += regional
    assert checked >= len(g.blocks) + 1
    assert bool(conds) == perf.uniform_regions  # the regional layers were checked too


@pytest.mark.parametrize("option", [{"filter_gradient": "swapped"},
                                    {"closed_form_gradients": True},
                                    {"split_discriminator_input": True}, ALL_ON])
def test_discriminator_and_encoder_optimisations_are_exact(float64, option):
    """D and E: outputs, weight gradients and the gradient w.r.t. D's image channels (the
    label channels get none with split_discriminator_input). D's input is two stacked copies
    (fake, real) of a batch of 2 label maps; the split D gets the label maps once
    (``GauGAN.discriminate``'s form), the plain D the concatenated tensor."""
    config = load_config("tiny", ["model.use_vae=true"])
    rng = np.random.default_rng(1)
    h, w = config.model.output_hw
    sem = tf.constant(rng.standard_normal((2, h, w, config.model.semantic_channels)))
    images = tf.constant(rng.standard_normal((4, h, w, 3)))
    img = tf.constant(rng.standard_normal((2, 256, 256, 3)))
    nets = [build_networks(config, perf=perf, generator=False, seed=0)
            for perf in (PLAIN, option if isinstance(option, PerfConfig)
                         else dataclasses.replace(PLAIN, **option))]
    _same_weights(nets[1].discriminator, nets[0].discriminator)
    _same_weights(nets[1].encoder, nets[0].encoder)
    grads, outputs = [], []
    for n in nets:
        d = n.discriminator
        with tf.GradientTape() as tape:
            tape.watch(images)
            stacked = tf.concat([tf.concat([sem, sem], 0), images], -1)
            outs = d((sem, images) if d.label_channels else stacked, training=True)
            mu, logvar = n.encoder(img, training=True)
            loss = sum(tf.reduce_sum(o * o) for scale in outs for o in scale)
            loss += tf.reduce_sum(mu * logvar)
        variables = d.trainable_variables + n.encoder.trainable_variables
        g = tape.gradient(loss, variables + [images])
        grads.append([t.numpy() for t in g])
        outputs.append([o.numpy() for scale in outs for o in scale] + [mu.numpy(), logvar.numpy()])
        if d.label_channels:  # the concatenated input gives the same outputs
            pair, concat = (d(x, training=False) for x in ((sem, images), stacked))
            for a, b in zip(*([o.numpy() for scale in y for o in scale] for y in (pair, concat))):
                assert a.shape == b.shape and _rel(a, b) < 1e-12
    for a, b in zip(*outputs):
        assert a.shape == b.shape and _rel(a, b) < 1e-12
    assert np.abs(grads[0][-1]).max() > 1e-3
    scale = max(np.abs(g).max() for g in grads[0])
    for a, b in zip(grads[1], grads[0]):
        assert np.abs(a - b).max() / max(np.abs(b).max(), 1e-3 * scale) < 1e-9


def test_shared_labels_need_an_image_batch_that_is_a_multiple():
    from spade_tf.discriminator import add_shared_labels

    with pytest.raises(ValueError, match=r"image batch \(3\).*label batch \(2\)"):
        add_shared_labels(tf.zeros((3, 4, 4, 1)), tf.zeros((2, 4, 4, 1)))
    y = add_shared_labels(tf.reshape(tf.range(4.0), (4, 1, 1, 1)),
                          tf.constant([[[[10.0]]], [[[20.0]]]]))
    assert y.numpy().ravel().tolist() == [10.0, 21.0, 12.0, 23.0]  # example j·n + i gets i


def test_perf_section_is_validated_and_defaults_to_every_optimisation():
    config = load_config("tiny")
    assert config.perf.label_conv.value == "segment_sum" and config.perf.fuse_gamma_beta
    assert config.perf.closed_form_gradients
    with pytest.raises(ValueError, match="perf.label_conv.*'dense', 'gather', 'segment_sum'"):
        load_config("tiny", ["perf.label_conv=im2col"])
    with pytest.raises(ValueError, match="filter_gradient"):
        PerfConfig(filter_gradient="fast")
    g = build_networks(config, discriminator=False).generator
    clone = g.__class__.from_config(g.get_config())
    assert clone.label_conv == "segment_sum" and clone.share_label_features
    assert clone.closed_form_gradients and g.up_0.norm_0.param_free_norm.closed_form_gradient


def test_fused_adam_equals_keras_adam():
    """5 steps of FusedAdam and keras.optimizers.Adam from the same start: the same updates and
    slots to float32 rounding."""
    from spade_tf.optimizers import FusedAdam

    rng = np.random.default_rng(2)
    init = [rng.standard_normal((3, 3, 4, 5)).astype(np.float32),
            rng.standard_normal(7).astype(np.float32)]
    runs = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        variables = [tf.Variable(x) for x in init]
        opt = cls(1e-2, beta_1=0.0, beta_2=0.9, epsilon=1e-8)
        step = tf.function(lambda grads: opt.apply(grads, variables))
        for i in range(5):
            step([tf.constant(np.sin(x * (i + 1)) + 0.1 * i) for x in init])
        runs.append(([v.numpy() - x for v, x in zip(variables, init)],
                     [s.numpy() for s in opt._momentums + opt._velocities]))
    (ref_updates, ref_slots), (updates, slots) = runs
    assert min(np.abs(u).max() for u in ref_updates) > 1e-3  # the steps moved the variables
    for a, b in zip(updates + slots, ref_updates + ref_slots):
        assert _rel(a, b) < 1e-5


def test_multiply_adds_are_counted_from_the_graph():
    from spade_tf.flops import graph_multiply_adds
    from spade_tf.layers import TorchConv2D

    conv = TorchConv2D(6, 3, strides=2, padding=1)
    dense = keras.layers.Dense(4)
    fn = tf.function(lambda x: dense(tf.reshape(conv(x), (1, -1))))
    counts = graph_multiply_adds(fn.get_concrete_function(tf.TensorSpec((1, 8, 10, 5))))
    assert counts["Conv2D"] == 4 * 5 * 6 * (3 * 3 * 5)  # 4x5 outputs x 6 channels
    assert counts["MatMul"] == 4 * 5 * 6 * 4


def test_gradient_ops_are_counted_and_unused_ones_left_out():
    from spade_tf.flops import graph_multiply_adds

    kernel = tf.constant(np.ones((3, 3, 5, 4), np.float32))

    @tf.function
    def input_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf.nn.conv2d(x, kernel, 1, "SAME")
            loss = tf.reduce_sum(y * y)
        dx, _ = tape.gradient(loss, [x, kernel])  # the kernel gradient is built, never used
        return dx

    fn = input_gradient.get_concrete_function(tf.TensorSpec((1, 6, 7, 5)))
    work = 6 * 7 * 4 * (3 * 3 * 5)  # output elements x (kh x kw x C_in)
    every = graph_multiply_adds(fn)
    assert every == {"Conv2D": work, "Conv2DBackpropInput": work, "Conv2DBackpropFilter": work}
    assert graph_multiply_adds(fn, used_only=True) == {"Conv2D": work, "Conv2DBackpropInput": work}


def test_xla_training_uses_gather_lookups():
    from spade_tf.config import effective_perf

    assert effective_perf(load_config("tiny")).label_conv.value == "segment_sum"
    assert effective_perf(load_config("tiny")).uniform_regions
    xla = load_config("tiny", ["train.jit_compile=true"])
    assert effective_perf(xla).label_conv.value == "gather"
    assert not effective_perf(xla).uniform_regions  # data-dependent shapes
    g = build_networks(xla, discriminator=False).generator
    assert g.label_conv == "gather" and not g.uniform_regions


@pytest.mark.slow
def test_benchmark_script_times_the_requested_number_of_runs(tmp_path):
    """scripts/benchmark.py end to end on the tiny forward: every measurement runs in a worker
    process, which must get --repeats (it once ran 3 whatever was asked, under a header saying
    otherwise)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(script), "--only", "forward", "--forward", "tiny",
                    "--batches", "1", "--plain", "", "--ablation", "", "--real", "",
                    "--repeats", "2", "--json", str(out), "--markdown", str(tmp_path / "b.md")],
                   check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    [row] = [r for r in result["rows"] if r["kind"] == "forward"]
    assert "failed" not in row, row.get("failed")
    assert result["repeats"] == 2
    assert len(row["times_s"]) == 2, row["times_s"]
    assert "medians of 2 runs" in (tmp_path / "b.md").read_text()
