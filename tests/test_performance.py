"""The whole networks compute the same with every ``perf`` option as with the plain forms.

Each option is compared with the plain form on the same weights and inputs. Float64 checks
leave only rounding (bounds 1e-9 relative, seen ~1e-15); the float32 check is 1e-5. The kernels
alone are in tests/test_kernels.py; speed is measured by scripts/benchmark.py, not here.
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
from spade_tf.networks import build_networks
from spade_tf.perf import ALL_ON, PLAIN
from spade_tf.semantics import to_semantics
from spade_tf.tf_internals import adam_slots
from conftest import block_labels, copy_weights as _same_weights, rel_error as _rel


def _run_generator(nets, seg, real_dy):
    g = nets.generator
    with tf.GradientTape() as tape:
        y = g(seg, training=True)
        loss = tf.reduce_sum(y * real_dy)
    grads = tape.gradient(loss, g.trainable_variables)
    state = [v.numpy() for v in g.non_trainable_variables]  # BN statistics, u, v after the step
    return (y.numpy(), g(seg, training=False).numpy(),
            [tf.convert_to_tensor(t).numpy() for t in grads], state)


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
        label = block_labels(rng, 2, h, w, m.num_classes, 16)
        inst = block_labels(rng, 2, h, w, 3, 32, noise=0) if m.use_instance else None
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
    "affine inference norm": dataclasses.replace(PLAIN, affine_inference_norm=True),
    "resize upsampling": dataclasses.replace(PLAIN, resize_upsampling=True),
    "all on": ALL_ON,
}


def test_every_generator_optimisation_is_exact_in_float64(float64):
    """Outputs (train and eval mode), every weight gradient and the updated BN statistics and
    spectral-norm vectors, with each option alone and all together (tiny config: dontcare and
    instance-edge channels, 'normal' upsampling, learned shortcuts)."""
    _compare_generators(load_config("tiny"), VARIANTS, 1e-9, tf.float64)


def test_clade_lookup_forms_are_exact_in_float64(float64):
    """A CLADE generator with ICPE, instance edges and dontcare: the tables read by a 1x1 conv
    of the one-hot map (perf.clade_lookup), alone and with every other option, give the plain
    form's outputs, gradients and statistics."""
    config = load_config("tiny", ["model.norm_mode=clade", "model.clade_positional=true"])
    _compare_generators(config, {"onehot_conv": dataclasses.replace(PLAIN, clade_lookup="onehot_conv"),
                                 "all on": ALL_ON}, 1e-9, tf.float64)


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
    ``scripts/float32_drift.py [--regions]`` of commit 049e815). Neither form is less accurate: float64 with every
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
    scripts/memory_peak.py --inference of commit e4b9ace showed). With perf.uniform_regions the conv is the
    regional-or-dense cond, which must wait too (its predicate reads the input)."""
    config = load_config("tiny")
    g = build_networks(config, perf=perf, discriminator=False, encoder=False).generator
    h, w = config.model.output_hw
    spec = tf.TensorSpec((1, h, w, config.model.semantic_channels))
    graph = tf.function(lambda s: g(s, training=False)).get_concrete_function(spec).graph
    sequential = bool(perf.sequential_inference)
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
    assert bool(conds) == bool(perf.uniform_regions)  # the regional layers were checked too


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
            outs = d((sem, images) if d.splits_input else stacked, training=True)
            mu, logvar = n.encoder(img, training=True)
            loss = sum(tf.reduce_sum(o * o) for scale in outs for o in scale)
            loss += tf.reduce_sum(mu * logvar)
        variables = d.trainable_variables + n.encoder.trainable_variables
        g = tape.gradient(loss, variables + [images])
        grads.append([t.numpy() for t in g])
        outputs.append([o.numpy() for scale in outs for o in scale] + [mu.numpy(), logvar.numpy()])
        if d.splits_input:  # the concatenated input gives the same outputs
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
    from spade_tf.models.spade.discriminator import add_shared_labels

    with pytest.raises(ValueError, match=r"image batch \(3\).*label batch \(2\)"):
        add_shared_labels(tf.zeros((3, 4, 4, 1)), tf.zeros((2, 4, 4, 1)))
    y = add_shared_labels(tf.reshape(tf.range(4.0), (4, 1, 1, 1)),
                          tf.constant([[[[10.0]]], [[[20.0]]]]))
    assert y.numpy().ravel().tolist() == [10.0, 21.0, 12.0, 23.0]  # example j·n + i gets i


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
                     [s.numpy() for v in variables for s in adam_slots(opt, v)]))
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
                    "--batches", "1", "--plain", "", "--ablation", "", "--real", "", "--clade", "",
                    "--repeats", "2", "--json", str(out), "--markdown", str(tmp_path / "b.md")],
                   check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    [row] = [r for r in result["rows"] if r["kind"] == "forward"]
    assert "failed" not in row, row.get("failed")
    assert result["repeats"] == 2
    assert len(row["times_s"]) == 2, row["times_s"]
    assert "medians of 2 runs" in (tmp_path / "b.md").read_text()
