"""Parity with the official networks: fixtures recorded by running NVlabs/SPADE (spec §12)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import import_fixture, max_err, nchw_to_nhwc
from spade_tf import losses
from spade_tf.models.spade.encoder import reparameterize
from spade_tf.semantics import to_semantics

ATOL = 1e-4


def _semantics(fx, config):
    return to_semantics(fx["in/label"][:, 0], config=config)


# ----------------------------------------------------------------------------- fixture A


def test_a_semantics_equal_official_input(fix_a, nets_a):
    _, config = nets_a
    sem = _semantics(fix_a, config).numpy()
    np.testing.assert_array_equal(sem, nchw_to_nhwc(fix_a["in/semantics"]).astype(np.float32))


def _check_generator_eval(fx, nets_and_config):
    """The eval-mode image and every block's output against the fixture's."""
    nets, config = nets_and_config
    image, acts = nets.generator(_semantics(fx, config), training=False,
                                 return_activations=True)
    assert max_err(image, nchw_to_nhwc(fx["out/fake_eval"])) <= ATOL
    act_keys = [k for k in fx.keys("act/") if k != "act/head_0.norm_0"]
    assert len(act_keys) == 9  # fc, head_0, G_middle_0/1, up_0..3, conv_img
    for key in act_keys:
        name = key[len("act/"):]
        assert max_err(acts[name], nchw_to_nhwc(fx[key])) <= ATOL, name


def test_a_generator_eval_and_every_activation(fix_a, nets_a):
    _check_generator_eval(fix_a, nets_a)


def test_a_first_spade_layer(fix_a, nets_a):
    nets, config = nets_a
    sem = _semantics(fix_a, config)
    fc = tf.constant(nchw_to_nhwc(fix_a["act/fc"]))
    out = nets.generator.head_0.norm_0(fc, sem, training=False)
    assert max_err(out, nchw_to_nhwc(fix_a["act/head_0.norm_0"])) <= ATOL


def test_a_generator_train_mode(fix_a):
    # A fresh import: the training forward updates u, v and the BN statistics.
    nets, config = import_fixture(fix_a)
    before = nets.generator.head_0.conv_0.u.numpy().copy()
    image = nets.generator(_semantics(fix_a, config), training=True)
    assert max_err(image, nchw_to_nhwc(fix_a["out/fake_train"])) <= ATOL
    # ...and it did run a power iteration (fake_train differs from fake_eval by ~0.9).
    assert not np.array_equal(before, nets.generator.head_0.conv_0.u.numpy())


def _d_outputs(fix_a, nets_a):
    nets, config = nets_a
    sem = _semantics(fix_a, config)
    fake = tf.constant(nchw_to_nhwc(fix_a["out/fake_eval"]))
    real = tf.constant(nchw_to_nhwc(fix_a["in/image"]))
    # As the reference: fake and real stacked on the batch axis, one pass, split in halves.
    both = nets.discriminator(tf.concat([tf.concat([sem, fake], -1), tf.concat([sem, real], -1)], 0))
    n = fake.shape[0]
    fake_out = [[f[:n] for f in scale] for scale in both]
    real_out = [[f[n:] for f in scale] for scale in both]
    return fake_out, real_out


def _check_discriminator_features(fx, nets_and_config):
    fake_out, real_out = _d_outputs(fx, nets_and_config)
    assert len(fake_out) == 2 and all(len(s) == 5 for s in fake_out)
    for kind, outs in (("fake", fake_out), ("real", real_out)):
        for s in range(2):
            for layer in range(5):
                key = f"d/{kind}/{s}/{layer}"
                assert max_err(outs[s][layer], nchw_to_nhwc(fx[key])) <= ATOL, key


def test_a_discriminator_features(fix_a, nets_a):
    _check_discriminator_features(fix_a, nets_a)


def test_a_losses(fix_a, nets_a):
    fake_out, real_out = _d_outputs(fix_a, nets_a)
    _, config = nets_a
    lc = config.loss
    ours = {"GAN": losses.generator_gan_loss(fake_out, lc.gan_mode),
            "GAN_Feat": losses.feature_matching_loss(fake_out, real_out, lc.lambda_feat)}
    ours["D_real"], ours["D_Fake"] = losses.discriminator_losses(real_out, fake_out, lc.gan_mode)
    for name, value in ours.items():
        ref = float(fix_a[f"loss/{name}"])
        assert abs(float(value) - ref) <= 1e-4 * abs(ref), (name, float(value), ref)


# ----------------------------------------------------------------------------- fixture C (VAE)


def test_c_semantics_with_dontcare(fix_c, nets_c):
    _, config = nets_c
    assert config.model.semantic_channels == 7
    sem = _semantics(fix_c, config).numpy()
    np.testing.assert_array_equal(sem, nchw_to_nhwc(fix_c["in/semantics"]).astype(np.float32))


def test_c_encoder_generator_eval_and_kld(fix_c, nets_c):
    nets, config = nets_c
    mu, logvar = nets.encoder(nchw_to_nhwc(fix_c["in/image"]), training=False)
    assert max_err(mu, fix_c["out/mu"]) <= ATOL
    assert max_err(logvar, fix_c["out/logvar"]) <= ATOL
    z = reparameterize(mu, logvar, fix_c["in/eps"])
    assert max_err(z, fix_c["out/z"]) <= ATOL
    image, acts = nets.generator(_semantics(fix_c, config), z=z, training=False,
                                 return_activations=True)
    assert max_err(image, nchw_to_nhwc(fix_c["out/fake_eval"])) <= ATOL
    assert max_err(acts["fc"], fix_c["act/fc"]) <= ATOL  # the flat Linear output
    for key in fix_c.keys("act/"):
        name = key[len("act/"):]
        if name in ("fc", "head_0.norm_0"):
            continue
        assert max_err(acts[name], nchw_to_nhwc(fix_c[key])) <= ATOL, name
    kld = losses.kl_divergence(mu, logvar) * config.loss.lambda_kld
    ref = float(fix_c["loss/KLD"])
    assert abs(float(kld) - ref) <= 1e-4 * abs(ref)


def test_c_train_mode(fix_c):
    nets, config = import_fixture(fix_c)
    mu, logvar = nets.encoder(nchw_to_nhwc(fix_c["in/image"]), training=True)
    z = reparameterize(mu, logvar, fix_c["in/eps"])
    assert max_err(z, fix_c["out/z_train"]) <= ATOL
    image = nets.generator(_semantics(fix_c, config), z=z, training=True)
    assert max_err(image, nchw_to_nhwc(fix_c["out/fake_train"])) <= ATOL


# ----------------------------------------------------------------------------- fixture D (CLADE)


def test_d_is_imported_as_clade(nets_d):
    nets, config = nets_d
    assert config.model.norm_mode.value == "clade"
    assert nets.generator.head_0.modulation == "clade"
    assert nets.generator.head_0.norm_0.gamma_table.shape == (5, 128)  # [label_nc, 16 ngf]


def test_d_generator_eval_and_every_activation(fix_d, nets_d):
    _check_generator_eval(fix_d, nets_d)
    nets, config = nets_d
    first = nets.generator.head_0.norm_0(tf.constant(nchw_to_nhwc(fix_d["act/fc"])),
                                         _semantics(fix_d, config), training=False)
    assert max_err(first, nchw_to_nhwc(fix_d["act/head_0.norm_0"])) <= ATOL


def test_d_generator_train_mode(fix_d):
    nets, config = import_fixture(fix_d)
    image = nets.generator(_semantics(fix_d, config), training=True)
    assert max_err(image, nchw_to_nhwc(fix_d["out/fake_train"])) <= ATOL


def test_d_discriminator_features_and_losses(fix_d, nets_d):
    _check_discriminator_features(fix_d, nets_d)
    test_a_losses(fix_d, nets_d)


@pytest.mark.parametrize("which", ["a", "c", "d"])
def test_fixture_round_trips_through_to_official(which, fix_a, fix_c, fix_d):
    from spade_tf.convert import to_official

    fx = {"a": fix_a, "c": fix_c, "d": fix_d}[which]
    nets, _ = import_fixture(fx)
    back = to_official(nets)
    for net, sd in fx.state.items():
        expected = {k for k in sd if not k.endswith("num_batches_tracked")}
        assert set(back[net]) == expected
        for k in expected:
            np.testing.assert_array_equal(back[net][k], sd[k], err_msg=k)
