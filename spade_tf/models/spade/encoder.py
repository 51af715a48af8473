"""``ConvEncoder`` (spec §4): the style encoder of the VAE mode, in NHWC."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from spade_tf.config import InitType, ModelConfig, NormLayer, PerfConfig
from spade_tf.layers import leaky_relu, make_conv, make_initializer, make_norm_layer
from spade_tf.perf import pop_legacy_perf_keys, resolve_perf

ENCODER_INPUT_SIZE = 256  # the reference resizes every style image to 256 x 256


@keras.saving.register_keras_serializable(package="spade_tf")
class ConvEncoder(keras.Model):
    """The image encoder of SPADE's multimodal (VAE) mode (Park et al., CVPR 2019, §3.3).

    Six (five below crop 256) 3x3 stride-2 convs with spectral norm and instance norm, LReLU
    between them and after the last, then two linear heads on the NCHW-flattened map.

    Deviation: the reference's heads are fixed to an 8ndf x 4 x 4 input, so it crashes for
    crop_size < 256 (spec §4). Here the heads take whatever the last map holds (8 x 8 then), so
    small VAE models work; at crop_size >= 256 the shapes and parameters are the reference's.

    Args:
        base_filters: the width, ``--ngf`` (the reference's ``--nef`` is unused).
        crop_size: ``--crop_size``; the sixth conv exists iff crop_size >= 256.
        z_dim: size of mu and logvar, the generator's ``--z_dim`` (the reference hard-codes
            256 here, which is its ``--z_dim`` default).
        norm: ``--norm_E`` after 'spectral': ``instance`` | ``batch`` | ``sync_batch`` | ``none``.
        spectral: spectral norm on the convs.
        init_type: ``--init_type``.
        init_gain: ``--init_variance``.
        perf: how it computes (``PerfConfig``: ``filter_gradient``, and
            ``closed_form_gradients`` for the norms); not part of the config.
        **kwargs: standard ``keras.Model`` arguments.

    Call arguments:
        image: NHWC RGB in [-1, 1], any size (resized bilinearly to 256 x 256, no antialias).
        training: Python bool.

    Returns:
        ``(mu, logvar)``, each [N, z_dim].
    """

    def __init__(self, base_filters=64, crop_size=256, z_dim=256, norm="instance",
                 spectral=True, init_type="xavier", init_gain=0.02, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        z_dim = kwargs.pop("latent_dim", z_dim)  # its name in configs saved before 0.2
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.base_filters = int(base_filters)
        self.crop_size = int(crop_size)
        self.z_dim = int(z_dim)
        self.norm = str(NormLayer.parse(norm, "norm"))
        self.spectral = bool(spectral)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)

        nf = self.base_filters
        widths = [nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf] + ([8 * nf] if self.crop_size >= 256 else [])
        use_bias = self.norm == NormLayer.NONE.value  # the reference drops it before a norm
        # Named attributes, not lists: Keras 3 lists are invisible to tf.train.Checkpoint.
        self.num_layers = len(widths)
        for i, filters in enumerate(widths, start=1):
            setattr(self, f"layer{i}", make_conv(
                self.spectral, filters, 3, strides=2, padding=1, use_bias=use_bias,
                init_type=self.init_type, init_gain=self.init_gain, perf=self.perf,
                name=f"layer{i}"))
            setattr(self, f"layer{i}_norm",
                    make_norm_layer(self.norm, self.init_gain, name=f"layer{i}_norm",
                                    perf=self.perf))
        dense_init = make_initializer(self.init_type, self.init_gain)
        self.fc_mu = keras.layers.Dense(self.z_dim, kernel_initializer=dense_init, name="fc_mu")
        self.fc_var = keras.layers.Dense(self.z_dim, kernel_initializer=dense_init,
                                         name="fc_var")

    @property
    def convs(self) -> list:
        return [getattr(self, f"layer{i}") for i in range(1, self.num_layers + 1)]

    @property
    def norms(self) -> list:
        return [getattr(self, f"layer{i}_norm") for i in range(1, self.num_layers + 1)]

    def build(self, image_shape):
        n, s = image_shape[0], ENCODER_INPUT_SIZE
        c = 3
        for conv, norm in zip(self.convs, self.norms):
            conv.build((n, s, s, c))
            s, c = (s + 2 - 3) // 2 + 1, conv.filters
            if norm is not None:
                norm.build((n, s, s, c))
        flat = (n, c * s * s)
        self.fc_mu.build(flat)
        self.fc_var.build(flat)

    def call(self, image, training=False):
        training = bool(training)
        x = ops.cast(image, self.compute_dtype)
        if tuple(x.shape[1:3]) != (ENCODER_INPUT_SIZE, ENCODER_INPUT_SIZE):
            # F.interpolate(bilinear, align_corners=False) == tf.image.resize without antialias.
            x = tf.image.resize(x, (ENCODER_INPUT_SIZE, ENCODER_INPUT_SIZE), "bilinear",
                                antialias=False)
            x = ops.cast(x, self.compute_dtype)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i > 0:
                x = leaky_relu(x)
            x = conv(x, training=training)
            if norm is not None:
                x = norm(x, training=training)
        x = leaky_relu(x)
        # Flatten in NCHW order, as the reference's x.view(N, -1) on an NCHW tensor.
        x = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, x.shape[-1] * x.shape[1] * x.shape[2]))
        return self.fc_mu(x), self.fc_var(x)

    def get_config(self):
        config = super().get_config()
        config.update(base_filters=self.base_filters, crop_size=self.crop_size,
                      z_dim=self.z_dim, norm=self.norm, spectral=self.spectral,
                      init_type=self.init_type, init_gain=self.init_gain)
        return config


def reparameterize(mu, logvar, eps):
    """z = eps * exp(0.5 * logvar) + mu (spec §4)."""
    return eps * ops.exp(0.5 * logvar) + mu


def encoder_from_config(model: ModelConfig, perf: PerfConfig | None = None) -> ConvEncoder:
    """Builds (with weights) the encoder for ``model`` (``perf``: default ``auto``)."""
    e = ConvEncoder(base_filters=model.base_filters, crop_size=model.crop_size,
                    z_dim=model.z_dim, norm=model.encoder_norm.value,
                    spectral=model.encoder_spectral, init_type=model.init_type.value,
                    init_gain=model.init_gain, perf=perf, name="encoder")
    e.build((None, ENCODER_INPUT_SIZE, ENCODER_INPUT_SIZE, 3))
    return e
