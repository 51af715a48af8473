"""``OASISDiscriminator``: boschresearch/OASIS ``models/discriminator.py``, NHWC.

A U-Net semantic segmenter of the image alone (no label map at its input) with N+1 outputs per
pixel: channel 0 is "fake", channel c + 1 is class c (Sushko, Schonfeld et al., ICLR 2021,
Sec. 3.1 and Fig. 2).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from spade_tf.config import InitType, ModelConfig, PerfConfig
from spade_tf.layers import LRELU_SLOPE, TorchConv2D, make_conv, upsample_nearest_2x
from spade_tf.perf import resolve_perf


def d_leaky_relu(x):
    """LeakyReLU 0.2 as ``max(x, 0.2 x)``: the same values (0.2 x is the product LeakyRelu
    computes), and the same gradient but at exactly 0. Grappler's remapper tries to fuse
    Conv2D + bias + LeakyRelu here, fails on the training graph ("remapper failed: ... fanout
    LeakyReluGrad exist for missing node"), prints that error at every trace and leaves the
    whole graph unremapped; the max form matches no fusion pattern."""
    return tf.maximum(x, LRELU_SLOPE * x)


def avg_pool_2x2(x):
    """``nn.AvgPool2d(2)``: the mean of each 2x2 block (odd edges dropped, as PyTorch)."""
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def widths(width: int, num_res_blocks: int = 6) -> list[int]:
    """The encoder's widths ``[3, 2k, 2k, 4k, 4k, 8k, 8k]`` for a width k (OASIS hard-codes
    k = 64: ``[3, 128, 128, 256, 256, 512, 512]``), cut to ``num_res_blocks`` blocks."""
    k = int(width)
    return [3, 2 * k, 2 * k, 4 * k, 4 * k, 8 * k, 8 * k][: num_res_blocks + 1]


@keras.saving.register_keras_serializable(package="spade_tf")
class ResidualBlockD(keras.layers.Layer):
    """OASIS' ``residual_block_D``: a residual block that goes down (2x2 average pooling) or
    up (2x nearest), with spectral-norm 3x3 convs and no normalization layers.

    - ``conv1``: the first block of the encoder starts with the conv alone; the others with
      LeakyReLU 0.2 (then, going up, the 2x upsampling) before it.
    - ``conv2``: LeakyReLU 0.2, conv; going down, the result is then pooled.
    - shortcut (``conv_s``, a 1x1 conv with bias, iff the widths differ): the first block pools
      before it; the others upsample before it, or pool after it.

    Args:
        filters: output channels (``fout``; the middle width is ``fout`` too).
        direction: ``down`` or ``up``.
        first: the encoder's first block.
        spectral: not ``--no_spectral_norm``.
        init_type: the init (OASIS: ``xavier``).
        init_gain: its gain (OASIS: 0.02).
        perf: how the convs compute (not part of the config).
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    DIRECTIONS = ("down", "up")

    def __init__(self, filters, direction="down", first=False, spectral=True, init_type="xavier",
                 init_gain=0.02, perf=None, **kwargs):
        super().__init__(**kwargs)
        if direction not in self.DIRECTIONS:
            raise ValueError(f"direction: invalid value {direction!r}; allowed values: 'down', 'up'")
        self.filters = int(filters)
        self.direction = direction
        self.first = bool(first)
        self.spectral = bool(spectral)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.perf = resolve_perf(perf)

    def build(self, input_shape):
        fin = int(input_shape[-1])
        self.learned_shortcut = fin != self.filters
        init = dict(init_type=self.init_type, init_gain=self.init_gain, perf=self.perf)
        self.conv1 = make_conv(self.spectral, self.filters, 3, padding=1, name="conv1", **init)
        self.conv2 = make_conv(self.spectral, self.filters, 3, padding=1, name="conv2", **init)
        hw = list(input_shape[1:3])
        if self.direction == "up":
            hw = [None if n is None else 2 * n for n in hw]
        self.conv1.build((input_shape[0], *hw, fin))
        self.conv2.build((input_shape[0], *hw, self.filters))
        if self.learned_shortcut:
            self.conv_s = make_conv(self.spectral, self.filters, 1, name="conv_s", **init)
            self.conv_s.build((input_shape[0], *hw, fin))

    def _shortcut(self, x, training):
        if self.first:
            if self.direction == "down":
                x = avg_pool_2x2(x)
            return self.conv_s(x, training=training) if self.learned_shortcut else x
        if self.direction == "up":
            x = upsample_nearest_2x(x)
        if self.learned_shortcut:
            x = self.conv_s(x, training=training)
        if self.direction == "down":
            x = avg_pool_2x2(x)
        return x

    def call(self, x, training=False):
        x_s = self._shortcut(x, training)
        dx = x
        if not self.first:
            dx = d_leaky_relu(dx)
            if self.direction == "up":
                dx = upsample_nearest_2x(dx)
        dx = self.conv1(dx, training=training)
        dx = self.conv2(d_leaky_relu(dx), training=training)
        if self.direction == "down":
            dx = avg_pool_2x2(dx)
        return x_s + dx

    def compute_output_shape(self, input_shape):
        f = 0.5 if self.direction == "down" else 2
        hw = [None if n is None else int(n * f) for n in input_shape[1:3]]
        return (input_shape[0], *hw, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, direction=self.direction, first=self.first,
                      spectral=self.spectral, init_type=self.init_type, init_gain=self.init_gain)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class OASISDiscriminator(keras.Model):
    """OASIS' ``OASIS_Discriminator``: a U-Net of ``num_res_blocks`` down and as many up
    ``ResidualBlockD``s, then a 1x1 conv (no spectral norm) to ``semantic_nc + 1`` logits.

    Encoder widths ``[3, 2k, 2k, 4k, 4k, 8k, 8k]``. The decoder's first block maps 8k to the
    width of the encoder's second-to-last block; each later one takes the previous output
    concatenated after the skip from the mirrored encoder block (``cat(skip, x)``), and the
    last one ends at k. The official code ignores ``--channels_D`` and hard-codes k = 64
    (22.3 M parameters); here k is ``width`` (``model.disc_filters``), default 64, so the
    default is the official D exactly.

    Args:
        num_classes: the logits' classes, ``semantic_nc`` (one-hot channels, dontcare included);
            the output has ``num_classes + 1`` channels, channel 0 = fake.
        width: k above (``model.disc_filters``; the fixture's pattern of ``--channels_D``).
        num_res_blocks: ``--num_res_blocks`` (6).
        spectral: not ``--no_spectral_norm``.
        init_type: the init (OASIS: ``xavier``).
        init_gain: its gain (OASIS: 0.02).
        perf: how the convs compute (not part of the config).
        **kwargs: standard ``keras.Model`` arguments.

    Call arguments:
        image: NHWC image in [-1, 1] (no label map: OASIS' D segments the image).
        training: a power iteration per spectral-norm conv when True.
        return_activations: also return ``{"body_down.i": ..., "body_up.i": ...}``.

    Returns:
        NHWC logits ``[N, H, W, num_classes + 1]``.
    """

    def __init__(self, num_classes, width=64, num_res_blocks=6, spectral=True, init_type="xavier",
                 init_gain=0.02, perf=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.width = int(width)
        self.num_res_blocks = int(num_res_blocks)
        self.spectral = bool(spectral)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.perf = resolve_perf(perf)
        ch = widths(self.width, self.num_res_blocks)
        n = self.num_res_blocks
        init = dict(spectral=self.spectral, init_type=self.init_type, init_gain=self.init_gain,
                    perf=self.perf)
        for i in range(n):
            setattr(self, f"body_down_{i}", ResidualBlockD(ch[i + 1], "down", first=i == 0,
                                                           name=f"body_down_{i}", **init))
        ups = [ch[-2]] + [ch[-2 - i] for i in range(1, n - 1)] + [self.width]
        for i, f in enumerate(ups):
            setattr(self, f"body_up_{i}", ResidualBlockD(f, "up", name=f"body_up_{i}", **init))
        self.layer_up_last = TorchConv2D(self.num_classes + 1, 1, init_type=self.init_type,
                                         init_gain=self.init_gain, perf=self.perf,
                                         name="layer_up_last")

    @property
    def down_blocks(self) -> list[ResidualBlockD]:
        return [getattr(self, f"body_down_{i}") for i in range(self.num_res_blocks)]

    @property
    def up_blocks(self) -> list[ResidualBlockD]:
        return [getattr(self, f"body_up_{i}") for i in range(self.num_res_blocks)]

    def build(self, input_shape):
        shape = tuple(input_shape)
        skips = []
        for blk in self.down_blocks:
            blk.build(shape)
            shape = blk.compute_output_shape(shape)
            skips.append(shape)
        for i, blk in enumerate(self.up_blocks):
            if i:
                skip = skips[-i - 1]
                shape = shape[:3] + (skip[-1] + shape[-1],)
            blk.build(shape)
            shape = blk.compute_output_shape(shape)
        self.layer_up_last.build(shape)

    def call(self, image, training=False, return_activations=False):
        training = bool(training)
        x = tf.cast(image, self.compute_dtype)
        acts, skips = {}, []
        for i, blk in enumerate(self.down_blocks):
            x = blk(x, training=training)
            skips.append(x)
            acts[f"body_down.{i}"] = x
        for i, blk in enumerate(self.up_blocks):
            if i:
                x = tf.concat([skips[-i - 1], x], axis=-1)  # OASIS: cat(encoder_res, x)
            x = blk(x, training=training)
            acts[f"body_up.{i}"] = x
        logits = self.layer_up_last(x)
        return (logits, acts) if return_activations else logits

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, width=self.width,
                      num_res_blocks=self.num_res_blocks, spectral=self.spectral,
                      init_type=self.init_type, init_gain=self.init_gain)
        return config


def oasis_discriminator_from_config(model: ModelConfig,
                                    perf: PerfConfig | None = None) -> OASISDiscriminator:
    """Builds (with weights) the OASIS discriminator of ``model``."""
    d = OASISDiscriminator(model.num_label_channels, width=model.disc_filters,
                           num_res_blocks=model.num_res_blocks, spectral=model.disc_spectral,
                           init_type=model.init_type.value,
                           init_gain=model.discriminator_init_gain, perf=perf, name="discriminator")
    h, w = model.output_hw
    d.build((None, h, w, 3))
    return d
