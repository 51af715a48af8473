"""CLADE (tzt101/CLADE's class-adaptive normalization) against plain float64 numpy of its
equations: the class lookups with dontcare, the instance-edge channel, and ICPE with its
intra-class positional map. Parity with the official code is fixture D (tests/test_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import block_labels
from spade_tf.config import load_config
from spade_tf.convert import config_from_official
from spade_tf.layers import ClassAdaptiveNorm
from spade_tf.networks import build_networks
from spade_tf.semantics import intra_class_offsets, to_semantics


def _offsets_reference(mask):
    """The ICPE map by the issue's definition: per 8-connected component of every class but 0,
    (row, column) offset from the centroid / (the component's largest |offset| + 1e-5)."""
    h, w = mask.shape
    out = np.zeros((h, w, 2))
    seen = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            if mask[i, j] == 0 or seen[i, j]:
                continue
            comp, stack = [], [(i, j)]
            seen[i, j] = True
            while stack:
                a, b = stack.pop()
                comp.append((a, b))
                for da in (-1, 0, 1):
                    for db in (-1, 0, 1):
                        x, y = a + da, b + db
                        if (0 <= x < h and 0 <= y < w and not seen[x, y]
                                and mask[x, y] == mask[i, j]):
                            seen[x, y] = True
                            stack.append((x, y))
            comp = np.array(comp)
            offset = comp - comp.mean(0)
            offset = offset / (np.abs(offset).max(0) + 1e-5)
            out[comp[:, 0], comp[:, 1]] = offset
    return out


def test_intra_class_offsets_follow_the_definition():
    rng = np.random.default_rng(0)
    labels = block_labels(rng, 2, 29, 27, 4, 5, noise=6)  # class 0 too, single-pixel islands
    labels[1, 10:12, :] = 3  # a long thin component across other blocks
    got = intra_class_offsets(labels).numpy()
    assert got.shape == (2, 29, 27, 2) and got.dtype == np.float32
    for n in range(2):
        np.testing.assert_allclose(got[n], _offsets_reference(labels[n]), rtol=0, atol=1e-6)
    assert np.all(got[labels == 0] == 0)
    assert np.abs(got).max() <= 1.0


def test_diagonal_neighbours_are_one_component():
    lab = np.zeros((5, 5), np.int32)
    lab[[0, 1, 2], [0, 1, 2]] = 1  # a diagonal line: one 8-connected component
    got = intra_class_offsets(lab).numpy()
    np.testing.assert_allclose(got[[0, 1, 2], [0, 1, 2]], [[-1, -1], [0, 0], [1, 1]], atol=1e-4)


def test_offsets_of_a_flipped_map_are_flipped_with_the_column_negated():
    rng = np.random.default_rng(1)
    lab = block_labels(rng, 1, 24, 20, 3, 6, noise=2)
    a = intra_class_offsets(lab).numpy()
    b = intra_class_offsets(lab[:, :, ::-1].copy()).numpy()
    np.testing.assert_allclose(b[..., 0], a[:, :, ::-1, 0], atol=1e-6)
    np.testing.assert_allclose(b[..., 1], -a[:, :, ::-1, 1], atol=1e-6)


@pytest.mark.parametrize("use_instance,positional", [(False, False), (True, False), (True, True)])
def test_class_adaptive_norm_equals_its_equations(float64, use_instance, positional):
    """norm(x) · gamma[label] + beta[label], (ICPE) gamma, beta · (1 + conv1x1(dist)),
    (instances) the edge channel through a 1x1 conv appended; dontcare is a row of its own;
    the label map and dist come at twice x's size (legacy nearest down to x)."""
    rng = np.random.default_rng(2)
    classes, c, h, w = 4, 6, 8, 10  # table rows: 3 classes + dontcare
    label = block_labels(rng, 2, 2 * h, 2 * w, classes, 4)
    seg = np.eye(classes)[label]
    edges = rng.integers(0, 2, (2, 2 * h, 2 * w, 1)).astype(np.float64)
    if use_instance:
        seg = np.concatenate([seg, edges], -1)
    dist = rng.uniform(-1, 1, (2, 2 * h, 2 * w, 2))
    x = rng.standard_normal((2, h, w, c)) * 3 + 1
    layer = ClassAdaptiveNorm("batch", onehot_channels=classes, use_instance=use_instance,
                              positional=positional)
    layer.build(x.shape, seg.shape)
    for v in layer.weights:  # every weight random, the running statistics too
        v.assign(rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path
                 else rng.standard_normal(v.shape))
    kw = {"positional": tf.constant(dist)} if positional else {}
    got = layer(tf.constant(x), tf.constant(seg), training=False, **kw).numpy()

    bn = layer.param_free_norm
    normalized = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-5)
    small = label[:, ::2, ::2]  # legacy nearest, factor 2
    gamma = layer.gamma_table.numpy()[small]
    beta = layer.beta_table.numpy()[small]
    if positional:
        d = dist[:, ::2, ::2]
        cw, cb = layer.dist_conv_w, layer.dist_conv_b
        gamma = gamma * (1 + d @ cw.kernel.numpy()[0, 0] + cw.bias.numpy())
        beta = beta * (1 + d @ cb.kernel.numpy()[0, 0] + cb.bias.numpy())
    want = normalized * gamma + beta
    if use_instance:
        k, b = layer.inst_conv.kernel.numpy()[0, 0, 0, 0], layer.inst_conv.bias.numpy()[0]
        want = np.concatenate([want, edges[:, ::2, ::2] * k + b], -1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_clade_generator_with_icpe_computes_the_map_itself():
    config = load_config("tiny", ["model.norm_mode=clade", "model.clade_positional=true"])
    g = build_networks(config, discriminator=False).generator
    for blk in g.blocks:  # instance maps: every conv takes one more channel (add_channels)
        assert blk.conv_0.kernel_orig.shape[2] == blk.norm_0.compute_output_shape(
            (1, 4, 4, blk.conv_0.kernel_orig.shape[2] - 1))[-1]
        w = blk.norm_0.dist_conv_w
        assert not np.any(w.kernel.numpy()) and not np.any(w.bias.numpy())  # zero-initialised
    rng = np.random.default_rng(3)
    label = block_labels(rng, 2, 64, 64, 4, 16)
    inst = block_labels(rng, 2, 64, 64, 3, 32, noise=0)
    sem = to_semantics(label, inst, config=config)
    for blk in g.blocks:  # wider tables (as fixture D) and a non-zero ICPE, so that it matters
        for norm in (blk.norm_0, blk.norm_1):
            t = norm.gamma_table
            t.assign(rng.uniform(0.5, 2.0, t.shape).astype(np.float32))
            t = norm.beta_table
            t.assign(rng.normal(0.0, 0.5, t.shape).astype(np.float32))
            norm.dist_conv_w.kernel.assign(rng.standard_normal((1, 1, 2, 1)).astype(np.float32))
    own = g(sem, training=False).numpy()
    given = g(sem, positional=intra_class_offsets(label), training=False).numpy()
    other = g(sem, positional=tf.zeros((2, 64, 64, 2)), training=False).numpy()
    np.testing.assert_array_equal(own, given)
    assert np.abs(own - other).max() > 0.05 * np.abs(own).max() > 0  # the map changes the image


def test_clade_options_are_read_from_opt_txt_and_validated():
    cfg = config_from_official({"label_nc": "5", "norm_mode": "clade", "add_dist": "True"})
    assert cfg.model.norm_mode.value == "clade" and cfg.model.clade_positional
    with pytest.raises(ValueError, match="clade_positional.*norm_mode='clade'"):
        load_config("tiny", ["model.clade_positional=true"])
    with pytest.raises(ValueError, match="norm_mode.*'spade', 'clade'"):
        load_config("tiny", ["model.norm_mode=spadeish"])


@pytest.mark.slow
def test_clade_with_icpe_exports_for_serving_and_tflite(tmp_path):
    """CLADE + ICPE + instance maps through export: the SavedModel computes the positional map
    from the label map itself (Serving sends nothing else); the TFLite file takes it as the
    input ``positional``, which synthesize computes; both match Keras."""
    from spade_tf.export import TFLiteRunner, export_generator
    from spade_tf.synthesize import load_synthesizer

    config = load_config("tiny", ["model.norm_mode=clade", "model.clade_positional=true",
                                  f"data.root={tmp_path / 'absent'}"])
    nets = build_networks(config, discriminator=False)
    rng = np.random.default_rng(4)
    for blk in nets.generator.blocks:  # a non-zero ICPE and wider tables, so that both matter
        for norm in (blk.norm_0, blk.norm_1):
            norm.gamma_table.assign(rng.uniform(0.5, 2.0, norm.gamma_table.shape).astype(np.float32))
            norm.dist_conv_w.kernel.assign(rng.standard_normal((1, 1, 2, 1)).astype(np.float32))
    res = export_generator((nets, config), tmp_path / "m", tflite=("fp32",), progress=lambda m: None)
    assert res.report["tflite"]["fp32"]["max_abs_levels_vs_keras"] <= 1
    runner = TFLiteRunner(res.tflite["fp32"])
    assert [i["name"] for i in runner.metadata["inputs"]] == ["label", "instance", "positional"]

    label = block_labels(rng, 1, 64, 64, 4, 16)
    inst = block_labels(rng, 1, 64, 64, 3, 32, noise=0)
    sem = to_semantics(label, inst, config=config)
    keras_img = nets.generator(sem, training=False).numpy()
    want = np.clip(np.round(keras_img * 127.5 + 127.5), 0, 255)
    served = tf.saved_model.load(str(res.version_dir)).signatures["serving_default"]
    got = served(label=tf.constant(label), instance=tf.constant(inst))["image"].numpy()
    assert np.abs(got.astype(int) - want).max() <= 1
    for backend in (res.version_dir, res.tflite["fp32"]):
        img = load_synthesizer(backend)._run(label, inst, None)
        assert np.abs(np.asarray(img).astype(int) - want).max() <= 1, backend
