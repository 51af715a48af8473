"""``MultiscaleDiscriminator`` of ``NLayerDiscriminator``s (spec §5), in NHWC."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from spade_tf.config import InitType, ModelConfig, NormLayer, PerfConfig
from spade_tf.layers import TorchConv2D, leaky_relu, make_conv, make_norm_layer
from spade_tf.perf import pop_legacy_perf_keys, resolve_perf

KERNEL = 4
PADDING = math.ceil((KERNEL - 1.0) / 2)  # = 2, as in the reference


def avg_pool_3x3_s2_exclude_pad(x):
    """``F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)``.

    Border windows average only the valid pixels. TF's 'SAME' pooling pads 0/1 (not 1/1) for
    even sizes, so both the sum and the count of valid pixels are pooled from an explicit pad.
    """
    pad = [[0, 0], [1, 1], [1, 1], [0, 0]]
    total = tf.nn.avg_pool2d(tf.pad(x, pad), 3, 2, "VALID")
    ones = tf.ones_like(x[:1, :, :, :1])
    count = tf.nn.avg_pool2d(tf.pad(ones, pad), 3, 2, "VALID")
    return total / count


def split_labels(x, label_channels):
    """(labels, image) from D's input: a ``(labels, image)`` pair already, or their concat."""
    if isinstance(x, (tuple, list)):
        return tuple(x)
    return x[..., :label_channels], x[..., label_channels:]


def add_shared_labels(from_images, from_labels):
    """``from_images + from_labels``, where the label batch may be shared by stacked copies.

    ``GauGAN.discriminate`` stacks the fake and the real image on the batch axis; their label
    maps are the same, so D's label part is computed for one copy (n examples) and added to
    each of the k·n image examples: image example ``j·n + i`` gets label example ``i``. Adding a
    broadcast [1, n, ...] to [k, n, ...] gives the same sums as adding the label part computed
    k times; its gradient (the label kernel's, in the D step) is the sum over the copies.
    """
    n_img, n_lab = from_images.shape[0], from_labels.shape[0]
    if n_img is not None and n_lab is not None:
        if n_img == n_lab:
            return from_images + from_labels
        if n_img % n_lab:
            raise ValueError(f"D's input: the image batch ({n_img}) must be a multiple of the "
                             f"label batch ({n_lab}), whose maps it shares")
    shape = tf.shape(from_images)
    stacked = tf.reshape(from_images, tf.concat([[-1], tf.shape(from_labels)], 0))
    return tf.reshape(stacked + from_labels[None], shape)


