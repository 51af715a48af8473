"""OASIS (boschresearch/OASIS) number for number: fixture F, made by running the official code,
through the public API (spade_tf.convert, the networks' calls, spade_tf.losses)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import import_fixture, nchw_to_nhwc
from spade_tf import losses
from spade_tf.config import Family, load_config
from spade_tf.semantics import to_semantics

ATOL = 1e-4


def _err(ours, ref):
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.max(np.abs(ours - ref)))


def _inputs(fx, config):
    sem = to_semantics(fx["in/label"][:, 0], config=config)
    return (sem, tf.constant(fx["in/z"]), tf.constant(nchw_to_nhwc(fx["in/image"])),
            tf.constant(nchw_to_nhwc(fx["in/labelmix_mask"]).astype(np.float32)))


def test_f_config_and_oasis_label_layout(fix_f, nets_f):
    nets, config = nets_f
    assert config.model.family is Family.OASIS
    assert config.model.semantic_channels == fix_f.meta["opt"]["semantic_nc"] == 6
    assert config.train.ema_decay == pytest.approx(0.9999)
    assert (config.train.lr_g, config.train.lr_d) == (1e-4, 4e-4)
    assert nets.ema_generator is not None and nets.encoder is None
    sem, *_ = _inputs(fix_f, config)
    np.testing.assert_array_equal(sem.numpy(), nchw_to_nhwc(fix_f["in/semantics"]).astype(np.float32))


def test_same_png_gives_different_layouts_for_spade_and_oasis():
    label = np.array([[[0, 1, 2, 255]]], np.int32)
    spade = load_config("tiny", ["model.use_instance=false"])  # 4 classes + dontcare
    oasis = load_config("tiny", ["model.use_instance=false", "model.generator=oasis"])
    a = np.argmax(to_semantics(label, config=spade).numpy(), -1)[0, 0]
    b = np.argmax(to_semantics(label, config=oasis).numpy(), -1)[0, 0]
    assert a.tolist() == [0, 1, 2, 4]  # SPADE: dontcare is the last channel
    assert b.tolist() == [0, 1, 2, 0]  # OASIS: the data's id 0 and 255 are dontcare, channel 0
    shifted = load_config("tiny", ["model.use_instance=false", "model.generator=oasis",
                                   "model.contain_dontcare=false"])
    c = np.argmax(to_semantics(label, config=shifted).numpy(), -1)[0, 0]
    assert c.tolist() == [1, 2, 3, 0]  # COCO-Stuff / synthscapes: every id moves up by one
    with pytest.raises(tf.errors.InvalidArgumentError, match="found 5"):
        to_semantics(np.array([[[5]]], np.int32), config=oasis)


def test_f_generator_eval_every_activation_and_ema(fix_f, nets_f):
    nets, config = nets_f
    sem, z, _, _ = _inputs(fix_f, config)
    image, acts = nets.generator(sem, noise=z, training=False, return_activations=True)
    assert _err(image, nchw_to_nhwc(fix_f["out/fake_eval"])) <= ATOL
    keys = [k for k in fix_f.keys("act/") if k != "act/body.0.norm_0"]
    assert len(keys) == 9  # fc_in, fc, body.0-5, conv_img
    for key in keys:
        assert _err(acts[key[4:]], nchw_to_nhwc(fix_f[key])) <= ATOL, key
    # the same noise as a 3D map: what the official code draws, broadcast
    noise = tf.constant(nchw_to_nhwc(fix_f["in/noise"]))
    assert _err(nets.generator(sem, noise=noise), nchw_to_nhwc(fix_f["out/fake_eval"])) <= ATOL
    seg = tf.concat([noise, sem], -1)  # noise first, then the one-hot
    first = nets.generator.body_0.norm_0(tf.constant(nchw_to_nhwc(fix_f["act/fc"])), seg)
    assert _err(first, nchw_to_nhwc(fix_f["act/body.0.norm_0"])) <= ATOL
    ema = nets.ema_generator(sem, noise=z, training=False)
    assert _err(ema, nchw_to_nhwc(fix_f["out/fake_ema_eval"])) <= ATOL


def test_f_generator_train_mode(fix_f):
    nets, config = import_fixture(fix_f)
    sem, z, _, _ = _inputs(fix_f, config)
    before = nets.generator.body_0.conv_0.u.numpy().copy()
    image = nets.generator(sem, noise=z, training=True)
    assert _err(image, nchw_to_nhwc(fix_f["out/fake_train"])) <= ATOL
    assert not np.array_equal(before, nets.generator.body_0.conv_0.u.numpy())


def _d_eval(fx, nets_and_config):
    nets, config = nets_and_config
    sem, _, real, mask = _inputs(fx, config)
    fake = tf.constant(nchw_to_nhwc(fx["out/fake_eval"]))
    mixed = losses.labelmix_images(mask, real, fake)
    assert _err(mixed, nchw_to_nhwc(fx["in/mixed_image"])) <= ATOL
    out = {}
    for kind, x in (("fake", fake), ("real", real), ("mixed", mixed)):
        out[kind] = nets.discriminator(x, training=False, return_activations=True)
    return sem, mask, out


def test_f_discriminator_blocks_and_logits(fix_f, nets_f):
    _, _, out = _d_eval(fix_f, nets_f)
    for kind in ("fake", "real", "mixed"):
        logits, acts = out[kind]
        assert logits.shape[-1] == 7  # N+1: channel 0 = fake
        assert _err(logits, nchw_to_nhwc(fix_f[f"d/{kind}/logits"])) <= ATOL, kind
        keys = fix_f.keys(f"d/{kind}/body")
        assert len(keys) == (12 if kind != "mixed" else 0)
        for key in keys:
            assert _err(acts[key.split("/")[-1]], nchw_to_nhwc(fix_f[key])) <= ATOL, key


def test_f_class_weights_targets_and_losses(fix_f, nets_f):
    sem, mask, out = _d_eval(fix_f, nets_f)
    np.testing.assert_allclose(losses.oasis_class_weights(sem).numpy(),
                               fix_f["loss/class_weights"], rtol=1e-5, atol=1e-6)
    assert _err(losses.oasis_weight_map(sem), fix_f["loss/weight_map"]) <= ATOL
    np.testing.assert_array_equal(losses.oasis_targets(sem).numpy(), fix_f["loss/target_real"])
    ours = losses.oasis_losses(out["fake"][0], out["real"][0], out["mixed"][0], sem, mask,
                               lambda_labelmix=nets_f[1].loss.lambda_labelmix)
    for name in ("G_adv", "D_fake", "D_real", "D_labelmix"):
        assert abs(float(ours[name]) - float(fix_f[f"loss/{name}"])) <= ATOL, name
    d_total = ours["D_fake"] + ours["D_real"] + ours["D_labelmix"]
    assert abs(float(d_total) - float(fix_f["loss/D_total"])) <= ATOL
    assert abs(float(ours["D_labelmix"]) / 10.0 - float(fix_f["loss/labelmix_mse"])) <= ATOL


def test_f_losses_in_train_mode(fix_f):
    """``loss_train/``: each from a fresh import, with the official order of power iterations."""
    nets, config = import_fixture(fix_f)
    sem, z, real, mask = _inputs(fix_f, config)
    fake = nets.generator(sem, noise=z, training=True)
    g_adv = losses.oasis_real_loss(nets.discriminator(fake, training=True), sem,
                                   losses.oasis_weight_map(sem))
    assert abs(float(g_adv) - float(fix_f["loss_train/G_adv"])) <= ATOL
    nets, _ = import_fixture(fix_f)
    fake = nets.generator(sem, noise=z, training=True)
    d_fake = nets.discriminator(fake, training=True)
    d_real = nets.discriminator(real, training=True)
    d_mixed = nets.discriminator(losses.labelmix_images(mask, real, fake), training=True)
    ours = losses.oasis_losses(d_fake, d_real, d_mixed, sem, mask, 10.0)
    for name in ("D_fake", "D_real", "D_labelmix"):
        assert abs(float(ours[name]) - float(fix_f[f"loss_train/{name}"])) <= ATOL, name


def test_class_weights_absent_classes_and_global_batch():
    onehot = tf.one_hot(np.array([[[1, 1, 2, 0]], [[2, 2, 2, 0]]], np.int32), 4)  # class 3 absent
    w = losses.oasis_class_weights(onehot).numpy()
    # 8 pixels, n = 2 classes present (dontcare excluded): 8 / (2 * count)
    assert w[0] == 0 and np.isinf(w[3])
    np.testing.assert_allclose(w[1:3], [8 / (2 * 2), 8 / (2 * 4)])
    assert np.isfinite(losses.oasis_weight_map(onehot).numpy()).all()


def test_labelmix_mask_is_per_image_and_class():
    label = np.zeros((64, 8, 8), np.int32)
    label[:, :, 4:] = 1
    onehot = tf.one_hot(label, 3)
    mask = losses.labelmix_mask(onehot, seed=3).numpy()[..., 0]
    # every class region is wholly 0 or 1 within an image
    assert ((mask[:, :, :4] == mask[:, :1, :1]).all() and (mask[:, :, 4:] == mask[:, :1, 4:5]).all())
    left, right = mask[:, 0, 0], mask[:, 0, 4]
    # class 0 (dontcare) does not take class 1's bit: independent bits per image and class
    assert 0 < (left != right).mean() < 1 and 0 < left.mean() < 1


def test_f_round_trip_to_official(fix_f, nets_f):
    from spade_tf.convert import to_official

    state = to_official(nets_f[0])
    assert set(state) == {"netG", "netD", "netEMA"}
    for net in state:
        for key, value in state[net].items():
            np.testing.assert_allclose(value, fix_f.state[net][key], rtol=0, atol=0, err_msg=key)
