"""Networks: shapes of every variant, call conventions, weights that save and load exactly."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config
from spade_tf.networks import build_networks, load_networks, save_networks
from spade_tf.semantics import to_semantics


def _tiny_batch(config, n=2, seed=0):
    rng = np.random.default_rng(seed)
    h, w = config.model.output_hw
    label = rng.integers(0, config.model.num_classes, size=(n, h, w)).astype(np.int32)
    inst = rng.integers(0, 3, size=(n, h, w)).astype(np.int32)
    image = rng.uniform(-1, 1, size=(n, h, w, 3)).astype(np.float32)
    return to_semantics(label, inst if config.model.use_instance else None, config=config), image


def test_call_conventions(tiny_nets, tiny_vae_config):
    sem, image = _tiny_batch(tiny_vae_config)
    mu, logvar = tiny_nets.encoder(image, training=False)
    assert mu.shape == logvar.shape == (2, tiny_vae_config.model.z_dim)
    fake = tiny_nets.generator(sem, z=mu, training=False)
    assert fake.shape == (2, 64, 64, 3)
    assert float(tf.reduce_max(tf.abs(fake))) <= 1.0
    outs = tiny_nets.discriminator(tf.concat([sem, fake], -1), training=False)
    assert len(outs) == 2 and all(len(s) == 5 for s in outs)
    assert [o.shape[-1] for o in outs[0]] == [8, 16, 32, 64, 1]
    assert outs[1][0].shape[1] == 17  # scale 1 sees the 3x3/2 average-pooled input (32 px)


def test_vae_generator_draws_z_from_its_seed_generator(tiny_nets, tiny_vae_config):
    sem, _ = _tiny_batch(tiny_vae_config, n=1)
    a = tiny_nets.generator(sem).numpy()
    b = tiny_nets.generator(sem).numpy()
    assert not np.allclose(a, b)  # fresh noise every call, not a fixed seed


def test_dynamic_spatial_shapes_give_the_same_output(tiny_nets, tiny_vae_config):
    sem, image = _tiny_batch(tiny_vae_config)
    z = tf.random.normal((2, tiny_vae_config.model.z_dim))
    channels = tiny_vae_config.model.semantic_channels
    fn = tf.function(lambda s, zz: tiny_nets.generator(s, z=zz),
                     input_signature=[tf.TensorSpec((None, None, None, channels)),
                                      tf.TensorSpec((None, tiny_vae_config.model.z_dim))])
    np.testing.assert_allclose(fn(sem, z).numpy(), tiny_nets.generator(sem, z=z).numpy(), atol=1e-6)


def test_wrong_semantic_size_is_a_clear_error(tiny_nets, tiny_vae_config):
    sem, _ = _tiny_batch(tiny_vae_config)
    with pytest.raises(ValueError, match=r"spatial size \(32, 32\).*produces \(64, 64\)"):
        tiny_nets.generator(sem[:, :32, :32])


@pytest.mark.parametrize("overrides,out_hw,final_nc", [
    (["model.num_upsampling_layers=more", "model.crop_size=128", "model.aspect_ratio=2.0"],
     (64, 128), 4),
    (["model.num_upsampling_layers=most", "model.crop_size=128"], (128, 128), 2),
    (["model.spade_norm=instance", "model.generator_spectral=false", "model.spade_kernel_size=1"],
     (64, 64), 4),
])
def test_generator_variants(overrides, out_hw, final_nc):
    config = load_config("tiny", overrides)
    nets = build_networks(config, discriminator=False)
    sem, _ = _tiny_batch(config, n=1)
    out = nets.generator(sem, training=True)
    assert out.shape == (1,) + out_hw + (3,)
    assert nets.generator.final_nc == final_nc


def _assert_same_weights(a, b):
    wa, wb = a.weights, b.weights
    assert [v.path for v in wa] == [v.path for v in wb]
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


def _perturbed_copy_of_state(nets, config):
    """Runs a training forward (changes u, v and BN statistics) so every kind of state differs
    from a fresh build."""
    sem, image = _tiny_batch(config)
    mu, _ = nets.encoder(image, training=True)
    fake = nets.generator(sem, z=mu, training=True)
    nets.discriminator(tf.concat([sem, fake], -1), training=True)


def test_weights_save_and_load_back_exactly(tmp_path, tiny_vae_config):
    keras.utils.set_random_seed(7)
    nets = build_networks(tiny_vae_config)
    _perturbed_copy_of_state(nets, tiny_vae_config)
    keras.utils.set_random_seed(8)
    fresh = build_networks(tiny_vae_config)
    for name, model in nets.as_dict().items():
        path = tmp_path / f"{name}.weights.h5"
        model.save_weights(path)
        other = fresh.as_dict()[name]
        assert not all(np.array_equal(x.numpy(), y.numpy())
                       for x, y in zip(model.weights, other.weights))
        other.load_weights(path)
        _assert_same_weights(model, other)


def test_checkpoint_folder_round_trip_and_errors(tmp_path, tiny_vae_config):
    keras.utils.set_random_seed(9)
    nets = build_networks(tiny_vae_config)
    _perturbed_copy_of_state(nets, tiny_vae_config)
    out = save_networks(nets, tiny_vae_config, tmp_path / "ckpt")
    loaded, config = load_networks(out)
    assert config == tiny_vae_config
    for name in ("generator", "discriminator", "encoder"):
        _assert_same_weights(getattr(nets, name), getattr(loaded, name))
    with pytest.raises(FileExistsError):
        save_networks(nets, tiny_vae_config, out)
    # A truncated data file is a clear error naming the checkpoint, not a bare IndexError.
    data = next(out.glob("networks.data-*"))
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ValueError, match="networks"):
        load_networks(out)
    with pytest.raises(FileNotFoundError, match="not a spade-tf checkpoint"):
        load_networks(tmp_path)


def test_model_get_config_round_trip_rebuilds_the_same_architecture(tiny_nets):
    for model in tiny_nets.as_dict().values():
        clone = type(model).from_config(model.get_config())
        assert clone.get_config() == model.get_config()


@pytest.mark.slow
@pytest.mark.parametrize("preset,g,g_vae,d,e", [
    ("ade20k", 96_492_483, 111_942_595, 5_836_930, 10_463_424),
    ("cityscapes", 93_048_003, 101_136_579, 5_601_410, 10_463_424),
    ("coco_stuff", 97_480_899, 112_626_883, 5_904_514, 10_463_424),
])
def test_parameter_counts_equal_the_official(preset, g, g_vae, d, e):
    # The official counts (spec §11, numel of nn.Parameters from the official constructors).
    counts = build_networks(load_config(preset)).param_counts()
    assert counts == {"generator": g, "discriminator": d}
    counts = build_networks(load_config(preset, ["model.use_vae=true"]),
                            discriminator=False).param_counts()
    assert counts == {"generator": g_vae, "encoder": e}