@keras.saving.register_keras_serializable(package="spade_tf")
class NLayerDiscriminator(keras.layers.Layer):
    """The PatchGAN discriminator of one scale (spec §5).

    ``model0``: 4x4 stride-2 conv with bias, LReLU (no spectral norm). ``model1..n-1``: 4x4 convs
    (spectral norm, then the norm; widths double up to 512; the last one has stride 1), LReLU.
    ``model_n``: 4x4 stride-1 conv to one channel with bias (the patch logits). Padding 2.

    Args:
        base_filters: ``--ndf``.
        num_layers: ``--n_layers_D``.
        norm: ``--norm_D`` after 'spectral': ``instance`` | ``batch`` | ``sync_batch`` | ``none``.
        spectral: spectral norm on model1..n-1 (the reference requires it).
        init_type: ``--init_type``.
        init_gain: ``--init_variance``.
        label_channels: how many leading input channels are the semantic map; None: unknown.
        perf: how it computes (``PerfConfig``; not part of the config): ``filter_gradient``,
            ``closed_form_gradients`` for the norms, and ``split_discriminator_input``: with
            ``label_channels`` known, model0 runs as two convs (label channels, image channels,
            their kernel slices), since the semantic map never needs a gradient: the backward
            pass then computes only the image channels' gradient, 3 of the ~155 channels (the
            same sums), and the label part may be computed once for stacked copies of the
            images (see ``add_shared_labels``).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Call arguments:
        x: NHWC ``concat([semantics, image], -1)``.
        training: Python bool.

    Returns:
        the list of the n + 1 layer outputs (features after LReLU, logits last).
    """

    def __init__(self, base_filters=64, num_layers=4, norm="instance", spectral=True,
                 init_type="xavier", init_gain=0.02, label_channels=None, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.label_channels = None if label_channels is None else int(label_channels)
        self.base_filters = int(base_filters)
        self.num_layers = int(num_layers)
        self.norm = str(NormLayer.parse(norm, "norm"))
        self.spectral = bool(spectral)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)

        init = dict(init_type=self.init_type, init_gain=self.init_gain, perf=self.perf)
        nf = self.base_filters
        # Named attributes, not lists: Keras 3 lists are invisible to tf.train.Checkpoint.
        self.model0 = TorchConv2D(nf, KERNEL, strides=2, padding=PADDING, name="model0", **init)
        self.model0_norm = None
        use_bias = self.norm == NormLayer.NONE.value
        for n in range(1, self.num_layers):
            nf = min(nf * 2, 512)
            stride = 1 if n == self.num_layers - 1 else 2
            setattr(self, f"model{n}", make_conv(self.spectral, nf, KERNEL, strides=stride,
                                                 padding=PADDING, use_bias=use_bias,
                                                 name=f"model{n}", **init))
            setattr(self, f"model{n}_norm",
                    make_norm_layer(self.norm, self.init_gain, name=f"model{n}_norm",
                                    perf=self.perf))
        last = self.num_layers
        setattr(self, f"model{last}", TorchConv2D(1, KERNEL, strides=1, padding=PADDING,
                                                  name=f"model{last}", **init))
        setattr(self, f"model{last}_norm", None)

    @property
    def convs(self) -> list:
        return [getattr(self, f"model{i}") for i in range(self.num_layers + 1)]

    @property
    def norms(self) -> list:
        return [getattr(self, f"model{i}_norm") for i in range(self.num_layers + 1)]

    @property
    def splits_input(self) -> bool:
        """model0 runs as (label, image) convs (``perf.split_discriminator_input``)."""
        return bool(self.label_channels) and bool(self.perf.split_discriminator_input)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv, norm in zip(self.convs, self.norms):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if norm is not None:
                norm.build(shape)

    def _first_conv(self, x):
        """model0 on (labels, image), the labels held constant."""
        conv, n = self.model0, self.label_channels
        labels, image = split_labels(x, n)
        kernel = ops.cast(conv.kernel, conv.compute_dtype)
        y = add_shared_labels(conv.convolve(image, kernel[:, :, n:]),
                              conv.convolve(tf.stop_gradient(labels), kernel[:, :, :n]))
        return y + ops.cast(conv.bias, conv.compute_dtype)

    def call(self, x, training=False):
        outputs = []
        last = len(self.convs) - 1
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if i == 0 and self.splits_input:
                x = self._first_conv(x)
            else:
                x = conv(x, training=training)
            if norm is not None:
                x = norm(x, training=training)
            if i != last:
                x = leaky_relu(x)
            outputs.append(x)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(base_filters=self.base_filters, num_layers=self.num_layers, norm=self.norm,
                      spectral=self.spectral, init_type=self.init_type, init_gain=self.init_gain,
                      label_channels=self.label_channels)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class MultiscaleDiscriminator(keras.Model):
    """``num_D`` PatchGAN discriminators on successively 2x average-pooled inputs (spec §5).

    Args:
        num_discriminators: ``--num_D``.
        base_filters: ``--ndf``.
        num_layers: ``--n_layers_D``.
        norm: ``--norm_D`` after 'spectral'.
        spectral: spectral norm on the middle convs.
        return_features: return every layer's output (for feature matching), not only the logits
            (the reference returns only the logits with ``--no_ganFeat_loss``).
        init_type: ``--init_type``.
        init_gain: ``--init_variance``.
        label_channels: leading input channels that are the semantic map (see
            ``NLayerDiscriminator``).
        perf: how it computes (``PerfConfig``; see ``NLayerDiscriminator``; not part of the
            config).
        **kwargs: standard ``keras.Model`` arguments.

    Call arguments:
        x: NHWC ``concat([semantics, image], -1)``; fake and real may be stacked on the batch
            axis. When it splits its input (``splits_input``), also the pair ``(semantics, image)``, which saves the
            concat and the slicing (``GauGAN.discriminate`` passes that). In the pair the image
            batch may be k copies of the semantics' batch stacked (fake and real: k = 2): the
            label part of the first conv, and the labels' pooling, then run once for all copies.
        training: Python bool.

    Returns:
        a list (per scale, full resolution first) of lists of NHWC outputs, the logits last.
    """

    def __init__(self, num_discriminators=2, base_filters=64, num_layers=4, norm="instance",
                 spectral=True, return_features=True, init_type="xavier", init_gain=0.02,
                 label_channels=None, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.label_channels = None if label_channels is None else int(label_channels)
        self.num_discriminators = int(num_discriminators)
        self.base_filters = int(base_filters)
        self.num_layers = int(num_layers)
        self.norm = str(NormLayer.parse(norm, "norm"))
        self.spectral = bool(spectral)
        self.return_features = bool(return_features)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        for i in range(self.num_discriminators):  # attributes, not a list (see NLayerDiscriminator)
            setattr(self, f"discriminator_{i}", NLayerDiscriminator(
                self.base_filters, self.num_layers, self.norm, self.spectral, self.init_type,
                self.init_gain, label_channels=self.label_channels, perf=self.perf,
                name=f"discriminator_{i}"))

    @property
    def discriminators(self) -> list:
        return [getattr(self, f"discriminator_{i}") for i in range(self.num_discriminators)]

    @property
    def splits_input(self) -> bool:
        """Labels and image go through D apart (``perf.split_discriminator_input``)."""
        return bool(self.label_channels) and bool(self.perf.split_discriminator_input)

    def build(self, input_shape):
        n, h, w, c = input_shape
        for d in self.discriminators:
            d.build((n, h, w, c))
            h = None if h is None else (h - 1) // 2 + 1
            w = None if w is None else (w - 1) // 2 + 1

    def call(self, x, training=False):
        training = bool(training)
        split = self.splits_input
        if split:
            # Labels and image pooled apart (the same per-channel averages): the gradient then
            # flows back through the image channels' pooling only.
            x = tuple(ops.cast(t, self.compute_dtype) for t in split_labels(x, self.label_channels))
            x = (tf.stop_gradient(x[0]), x[1])
        else:
            x = ops.cast(x, self.compute_dtype)
        results = []
        for i, d in enumerate(self.discriminators):
            outputs = d(x, training=training)
            results.append(outputs if self.return_features else outputs[-1:])
            if i != len(self.discriminators) - 1:
                x = (tuple(avg_pool_3x3_s2_exclude_pad(t) for t in x) if split
                     else avg_pool_3x3_s2_exclude_pad(x))
        return results

    def get_config(self):
        config = super().get_config()
        config.update(num_discriminators=self.num_discriminators, base_filters=self.base_filters,
                      num_layers=self.num_layers, norm=self.norm, spectral=self.spectral,
                      return_features=self.return_features, init_type=self.init_type,
                      init_gain=self.init_gain, label_channels=self.label_channels)
        return config


def discriminator_from_config(model: ModelConfig, return_features: bool = True,
                              perf: PerfConfig | None = None):
    """Builds (with weights) the multiscale discriminator for ``model`` (``perf``: default
    ``auto``, resolved for this device)."""
    d = MultiscaleDiscriminator(
        num_discriminators=model.num_discriminators, base_filters=model.disc_filters,
        num_layers=model.disc_layers, norm=model.disc_norm.value, spectral=model.disc_spectral,
        return_features=return_features, init_type=model.init_type.value,
        init_gain=model.discriminator_init_gain, label_channels=model.semantic_channels, perf=perf,
        name="discriminator")
    h, w = model.output_hw
    d.build((None, h, w, model.semantic_channels + 3))
    return d
