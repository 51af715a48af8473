"""Losses against direct numpy formulas (the fixture parity covers hinge on real D outputs)."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from spade_tf import losses

RNG = np.random.default_rng(0)
# Two scales of fake logits of different sizes, as the multiscale D gives.
FAKE = [[RNG.normal(size=(2, 5, 5, 1)).astype(np.float32)],
        [RNG.normal(size=(2, 3, 3, 1)).astype(np.float32)]]
REAL = [[RNG.normal(size=(2, 5, 5, 1)).astype(np.float32)],
        [RNG.normal(size=(2, 3, 3, 1)).astype(np.float32)]]


def _avg(fn, outs):
    return np.mean([fn(o[-1]) for o in outs])


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


@pytest.mark.parametrize("mode,g_ref,d_real_ref,d_fake_ref", [
    ("hinge", lambda p: -p.mean(), lambda p: np.maximum(1 - p, 0).mean(),
     lambda p: np.maximum(1 + p, 0).mean()),
    ("original", lambda p: _softplus(-p).mean(), lambda p: _softplus(-p).mean(),
     lambda p: _softplus(p).mean()),
    ("ls", lambda p: ((p - 1) ** 2).mean(), lambda p: ((p - 1) ** 2).mean(), lambda p: (p ** 2).mean()),
    ("w", lambda p: -p.mean(), lambda p: -p.mean(), lambda p: p.mean()),
])
def test_gan_modes(mode, g_ref, d_real_ref, d_fake_ref):
    assert float(losses.generator_gan_loss(FAKE, mode)) == pytest.approx(_avg(g_ref, FAKE), rel=1e-5)
    d_real, d_fake = losses.discriminator_losses(REAL, FAKE, mode)
    assert float(d_real) == pytest.approx(_avg(d_real_ref, REAL), rel=1e-5)
    assert float(d_fake) == pytest.approx(_avg(d_fake_ref, FAKE), rel=1e-5)


def test_unknown_gan_mode_lists_allowed():
    with pytest.raises(ValueError, match="'hinge', 'original', 'ls', 'w'"):
        losses.generator_gan_loss(FAKE, "wgan-gp")


def test_feature_matching_excludes_logits_and_divides_by_num_d():
    fake = [[RNG.normal(size=(1, 4, 4, 2)), RNG.normal(size=(1, 2, 2, 3)), RNG.normal(size=(1, 2, 2, 1))]
            for _ in range(3)]
    real = [[RNG.normal(size=f.shape) for f in scale] for scale in fake]
    ref = sum(np.abs(f - r).mean() for fs, rs in zip(fake, real) for f, r in zip(fs[:-1], rs[:-1]))
    got = losses.feature_matching_loss([[tf.constant(f, tf.float32) for f in s] for s in fake],
                                       [[tf.constant(r, tf.float32) for r in s] for s in real], 10.0)
    assert float(got) == pytest.approx(ref * 10.0 / 3, rel=1e-5)


def test_feature_matching_does_not_train_d_on_real():
    real = tf.Variable(np.ones((1, 2, 2, 1), np.float32))
    fake = tf.Variable(np.zeros((1, 2, 2, 1), np.float32))
    with tf.GradientTape() as tape:
        loss = losses.feature_matching_loss([[fake, fake]], [[real, real]])
    g_fake, g_real = tape.gradient(loss, [fake, real])
    assert g_real is None and g_fake is not None


def test_kl_is_a_sum_over_batch_and_dimensions():
    mu = RNG.normal(size=(3, 7)).astype(np.float32)
    logvar = RNG.normal(size=(3, 7)).astype(np.float32)
    ref = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar))
    assert float(losses.kl_divergence(mu, logvar)) == pytest.approx(ref, rel=1e-5)


@pytest.fixture(scope="module")
def vgg_loss():
    return losses.VGGLoss(weights=None, lambda_vgg=10.0)


def test_vgg_loss_layers_and_weights(vgg_loss):
    fake = tf.random.uniform((1, 32, 32, 3), -1, 1)
    real = tf.random.uniform((1, 32, 32, 3), -1, 1)
    base = vgg_loss.model
    got = float(vgg_loss(fake, real))
    ref = 0.0
    for w, f, r in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), base(fake), base(real)):
        ref += w * np.abs(f.numpy() - r.numpy()).mean()
    assert got == pytest.approx(10.0 * ref, rel=1e-5)
    # The first feature is relu1_1 = ReLU(conv1_1(x)), on the raw [-1, 1] input (no ImageNet
    # normalization), computed here independently of the feature model.
    conv = base.get_layer("block1_conv1")
    relu1_1 = tf.nn.relu(tf.nn.conv2d(fake, conv.kernel, 1, "SAME") + conv.bias)
    np.testing.assert_allclose(base(fake)[0].numpy(), relu1_1.numpy(), atol=1e-5)
    assert [t.shape[-1] for t in base(fake)] == [64, 128, 256, 512, 512]


def test_vgg_weights_from_a_torchvision_state_dict(tmp_path, vgg_loss):
    # A synthetic torchvision-keyed file: the loader must place each conv by its feature index.
    rng = np.random.default_rng(5)
    full = keras.applications.VGG19(include_top=False, weights=None)  # all 16 convs
    convs = [layer for layer in full.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == len(losses._TORCHVISION_CONV_INDICES)
    state = {}
    for layer, idx in zip(convs, losses._TORCHVISION_CONV_INDICES):
        kh, kw, cin, cout = layer.kernel.shape
        state[f"features.{idx}.weight"] = rng.normal(size=(cout, cin, kh, kw)).astype(np.float32)
        state[f"features.{idx}.bias"] = rng.normal(size=(cout,)).astype(np.float32)
    path = tmp_path / "vgg19.npz"
    np.savez(path, **state)
    loaded = losses.VGGLoss(weights=path)
    first = [layer for layer in loaded.model.layers if layer.__class__.__name__ == "Conv2D"][0]
    np.testing.assert_array_equal(first.kernel.numpy(),
                                  np.transpose(state["features.0.weight"], (2, 3, 1, 0)))
    del state["features.34.bias"]
    np.savez(path, **state)
    with pytest.raises(ValueError, match="features.34.bias"):
        losses.VGGLoss(weights=path)


def test_vgg_off_without_weights_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        assert losses.make_vgg_loss(None, 10.0) is None
    assert "VGG perceptual loss is OFF" in caplog.text
    with pytest.raises(FileNotFoundError, match="loss.vgg_weights"):
        losses.make_vgg_loss("/nonexistent/vgg19.npz", 10.0)
