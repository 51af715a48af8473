"""SPADE building blocks with the official (PyTorch) semantics, in NHWC.

Paper: Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization", CVPR 2019
(arXiv:1903.07291). Section numbers (§) refer to ``shared/reference/spade-architecture.md``.

The layers read in the reference's order (``normalization.py``, ``architecture.py``); the exact
but faster forms of their computations live in ``spade_tf.kernels``, and the small dispatchers
here (``conv2d``, ``label_map_conv``, ``label_branch_conv``) choose one as the layer's ``perf``
says. ``perf`` (a ``PerfConfig``, resolved for the device by ``spade_tf.perf.resolve_perf``) is
how a layer computes, not what: ``get_config`` leaves it out, and a reloaded model resolves it
for the machine it runs on.

Everything here is written against Keras 3 with the TensorFlow backend; the distribution-aware
pieces (synchronized batch statistics, replica-identical spectral-norm vectors) use
``tf.distribute`` directly.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from spade_tf.config import FilterGradient, InitType, LabelConv, NormLayer, SpadeNorm
from spade_tf.kernels.class_tables import class_lookup
from spade_tf.kernels.constant_map_conv import constant_map_conv
from spade_tf.kernels.conv_gradients import conv2d_forward_gradients
from spade_tf.kernels.delegate_forms import resize_nearest_2x
from spade_tf.kernels.norm_gradients import modulate, normalize_closed_form
from spade_tf.kernels.onehot_conv import onehot_conv, onehot_indices
from spade_tf.kernels.regions import class_hidden_features, regional_conv
from spade_tf.perf import pop_legacy_perf_keys, resolve_perf

LRELU_SLOPE = 0.2  # every LeakyReLU of the reference


def leaky_relu(x):
    return ops.leaky_relu(x, negative_slope=LRELU_SLOPE)


def at_least_float32(x):
    """``x`` as float32, or kept as float64: statistics and losses never run in 16 bits under
    mixed precision, and a float64 model (the distributed tests' exactness check) stays float64."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float64 else tf.cast(x, tf.float32)


# --------------------------------------------------------------------------- initialisation


def make_initializer(init_type: str | InitType = "xavier", gain: float = 0.02):
    """The kernel initializer of the reference's ``init_weights`` (spec §8); biases are zeros.

    ``xavier`` is ``xavier_normal_(gain)``: std = gain * sqrt(2 / (fan_in + fan_out)), with the
    receptive field counted in both fans, which is exactly Keras' ``VarianceScaling(gain**2,
    "fan_avg", "untruncated_normal")``.
    """
    t = InitType.parse(init_type, "init_type")
    if t is InitType.XAVIER:
        return keras.initializers.VarianceScaling(gain**2, "fan_avg", "untruncated_normal")
    if t is InitType.NORMAL:
        return keras.initializers.RandomNormal(0.0, gain)
    if t is InitType.XAVIER_UNIFORM:  # the reference ignores the gain here (fixed 1.0)
        return keras.initializers.VarianceScaling(1.0, "fan_avg", "uniform")
    if t is InitType.KAIMING:  # kaiming_normal_(a=0, mode='fan_in')
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")
    if t is InitType.ORTHOGONAL:
        return keras.initializers.Orthogonal(gain)
    # 'none' keeps PyTorch's default conv/linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
    # (PyTorch would also draw the biases from that range; we keep them at zero.)
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")


# --------------------------------------------------------------------------- resizing


def _legacy_nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    # PyTorch's legacy 'nearest': src = min(floor(dst * (in/out)), in - 1), in float32 like ATen.
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1).astype(np.int32)


def legacy_nearest_resize(x, size):
    """Resizes NHWC ``x`` to ``size`` (H, W) like PyTorch's ``F.interpolate(mode='nearest')``.

    The source index is floor(dst * in / out): for an integer down-factor k that is pixel k*i, the
    top-left of each k x k block. ``tf.image.resize(..., 'nearest')`` uses half-pixel centres and
    picks other pixels, so it must not be used for label maps (spec §1, step 2).
    """
    out_h, out_w = size[0], size[1]
    in_h, in_w = x.shape[1], x.shape[2]
    static = all(isinstance(s, (int, np.integer)) for s in (out_h, out_w, in_h, in_w))
    if not static:  # dynamic sizes: the same float32 index arithmetic, in the graph
        shape = tf.shape(x)
        for axis, out in ((1, out_h), (2, out_w)):
            n = shape[axis]
            scale = tf.cast(n, tf.float32) / tf.cast(out, tf.float32)
            idx = tf.cast(tf.floor(tf.cast(tf.range(out), tf.float32) * scale), tf.int32)
            x = tf.gather(x, tf.minimum(idx, n - 1), axis=axis)
        return x
    out_h, out_w = int(out_h), int(out_w)
    if (in_h, in_w) == (out_h, out_w):
        return x
    if in_h % out_h == 0 and in_w % out_w == 0:  # integer down-factor: a strided slice is exact
        return x[:, :: in_h // out_h, :: in_w // out_w, :]
    x = tf.gather(x, _legacy_nearest_indices(in_h, out_h), axis=1)
    return tf.gather(x, _legacy_nearest_indices(in_w, out_w), axis=2)


def upsample_nearest_2x(x, resize_op=False):
    """``nn.Upsample(scale_factor=2)``: every pixel repeated 2 x 2.

    Two ``repeat``s. One broadcast between reshapes has about a quarter of the graph nodes but
    its gradient (a sum over two strided axes) took 2.3x as long at 128x128x256 (49 against
    22 ms, 2026-12-02); the ade20k iteration took 4.98 against 4.43 s (single runs).
    ``resize_op`` (``perf.resize_upsampling``): one nearest resize op instead, the same pixels
    (``kernels/delegate_forms.py``; the TFLite GPU delegate takes no rank-5 tensor)."""
    if resize_op:
        return resize_nearest_2x(x)
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


# --------------------------------------------------------------------------- convolutions


def conv2d(x, kernel, strides=1, padding=0, swapped_gradients=False):
    """A convolution (NHWC, HWIO) with PyTorch's symmetric zero padding.

    Args:
        x: NHWC input.
        kernel: HWIO kernel (a tensor: cast and spectral-normalized already).
        strides: stride in both directions.
        padding: zero padding on each side (PyTorch's ``padding``).
        swapped_gradients: both gradients as forward convolutions
            (``kernels.conv_gradients``; ``perf.filter_gradient=swapped``).
    """
    k, p = int(kernel.shape[0]), int(padding)
    if k % 2 == 1 and p == k // 2 and strides == 1:
        pad = "SAME"  # symmetric here
    else:
        # An explicit pad op: with the conv's explicit padding the ade20k training step was
        # measured 15-20% slower here.
        pad = "VALID"
        if p:
            x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
    if swapped_gradients:
        return conv2d_forward_gradients(x, kernel, strides, pad)
    return tf.nn.conv2d(x, kernel, strides=strides, padding=pad)


@keras.saving.register_keras_serializable(package="spade_tf")
class TorchConv2D(keras.layers.Layer):
    """A 2-D convolution with PyTorch's explicit, symmetric zero padding.

    PyTorch's ``Conv2d(padding=p)`` pads p pixels on every side. Keras' ``padding="same"`` pads
    asymmetrically for strided convs (e.g. 3x3 stride 2 pads 0 top / 1 bottom), which shifts every
    output of the encoder and discriminator, so the padding is explicit here.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: stride in both directions.
        padding: zero padding on each side, in pixels (PyTorch's ``padding``).
        use_bias: whether to add a bias.
        init_type: the reference's ``--init_type`` for the kernel (biases start at zero).
        init_gain: the reference's ``--init_variance``.
        perf: how it computes (``PerfConfig``; default: ``auto`` for this device). Its
            ``filter_gradient`` chooses the gradient form (``kernels.conv_gradients``). Not
            part of the config.
        **kwargs: standard ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, use_bias=True,
                 init_type="xavier", init_gain=0.02, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = int(padding)
        self.use_bias = bool(use_bias)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)

    def _add_kernel(self, in_channels):
        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=make_initializer(self.init_type, self.init_gain), autocast=False)

    def build(self, input_shape):
        self._add_kernel(int(input_shape[-1]))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros",
                                        autocast=False)

    def effective_kernel(self, training=False):
        """The HWIO kernel the convolution uses."""
        return self.kernel

    def call(self, inputs, training=False):
        kernel = ops.cast(self.effective_kernel(training=bool(training)), self.compute_dtype)
        y = self.convolve(inputs, kernel)
        if self.use_bias:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def convolve(self, inputs, kernel):
        """This layer's convolution (padding, stride, gradient form) with another kernel: the
        fused SPADE convs run several layers' kernels concatenated through it."""
        swapped = self.perf.filter_gradient is FilterGradient.SWAPPED
        return conv2d(inputs, kernel, self.strides, self.padding, swapped)

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else (n + 2 * self.padding - self.kernel_size) // self.strides + 1
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias, init_type=self.init_type,
                      init_gain=self.init_gain)
        return config


def _l2_normalize(x, eps):
    # torch.nn.functional.normalize: x / max(||x||, eps)
    return x / tf.maximum(tf.norm(x), eps)


@keras.saving.register_keras_serializable(package="spade_tf")
class SpectralConv2D(TorchConv2D):
    """A convolution with PyTorch's spectral normalization (``torch.nn.utils.spectral_norm``).

    Unlike ``keras.layers.SpectralNormalization`` (spec §10), the trainable variable is the
    un-normalized ``kernel_orig`` and every forward divides it by sigma = u . (W v), so gradients
    flow through sigma exactly as in the reference:

    - training forward: one power iteration first (v <- normalize(W^T u), u <- normalize(W v)),
      u and v stored back, treated as constants for the gradient;
    - inference forward: no power iteration; sigma from the stored u and v.

    W is ``kernel_orig`` as a (out, in*k*k) matrix in PyTorch's OIHW order, so u (out,) and
    v (in*k*k,) are laid out exactly as the official ``weight_u`` / ``weight_v`` buffers.

    Under ``tf.distribute`` u and v are ``ONLY_FIRST_REPLICA`` variables: every replica computes
    the same iteration from the same weights, and the first replica's result is what is stored on
    all of them, so they can never drift apart.

    Deviation: the reference leaves u, v random at construction, so an untrained model in eval
    mode divides by a meaningless sigma. Here a freshly built layer runs a few power iterations
    on its initial kernel, so sigma is sensible from the start. Imported checkpoints overwrite u, v.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        strides: stride in both directions.
        padding: zero padding on each side, in pixels.
        use_bias: whether to add a bias (the reference drops it when a norm follows).
        init_type: ``--init_type`` for ``kernel_orig``.
        init_gain: ``--init_variance``.
        power_iterations: power iterations per training forward (the reference uses 1).
        epsilon: the normalization epsilon (PyTorch's 1e-12).
        perf: how it computes (see ``TorchConv2D``).
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    INIT_POWER_ITERATIONS = 10

    def __init__(self, filters, kernel_size, strides=1, padding=0, use_bias=True,
                 init_type="xavier", init_gain=0.02, power_iterations=1, epsilon=1e-12,
                 perf=None, **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                         init_type=init_type, init_gain=init_gain, perf=perf, **kwargs)
        self.power_iterations = int(power_iterations)
        self.epsilon = float(epsilon)

    def _add_kernel(self, in_channels):
        self.kernel_orig = self.add_weight(
            name="kernel_orig",
            shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=make_initializer(self.init_type, self.init_gain), autocast=False)
        unit = _UnitNormal()
        sync = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        self.u = self.add_weight(name="u", shape=(self.filters,), initializer=unit, **sync)
        self.v = self.add_weight(name="v", shape=(in_channels * self.kernel_size**2,),
                                 initializer=unit, **sync)
        with tf.init_scope():  # eager, even when the first call happens inside a tf.function
            u, v = self._power_iteration(self._hwio_matrix(), self.u, self.v,
                                         self.INIT_POWER_ITERATIONS)
            self.u.assign(u)
            self.v.assign(v)

    # W, the reference's (out, in*k*k) matrix in OIHW order, is never formed in the forward: transposing a 1024x1024x3x3 kernel
    # twice per step cost 2.4 s of each ade20k iteration. W v and W^T u are computed from the
    # HWIO kernel viewed as M = (k*k*in, out) (a free reshape), with only the short v / W^T u
    # vectors reordered between the reference's (in, kh, kw) and our (kh, kw, in) layout.

    def _hwio_matrix(self):
        return tf.reshape(self.kernel_orig, (-1, self.filters))

    def _v_to_hwi(self, v):
        k, c = self.kernel_size, self.kernel_orig.shape[2]
        return tf.reshape(tf.transpose(tf.reshape(v, (c, k, k)), (1, 2, 0)), (-1,))

    def _hwi_to_v(self, x):
        k, c = self.kernel_size, self.kernel_orig.shape[2]
        return tf.reshape(tf.transpose(tf.reshape(x, (k, k, c)), (2, 0, 1)), (-1,))

    def _power_iteration(self, m, u, v, n):
        m = tf.stop_gradient(m)
        u = tf.convert_to_tensor(u)
        v = tf.convert_to_tensor(v)
        for _ in range(n):
            v = _l2_normalize(self._hwi_to_v(tf.linalg.matvec(m, u)), self.epsilon)  # W^T u
            u = _l2_normalize(tf.linalg.matvec(m, self._v_to_hwi(v), transpose_a=True),
                              self.epsilon)  # W v
        return u, v

    def sigma(self, training=False):
        """The spectral norm estimate sigma = u . (W v); updates u, v when ``training``."""
        m = self._hwio_matrix()
        if training and self.power_iterations > 0:
            u, v = self._power_iteration(m, self.u, self.v, self.power_iterations)
            self.u.assign(u)
            self.v.assign(v)
        else:
            u, v = tf.convert_to_tensor(self.u), tf.convert_to_tensor(self.v)
        u, v = tf.stop_gradient(u), tf.stop_gradient(v)
        wv = tf.linalg.matvec(m, self._v_to_hwi(v), transpose_a=True)
        return tf.tensordot(u, wv, 1)

    def effective_kernel(self, training=False):
        return self.kernel_orig / self.sigma(training=training)

    def call(self, inputs, training=False):
        # conv(x, W / sigma) = conv(x, W) / sigma. Dividing whichever is smaller, the kernel or
        # the output, saves passes over 9.4M-weight kernels at 8x8 to 32x32 (their outputs are
        # 10-100x smaller), forward and backward; the numbers agree to float rounding.
        shape = self.compute_output_shape(inputs.shape)
        out_size = None if None in shape else math.prod(shape)
        if out_size is None or out_size >= math.prod(self.kernel_orig.shape):
            return super().call(inputs, training=training)
        sigma = ops.cast(self.sigma(training=bool(training)), self.compute_dtype)
        y = self.convolve(inputs, ops.cast(self.kernel_orig, self.compute_dtype)) / sigma
        if self.use_bias:
            y = y + ops.cast(self.bias, self.compute_dtype)
        return y

    def get_config(self):
        config = super().get_config()
        config.update(power_iterations=self.power_iterations, epsilon=self.epsilon)
        return config


class _UnitNormal(keras.initializers.Initializer):
    """N(0, 1) then L2-normalized, as torch's spectral_norm draws u and v."""

    def __call__(self, shape, dtype=None):
        x = keras.random.normal(shape, dtype=dtype or "float32")
        return x / ops.maximum(ops.norm(x), 1e-12)


# --------------------------------------------------------------------------- normalization


@keras.saving.register_keras_serializable(package="spade_tf")
class TorchBatchNorm(keras.layers.Layer):
    """Batch normalization with PyTorch's ``BatchNorm2d`` statistics, optionally synchronized.

    Differences from ``keras.layers.BatchNormalization`` that matter for parity (spec §10):

    - the running variance is updated with the *unbiased* batch variance (Keras uses the biased
      one); normalization itself uses the biased variance;
    - the synchronized variant reduces sums over all replicas in two passes (mean, then squared
      deviations), so 1 replica and N replicas compute the same statistics of the global batch.

    The official multi-GPU SyncBatchNorm uses 1/sqrt(max(var, eps)) ("clamp"); like the
    reference's single-device path we use 1/sqrt(var + eps) everywhere.

    Args:
        momentum: Keras convention: moving = momentum * moving + (1 - momentum) * batch.
            0.9 is PyTorch's momentum 0.1.
        epsilon: added to the variance (PyTorch's 1e-5).
        synchronized: reduce the batch statistics over all replicas (``SyncBatchNorm``).
        affine: learn a per-channel scale and offset (used by ``norm_D``/``norm_E`` = batch;
            SPADE's norm is parameter-free).
        init_gain: the scale's init is N(1, init_gain), as the reference's ``init_weights``.
        perf: how it computes. With ``perf.closed_form_gradients``, training mode uses the
            closed-form gradient dx = rstd * (dy - mean(dy) - y * mean(dy * y)) (means over the
            global batch, all-reduced when synchronized; ``kernels.norm_gradients``) instead of
            differentiating the two-pass statistics op by op. Not part of the config.
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, synchronized=False, affine=False,
                 init_gain=0.02, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.synchronized = bool(synchronized)
        self.affine = bool(affine)
        self.init_gain = float(init_gain)

    def build(self, input_shape):
        c = int(input_shape[-1])
        # Synchronized statistics are identical on every replica: keep the first replica's
        # (exact, as for spectral norm's u, v). Per-replica statistics are averaged.
        aggregation = "only_first_replica" if self.synchronized else "mean"
        stat = dict(trainable=False, autocast=False, aggregation=aggregation)
        self.moving_mean = self.add_weight(name="moving_mean", shape=(c,), initializer="zeros", **stat)
        self.moving_variance = self.add_weight(name="moving_variance", shape=(c,),
                                               initializer="ones", **stat)
        if self.affine:
            self.gamma = self.add_weight(
                name="gamma", shape=(c,), autocast=False,
                initializer=keras.initializers.RandomNormal(1.0, self.init_gain))
            self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros", autocast=False)

    def _sync_context(self):
        ctx = tf.distribute.get_replica_context()
        if self.synchronized and ctx is not None and ctx.num_replicas_in_sync > 1:
            return ctx
        return None

    def _batch_moments(self, x):
        axes = [0, 1, 2]
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
        ctx = self._sync_context()
        if ctx is not None:
            total, count = ctx.all_reduce("sum", [tf.reduce_sum(x, axes), count])
            mean = total / count
            var = ctx.all_reduce("sum", tf.reduce_sum(tf.square(x - mean), axes)) / count
        else:
            mean = tf.reduce_mean(x, axes)
            var = tf.reduce_mean(tf.square(x - mean), axes)
        return mean, var, count

    def call(self, inputs, training=False):
        if not training and inputs.dtype in (tf.bfloat16, tf.float16):
            return self._half_precision_inference(inputs)
        x = at_least_float32(inputs)
        if training:
            mean, var, count = self._batch_moments(x)
            unbiased = var * count / tf.maximum(count - 1.0, 1.0)
            m = self.momentum
            mean_d = tf.cast(tf.stop_gradient(mean), self.moving_mean.dtype)
            unbiased = tf.cast(tf.stop_gradient(unbiased), self.moving_variance.dtype)
            self.moving_mean.assign(self.moving_mean * m + mean_d * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + unbiased * (1.0 - m))
        else:
            mean = tf.cast(self.moving_mean, x.dtype)
            var = tf.cast(self.moving_variance, x.dtype)
        if training and self.perf.closed_form_gradients:
            y = normalize_closed_form(x, tf.stop_gradient(mean), tf.stop_gradient(var), count,
                                      self.epsilon, [0, 1, 2], self._sync_context())
        elif training or not self.perf.affine_inference_norm:
            y = (x - mean) * tf.math.rsqrt(var + self.epsilon)
        else:
            # perf.affine_inference_norm: the same map as x * rstd + (-mean * rstd), both
            # constants at inference. In a full-integer TFLite graph, (x - mean) * rstd got the
            # range of the product for its difference (about 100x too wide at the latent), which
            # erased the signal at the first SPADE/CLADE layer; this form quantizes as a plain
            # multiply-add.
            rstd = tf.math.rsqrt(var + self.epsilon)
            y = x * rstd - mean * rstd
        if self.affine:
            y = y * self.gamma + self.beta
        return tf.cast(y, self.compute_dtype)

    def _half_precision_inference(self, x):
        """Inference in bfloat16 (or float16): the map as ``x * scale + shift`` in x's dtype,
        with scale and shift computed from the float32 running statistics (constants, folded
        into the bf16 SavedModel). The float32 form casts the whole activation to float32 and
        back around every norm: 2 of the 3 passes over it, for a result that is rounded to
        bf16 anyway (docs/benchmarks/precision.md measures both)."""
        scale = tf.math.rsqrt(self.moving_variance + self.epsilon)
        shift = -self.moving_mean * scale
        if self.affine:
            scale, shift = scale * self.gamma, shift * self.gamma + self.beta
        return x * tf.cast(scale, x.dtype) + tf.cast(shift, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon, synchronized=self.synchronized,
                      affine=self.affine, init_gain=self.init_gain)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class InstanceNormalization(keras.layers.Layer):
    """``nn.InstanceNorm2d(affine=False)``: per sample and channel, biased variance over H, W.

    Identical in training and inference (no running statistics), as in the reference.

    Args:
        epsilon: added to the variance (PyTorch's 1e-5).
        perf: how it computes: ``perf.closed_form_gradients`` gives training mode the
            closed-form gradient (``kernels.norm_gradients.normalize_closed_form``). Not part
            of the config.
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, epsilon=1e-5, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.perf = resolve_perf(perf)

    def call(self, inputs, training=False):
        x = at_least_float32(inputs)
        mean = tf.reduce_mean(x, [1, 2], keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), [1, 2], keepdims=True)
        if training and self.perf.closed_form_gradients:
            count = tf.cast(tf.reduce_prod(tf.shape(x)[1:3]), x.dtype)
            y = normalize_closed_form(x, tf.stop_gradient(mean), tf.stop_gradient(var), count,
                                      self.epsilon, [1, 2])
        else:
            y = (x - mean) * tf.math.rsqrt(var + self.epsilon)
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config


def make_param_free_norm(norm, name=None, perf=None):
    """SPADE's parameter-free normalization for ``norm`` in {sync_batch, batch, instance}."""
    norm = SpadeNorm.parse(norm, "spade_norm")
    if norm is SpadeNorm.INSTANCE:
        return InstanceNormalization(name=name, perf=perf)
    return TorchBatchNorm(synchronized=norm is SpadeNorm.SYNC_BATCH, name=name, perf=perf)


def make_norm_layer(norm, init_gain=0.02, name=None, perf=None):
    """The norm after a (spectral) conv in D and E (``get_nonspade_norm_layer``), or None.

    As in the reference, the batch variants there are *affine*; instance norm is not.
    """
    norm = NormLayer.parse(norm, "norm")
    if norm is NormLayer.NONE:
        return None
    if norm is NormLayer.INSTANCE:
        return InstanceNormalization(name=name, perf=perf)
    return TorchBatchNorm(synchronized=norm is NormLayer.SYNC_BATCH, affine=True,
                          init_gain=init_gain, name=name, perf=perf)


def make_conv(spectral, filters, kernel_size, strides=1, padding=0, use_bias=True,
              init_type="xavier", init_gain=0.02, perf=None, name=None):
    """A ``SpectralConv2D`` (``spectral``) or a ``TorchConv2D``."""
    cls = SpectralConv2D if spectral else TorchConv2D
    return cls(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
               init_type=init_type, init_gain=init_gain, perf=perf, name=name)


# --------------------------------------------------------------------------- label-map convs


def label_map_conv(conv, kernel, bias, seg, indices=None, onehot_channels=None,
                   method="dense"):
    """``conv`` (a ``TorchConv2D``, padding 'same') applied with ``kernel``/``bias`` to ``seg``.

    With ``method`` gather / segment_sum and ``indices`` given, the first ``onehot_channels``
    channels of ``seg`` (one-hot) go through ``onehot_conv`` and only the rest (e.g. the
    instance-edge channel) through a real conv.
    """
    method = LabelConv.parse(method, "label_conv")
    if method is LabelConv.DENSE or indices is None or not onehot_channels:
        return conv.convolve(seg, kernel) + bias
    n = int(onehot_channels)
    y = onehot_conv(indices, kernel[:, :, :n, :], method)
    if seg.shape[-1] > n:
        y = y + conv.convolve(seg[..., n:], kernel[:, :, n:, :])
    return tf.cast(y, kernel.dtype) + bias


def label_branch_conv(conv_layer, hidden, kernel, bias, class_hidden=None, regions=None,
                      after=None):
    """SPADE's gamma/beta conv (``conv_layer``'s form, with ``kernel``/``bias``) of the hidden
    features: by ``regional_conv`` when ``regions`` are given and worth it, else dense.

    ``after``: a tensor that the conv must wait for (sequential inference). A control
    dependency on the cond was not kept (the profile showed beta's gathers running beside
    gamma's), so the choice itself reads one element of ``after``: both branches compute the
    same numbers, so which one a NaN there would pick does not matter.
    """

    def dense():
        return conv_layer.convolve(hidden, kernel) + bias

    if regions is None:
        return dense()
    worth = regions.worth
    if after is not None:
        worth = worth & tf.math.is_finite(tf.reshape(after, (-1,))[0])
    return tf.cond(worth,
                   lambda: regional_conv(hidden, kernel, bias, class_hidden, regions), dense)


# --------------------------------------------------------------------------- SPADE


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADE(keras.layers.Layer):
    """Spatially-adaptive normalization (Park et al., CVPR 2019, Eq. 1; spec §1).

    ``out = norm(x) * (1 + gamma(seg)) + beta(seg)``, where ``norm`` is parameter-free and
    gamma, beta are per-pixel maps computed from the label map resized (legacy nearest) to x:
    a shared KxK conv to ``hidden_filters`` channels with ReLU, then one KxK conv each.
    No spectral norm on these convs, as in the reference.

    The variables are always the reference's three convs; ``perf`` only changes how they are
    applied (the same numbers to float rounding).

    Args:
        norm_type: the parameter-free norm: ``sync_batch`` (default, ``spadesyncbatch3x3``),
            ``batch`` or ``instance``.
        kernel_size: K of the three convs (the ``3x3`` of ``--norm_G``).
        hidden_filters: width of the shared conv (``nhidden``, 128 in the reference).
        init_type: ``--init_type`` for the convs.
        init_gain: ``--init_variance``.
        onehot_channels: how many leading channels of the label map are one-hot (the classes
            and dontcare); None: unknown, the shared conv stays dense.
        noise_channels: (OASIS) the shared conv also reads this many noise channels, before
            the label map's (OASIS' ``cat(noise, semantics)``); the call then takes ``noise``.
        perf: how it computes (``PerfConfig``, resolved for the device; not part of the
            config): ``broadcast_noise`` (OASIS' noise vector through the shared conv on a
            (2p+1)^2 map, apart from the label map, which then takes the lookups),
            ``label_conv`` (how the shared conv reads the one-hot channels,
            ``kernels.onehot_conv``), ``fuse_gamma_beta`` (mlp_gamma and mlp_beta as one conv
            with 2C outputs), ``filter_gradient``, ``closed_form_gradients`` (hand-written
            training gradients for the norm and the modulation, ``kernels.norm_gradients``)
            and ``sequential_inference`` (in inference mode, the label branch only once ``x``
            is ready, in a fixed order with the norm: ``_sequential_inference``).
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Call arguments:
        x: NHWC features to normalize.
        segmap: NHWC semantic map at any resolution (full resolution in the generator).
        training: batch statistics (and their update) when True, running statistics otherwise.
        hidden: the shared conv's output after ReLU at x's resolution, when the caller has
            computed it (the generator does, for all SPADE layers of a resolution at once,
            except in sequential inference); ``segmap`` is then unused.
        activation_slope: apply a leaky ReLU with this slope to the output (the residual
            block's activation, fused here so that one hand-written gradient covers both);
            None: no activation.
        indices: ``onehot_indices`` of ``segmap``'s one-hot channels, when ``segmap`` is at
            x's resolution already and the caller has them (the lookups then skip the argmax).
        regions: ``kernels.regions.LabelRegions`` of the label map at x's resolution: gamma
            and beta by ``regional_conv`` where worth it (``perf.uniform_regions``); None:
            dense convs.
        noise: (``noise_channels``) OASIS' noise: [N, Z] per image, or a map [N, H', W', Z]
            at any resolution (resized like the label map).
    """

    def __init__(self, norm_type="sync_batch", kernel_size=3, hidden_filters=128,
                 init_type="xavier", init_gain=0.02, onehot_channels=None, noise_channels=0,
                 perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.norm_type = str(SpadeNorm.parse(norm_type, "norm_type"))
        self.kernel_size = int(kernel_size)
        self.hidden_filters = int(hidden_filters)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.onehot_channels = None if onehot_channels is None else int(onehot_channels)
        self.noise_channels = int(noise_channels)

    def build(self, x_shape, segmap_shape):
        # Sublayers are made here: gamma/beta need the channels of x, known only now.
        c = int(x_shape[-1])
        k, p = self.kernel_size, self.kernel_size // 2
        init = dict(init_type=self.init_type, init_gain=self.init_gain, perf=self.perf)
        self.param_free_norm = make_param_free_norm(self.norm_type, name="param_free_norm",
                                                    perf=self.perf)
        self.mlp_shared = TorchConv2D(self.hidden_filters, k, padding=p, name="mlp_shared", **init)
        self.mlp_gamma = TorchConv2D(c, k, padding=p, name="mlp_gamma", **init)
        self.mlp_beta = TorchConv2D(c, k, padding=p, name="mlp_beta", **init)
        self.param_free_norm.build(x_shape)
        # OASIS: the noise channels come first (its seg = cat(noise, semantics))
        hw_seg = tuple(x_shape[:3]) + (self.noise_channels + int(segmap_shape[-1]),)
        self.mlp_shared.build(hw_seg)
        hidden = tuple(x_shape[:3]) + (self.hidden_filters,)
        self.mlp_gamma.build(hidden)
        self.mlp_beta.build(hidden)

    def shared_kernel(self):
        """(kernel, bias) of mlp_shared in the compute dtype."""
        conv = self.mlp_shared
        return ops.cast(conv.kernel, self.compute_dtype), ops.cast(conv.bias, self.compute_dtype)

    def hidden_features(self, seg, indices=None, noise=None):
        """relu(mlp_shared(seg)) for a label map already at x's resolution (``indices``: its
        ``onehot_indices``, needed for the lookup forms). With ``noise_channels`` (OASIS),
        ``noise`` is a vector [N, Z] per image or a map at x's resolution, the first channels
        of mlp_shared's input, as OASIS' ``cat(noise, semantics)``."""
        kernel, bias = self.shared_kernel()
        if indices is None and self.perf.label_conv is not LabelConv.DENSE and self.onehot_channels:
            indices = onehot_indices(seg[..., :self.onehot_channels])
        nz = self.noise_channels
        if not nz:
            return ops.relu(label_map_conv(self.mlp_shared, kernel, bias, seg, indices,
                                           self.onehot_channels, self.perf.label_conv))
        if noise is None:
            raise ValueError(f"{self.name}: this SPADE layer reads OASIS' noise "
                             f"(noise_channels={nz}): pass noise=")
        noise = ops.cast(noise, self.compute_dtype)
        hw = seg.shape[1:3] if None not in seg.shape[1:3] else tf.shape(seg)[1:3]
        if not self.perf.broadcast_noise:
            # the reference's form: one conv of the concatenated map
            if noise.shape.rank == 2:
                noise = tf.broadcast_to(noise[:, None, None, :],
                                        tf.concat([tf.shape(noise)[:1], hw, [nz]], 0))
            return ops.relu(self.mlp_shared.convolve(ops.concatenate([noise, seg], -1), kernel)
                            + bias)
        # perf.broadcast_noise: the label map's part (by lookups where perf.label_conv says)
        # plus the noise's part, for a vector on a (2p+1)^2 map (kernels.constant_map_conv)
        y = label_map_conv(self.mlp_shared, kernel[:, :, nz:, :], bias, seg, indices,
                           self.onehot_channels, self.perf.label_conv)
        if noise.shape.rank == 2:
            part = constant_map_conv(noise, kernel[:, :, :nz, :], (hw[0], hw[1]))
        else:
            part = self.mlp_shared.convolve(noise, kernel[:, :, :nz, :])
        return ops.relu(y + tf.cast(part, y.dtype))

    def class_hidden(self, regions):
        """``class_hidden_features`` of this layer's shared conv, when ``regions`` are used."""
        if regions is None or not self.onehot_channels or self.noise_channels:
            return None
        kernel, bias = self.shared_kernel()
        return class_hidden_features(kernel, bias, self.onehot_channels)

    def _branch(self, conv, hidden, class_hidden, regions, after=None):
        """One of mlp_gamma / mlp_beta applied to the hidden features (``after``: see
        ``label_branch_conv``)."""
        if class_hidden is None:
            return conv(hidden)
        dt = self.compute_dtype
        return label_branch_conv(conv, hidden, ops.cast(conv.kernel, dt), ops.cast(conv.bias, dt),
                                 class_hidden, regions, after)

    def modulation(self, hidden, regions=None):
        """(gamma, beta) from the hidden features (``regions``: see ``call``)."""
        class_hidden = self.class_hidden(regions)
        if not self.perf.fuse_gamma_beta:
            return (self._branch(self.mlp_gamma, hidden, class_hidden, regions),
                    self._branch(self.mlp_beta, hidden, class_hidden, regions))
        dt = self.compute_dtype
        kernel = ops.concatenate([ops.cast(self.mlp_gamma.kernel, dt),
                                  ops.cast(self.mlp_beta.kernel, dt)], axis=-1)
        bias = ops.concatenate([ops.cast(self.mlp_gamma.bias, dt),
                                ops.cast(self.mlp_beta.bias, dt)], axis=-1)
        both = label_branch_conv(self.mlp_gamma, hidden, kernel, bias, class_hidden,
                                 regions if class_hidden is not None else None)
        gamma, beta = tf.split(both, 2, axis=-1)  # its gradient is a concat, not two padded copies
        return gamma, beta

    def _resized(self, segmap, x):
        hw = x.shape[1:3] if None not in x.shape[1:3] else tf.shape(x)[1:3]
        return legacy_nearest_resize(ops.cast(segmap, self.compute_dtype), hw)

    def _noise_at(self, noise, x):
        """OASIS' noise for x's resolution: a vector as it is, a map resized (legacy nearest)."""
        if noise is None or tf.convert_to_tensor(noise).shape.rank == 2:
            return noise
        return self._resized(noise, x)

    def call(self, x, segmap, training=False, hidden=None, activation_slope=None, indices=None,
             regions=None, noise=None):
        if self.perf.sequential_inference and not training:
            out = self._sequential_inference(x, segmap, hidden, indices, regions, noise)
        else:
            normalized = self.param_free_norm(x, training=training)
            if hidden is None:
                hidden = self.hidden_features(self._resized(segmap, x), indices,
                                              self._noise_at(noise, x))
            gamma, beta = self.modulation(hidden, regions)
            if training and self.perf.closed_form_gradients:
                return modulate(normalized, gamma, beta, activation_slope)
            out = normalized * (1.0 + gamma) + beta
        if activation_slope is not None:
            out = ops.leaky_relu(out, negative_slope=activation_slope)
        return out

    def _sequential_inference(self, x, segmap, hidden, indices, regions=None, noise=None):
        """``call``'s modulation (before the activation) in inference mode, in a fixed order
        that holds at most x, the hidden features and one of gamma and beta besides the shortcut.

        The label branch depends only on the label map. Left to itself, the dataflow executor
        runs the label branches of all SPADE layers as soon as the map is there and holds their
        outputs together (the inference memory peak: every gamma and beta of the generator).
        Here it waits for x; then gamma, x normalized and scaled by 1 + gamma (gamma can then
        go), beta, the sum. The same ops as ``call``'s unfused form, so the same numbers; the
        fused gamma/beta conv is not used, as its split would copy both maps.
        """
        with tf.control_dependencies([x]):
            if hidden is None:
                hidden = self.hidden_features(self._resized(segmap, x), indices,
                                              self._noise_at(noise, x))
            class_hidden = self.class_hidden(regions)
            gamma = self._branch(self.mlp_gamma, hidden, class_hidden, regions, after=x)
        with tf.control_dependencies([gamma]):
            scaled = self.param_free_norm(x, training=False) * (1.0 + gamma)
        with tf.control_dependencies([scaled]):
            beta = self._branch(self.mlp_beta, hidden, class_hidden, regions, after=scaled)
        return scaled + beta

    def compute_output_shape(self, x_shape, segmap_shape):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(norm_type=self.norm_type, kernel_size=self.kernel_size,
                      hidden_filters=self.hidden_filters, init_type=self.init_type,
                      init_gain=self.init_gain, onehot_channels=self.onehot_channels,
                      noise_channels=self.noise_channels)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class AffineNorm(keras.layers.Layer):
    """A conventional normalization: SPADE's parameter-free norm, then a learned per-channel
    scale and offset that do not depend on the label map (the ablation baseline; Park et al.,
    CVPR 2019, Sec. 3.2: such a norm "washes away" a uniform label map).

    It takes (and ignores) ``segmap`` so that it can stand where a ``SPADE`` layer stands.

    Args:
        norm_type: the parameter-free norm: ``sync_batch``, ``batch`` or ``instance``.
        init_gain: the scale starts at N(1, init_gain), as the reference's affine norms.
        perf: how the norm computes (see ``TorchBatchNorm``; not part of the config).
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, norm_type="sync_batch", init_gain=0.02, perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.norm_type = str(SpadeNorm.parse(norm_type, "norm_type"))
        self.init_gain = float(init_gain)
        self.perf = resolve_perf(perf)

    def build(self, x_shape, segmap_shape=None):
        c = int(x_shape[-1])
        self.param_free_norm = make_param_free_norm(self.norm_type, name="param_free_norm",
                                                    perf=self.perf)
        self.param_free_norm.build(x_shape)
        self.gamma = self.add_weight(name="gamma", shape=(c,), autocast=False,
                                     initializer=keras.initializers.RandomNormal(1.0, self.init_gain))
        self.beta = self.add_weight(name="beta", shape=(c,), initializer="zeros", autocast=False)

    def call(self, x, segmap=None, training=False):
        y = self.param_free_norm(x, training=training)
        return y * ops.cast(self.gamma, y.dtype) + ops.cast(self.beta, y.dtype)

    def compute_output_shape(self, x_shape, segmap_shape=None):
        return x_shape

    def get_config(self):
        config = super().get_config()
        config.update(norm_type=self.norm_type, init_gain=self.init_gain)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class ClassAdaptiveNorm(keras.layers.Layer):
    """CLADE, class-adaptive normalization (Tan et al., "Efficient Semantic Image Synthesis via
    Class-Adaptive Normalization", TPAMI 2021; tzt101/CLADE ``normalization.py``: ``SPADELight``
    and ``ClassAffine``).

    ``out = norm(x) * gamma[label] + beta[label]``: the parameter-free norm of SPADE, then a
    per-class scale and bias looked up from two ``[classes, C]`` tables by each pixel's label,
    the argmax over the one-hot channels of the label map resized (legacy nearest) to x. Unlike
    SPADE there is no ``1 +``. With ICPE (``positional``), gamma and beta are scaled by
    ``1 + conv1x1(dist)`` each, where ``dist`` is the intra-class positional map
    (``spade_tf.semantics.intra_class_offsets``). With instance maps, the edge channel (the
    label map's last) is split off before the lookup, goes through a 1x1 conv (``inst_conv``)
    and is concatenated after the affine: the output has C + 1 channels.

    Args:
        norm_type: the parameter-free norm: ``sync_batch``, ``batch`` or ``instance``.
        onehot_channels: the table rows: the label map's one-hot channels (``--label_nc``, plus
            one for dontcare).
        use_instance: the label map ends with an instance-edge channel (not ``--no_instance``).
        positional: ICPE (``--add_dist``): takes ``positional`` at call time.
        noise_channels: (OASIS with CLADE) the call takes OASIS' noise (``noise``, this many
            channels); a 1x1 conv of it (``noise_conv``) is added to beta, so that the noise
            modulates every layer per pixel as it does through OASIS' SPADE convs. Our
            design: no reference combines the two.
        init_type: ``--init_type`` for ``inst_conv``.
        init_gain: ``--init_variance``.
        perf: how the norm computes (see ``TorchBatchNorm``) and how the tables are read
            (``clade_lookup``: gathers, or a 1x1 conv of the one-hot map); not part of the config.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Deviation: the reference's network-wide ``init_weights`` re-draws ``dist_conv_w`` and
    ``dist_conv_b`` after ``ClassAffine`` zeroed them; here they stay zero, so that a new
    model starts as plain CLADE (the issue's specification).

    Call arguments:
        x: NHWC features.
        segmap: NHWC semantic map (one-hot, then the instance-edge channel if any), any size.
        training: batch statistics when True.
        positional: NHWC [N, H', W', 2] intra-class offsets (ICPE models), any size.
        noise: (``noise_channels``) OASIS' noise, [N, Z] or [N, H', W', Z] at any size.
    """

    def __init__(self, norm_type="sync_batch", onehot_channels=1, use_instance=False,
                 positional=False, init_type="xavier", init_gain=0.02, noise_channels=0,
                 perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.norm_type = str(SpadeNorm.parse(norm_type, "norm_type"))
        self.onehot_channels = int(onehot_channels)
        self.use_instance = bool(use_instance)
        self.positional = bool(positional)
        self.noise_channels = int(noise_channels)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.perf = resolve_perf(perf)

    def build(self, x_shape, segmap_shape=None, positional_shape=None):
        c = int(x_shape[-1])
        self.param_free_norm = make_param_free_norm(self.norm_type, name="param_free_norm",
                                                    perf=self.perf)
        self.param_free_norm.build(x_shape)
        rows = (self.onehot_channels, c)
        # ClassAffine: weight ~ U[0, 1), bias = 0
        self.gamma_table = self.add_weight(name="gamma_table", shape=rows, autocast=False,
                                           initializer=keras.initializers.RandomUniform(0.0, 1.0))
        self.beta_table = self.add_weight(name="beta_table", shape=rows, initializer="zeros",
                                          autocast=False)
        if self.positional:
            zeros = dict(kernel_initializer="zeros", bias_initializer="zeros")
            self.dist_conv_w = keras.layers.Conv2D(1, 1, name="dist_conv_w", **zeros)
            self.dist_conv_b = keras.layers.Conv2D(1, 1, name="dist_conv_b", **zeros)
            self.dist_conv_w.build(tuple(x_shape[:3]) + (2,))
            self.dist_conv_b.build(tuple(x_shape[:3]) + (2,))
        if self.use_instance:
            self.inst_conv = TorchConv2D(1, 1, init_type=self.init_type, init_gain=self.init_gain,
                                         perf=self.perf, name="inst_conv")
            self.inst_conv.build(tuple(x_shape[:3]) + (1,))
        if self.noise_channels:
            self.noise_conv = TorchConv2D(c, 1, init_type=self.init_type, init_gain=self.init_gain,
                                          perf=self.perf, name="noise_conv")
            self.noise_conv.build(tuple(x_shape[:3]) + (self.noise_channels,))

    def call(self, x, segmap, training=False, positional=None, noise=None):
        normalized = self.param_free_norm(x, training=training)
        dt = normalized.dtype
        hw = x.shape[1:3] if None not in x.shape[1:3] else tf.shape(x)[1:3]
        seg = legacy_nearest_resize(segmap, hw)
        if self.noise_channels:
            if noise is None:
                raise ValueError(f"{self.name}: this CLADE layer reads OASIS' noise "
                                 f"(noise_channels={self.noise_channels}): pass noise=")
            noise = ops.cast(noise, dt)
            # a vector: its 1x1 conv once per image, broadcast; a map: resized like the labels
            noise = noise[:, None, None, :] if noise.shape.rank == 2 else legacy_nearest_resize(
                noise, hw)
        # gamma[label], beta[label] with label = argmax over the one-hot channels: gathers, or
        # one 1x1 conv of the one-hot map (perf.clade_lookup; the same numbers)
        gamma, beta = class_lookup(seg[..., :self.onehot_channels],
                                   [ops.cast(self.gamma_table, dt), ops.cast(self.beta_table, dt)],
                                   self.perf.clade_lookup)
        if self.positional:
            if positional is None:
                raise ValueError(f"{self.name}: this CLADE layer uses ICPE (model.clade_positional)"
                                 ": pass positional=spade_tf.semantics.intra_class_offsets(label)")
            dist = legacy_nearest_resize(ops.cast(positional, dt), hw)
            gamma = gamma * (1.0 + self.dist_conv_w(dist))
            beta = beta * (1.0 + self.dist_conv_b(dist))
        if self.noise_channels:
            beta = beta + self.noise_conv(noise)
        out = normalized * gamma + beta
        if self.use_instance:
            out = ops.concatenate([out, self.inst_conv(ops.cast(seg[..., -1:], dt))], axis=-1)
        return out

    def compute_output_shape(self, x_shape, segmap_shape=None, positional_shape=None):
        return tuple(x_shape[:3]) + (int(x_shape[-1]) + int(self.use_instance),)

    def get_config(self):
        config = super().get_config()
        config.update(norm_type=self.norm_type, onehot_channels=self.onehot_channels,
                      use_instance=self.use_instance, positional=self.positional,
                      init_type=self.init_type, init_gain=self.init_gain,
                      noise_channels=self.noise_channels)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADEResBlock(keras.layers.Layer):
    """``SPADEResnetBlock`` (spec §2): two SPADE-LReLU-conv3x3 stages plus a shortcut.

    The shortcut is learned (SPADE then a 1x1 conv without bias, no activation between) when
    the input and output widths differ; otherwise it is the identity. The middle width is
    min(in, out).

    Args:
        filters: output channels (``fout``).
        spectral: spectral norm on conv_0, conv_1 and conv_s (``spectral`` in ``--norm_G``).
        spade_norm: SPADE's parameter-free norm (``sync_batch``, ``batch``, ``instance``).
        spade_kernel_size: K of the SPADE convs.
        spade_hidden_filters: SPADE's hidden width (128 in the reference).
        init_type: ``--init_type``.
        init_gain: ``--init_variance``.
        modulation: ``spade`` (the reference), ``clade`` (every SPADE a
            ``ClassAdaptiveNorm``: tzt101/CLADE's ``--norm_mode clade``) or ``affine`` (every
            SPADE an ``AffineNorm`` of the same norm type, which ignores the label map: the
            baseline).
        use_instance: (CLADE) the label map ends with an instance-edge channel; each CLADE
            layer then adds it as one more channel, and conv_0, conv_1 and conv_s take one more
            input (CLADE's ``add_channels``).
        positional: (CLADE) ICPE (``--add_dist``): the call takes ``positional``.
        noise_channels: (OASIS) the noise channels that every SPADE (or CLADE) layer reads
            beside the label map; the call then takes ``noise``.
        onehot_channels: leading one-hot channels of the label map (see ``SPADE``).
        perf: how it computes (``PerfConfig``; see ``SPADE``; not part of the config). With
            ``sequential_inference``, the shortcut runs before the main branch.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Call arguments:
        x: NHWC features.
        segmap: NHWC semantic map, at full or at x's resolution.
        training: Python bool.
        hidden: optional dict ``{"norm_0": ..., "norm_1": ..., "norm_s": ...}`` of the SPADE
            layers' precomputed shared features (``SPADE.call``'s ``hidden``).
        indices: optional ``onehot_indices`` of a ``segmap`` at x's resolution (``SPADE.call``).
        regions: optional ``LabelRegions`` at x's resolution (``SPADE.call``).
        positional: CLADE with ICPE: the [N, H, W, 2] intra-class offsets (any resolution).
        noise: (``noise_channels``) OASIS' noise: [N, Z] per image or a map [N, H, W, Z].
    """

    MODULATIONS = ("spade", "affine", "clade")

    def __init__(self, filters, spectral=True, spade_norm="sync_batch", spade_kernel_size=3,
                 spade_hidden_filters=128, init_type="xavier", init_gain=0.02, modulation="spade",
                 onehot_channels=None, use_instance=False, positional=False, noise_channels=0,
                 perf=None, **kwargs):
        pop_legacy_perf_keys(kwargs, type(self).__name__)
        super().__init__(**kwargs)
        self.perf = resolve_perf(perf)
        self.use_instance = bool(use_instance)
        self.positional = bool(positional)
        self.noise_channels = int(noise_channels)
        if modulation not in self.MODULATIONS:
            raise ValueError(f"modulation: invalid value {modulation!r}; allowed values: "
                             + ", ".join(repr(m) for m in self.MODULATIONS))
        self.modulation = modulation
        self.filters = int(filters)
        self.spectral = bool(spectral)
        self.spade_norm = str(SpadeNorm.parse(spade_norm, "spade_norm"))
        self.spade_kernel_size = int(spade_kernel_size)
        self.spade_hidden_filters = int(spade_hidden_filters)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.onehot_channels = None if onehot_channels is None else int(onehot_channels)

    def build(self, x_shape, segmap_shape):
        fin = int(x_shape[-1])
        self.learned_shortcut = fin != self.filters
        fmiddle = min(fin, self.filters)
        init = dict(init_type=self.init_type, init_gain=self.init_gain, perf=self.perf)
        if self.modulation == "spade":
            def make_norm(name):
                return SPADE(norm_type=self.spade_norm, kernel_size=self.spade_kernel_size,
                             hidden_filters=self.spade_hidden_filters,
                             onehot_channels=self.onehot_channels,
                             noise_channels=self.noise_channels, name=name, **init)
        elif self.modulation == "clade":
            def make_norm(name):
                return ClassAdaptiveNorm(self.spade_norm, onehot_channels=self.onehot_channels,
                                         use_instance=self.use_instance,
                                         positional=self.positional,
                                         noise_channels=self.noise_channels, name=name, **init)
        else:
            def make_norm(name):
                return AffineNorm(self.spade_norm, init_gain=self.init_gain, name=name,
                                  perf=self.perf)
        # CLADE with instance maps: each norm adds the edge channel (the convs' add_channels)
        add = int(self.modulation == "clade" and self.use_instance)
        self.conv_0 = make_conv(self.spectral, fmiddle, 3, padding=1, name="conv_0", **init)
        self.conv_1 = make_conv(self.spectral, self.filters, 3, padding=1, name="conv_1", **init)
        self.norm_0 = make_norm("norm_0")
        self.norm_1 = make_norm("norm_1")
        mid_shape = tuple(x_shape[:3]) + (fmiddle,)
        self.norm_0.build(x_shape, segmap_shape)
        self.conv_0.build(tuple(x_shape[:3]) + (fin + add,))
        self.norm_1.build(mid_shape, segmap_shape)
        self.conv_1.build(tuple(x_shape[:3]) + (fmiddle + add,))
        if self.learned_shortcut:
            self.conv_s = make_conv(self.spectral, self.filters, 1, use_bias=False, name="conv_s",
                                    **init)
            self.norm_s = make_norm("norm_s")
            self.norm_s.build(x_shape, segmap_shape)
            self.conv_s.build(tuple(x_shape[:3]) + (fin + add,))

    @property
    def spade_layers(self) -> dict:
        """{"norm_0": ..., "norm_1": ..., ["norm_s": ...]}: the block's SPADE layers (empty
        for ``affine`` modulation), all at the block's resolution."""
        if self.modulation != "spade":
            return {}
        names = ["norm_0", "norm_1"] + (["norm_s"] if self.learned_shortcut else [])
        return {n: getattr(self, n) for n in names}

    def call(self, x, segmap, training=False, hidden=None, indices=None, regions=None,
             positional=None, noise=None):
        hidden = hidden or {}
        noise_kw = {"noise": noise} if self.noise_channels and self.modulation != "affine" else {}

        def norm(name, t, activated=False):
            layer = getattr(self, name)
            if self.modulation != "spade":
                kw = {"positional": positional} if self.positional else {}
                out = layer(t, segmap, training=training, **kw, **noise_kw)
                return leaky_relu(out) if activated else out
            # The leaky ReLU goes into the SPADE layer, which fuses it with the modulation.
            kw = dict(training=training, activation_slope=LRELU_SLOPE if activated else None,
                      **noise_kw)
            if name in hidden:
                kw["hidden"] = hidden[name]
            elif indices is not None:
                kw["indices"] = indices
            if regions is not None:
                kw["regions"] = regions
            return layer(t, segmap, **kw)

        if self.learned_shortcut:
            x_s = self.conv_s(norm("norm_s", x), training=training)
        else:
            x_s = x
        # Sequential inference: the main branch (norm_0's label branch first) after the shortcut.
        after_shortcut = (self.perf.sequential_inference and not training and self.learned_shortcut
                          and self.modulation == "spade")
        with tf.control_dependencies([x_s] if after_shortcut else []):
            dx = self.conv_0(norm("norm_0", x, activated=True), training=training)
        dx = self.conv_1(norm("norm_1", dx, activated=True), training=training)
        return x_s + dx

    def compute_output_shape(self, x_shape, segmap_shape):
        return tuple(x_shape[:3]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, spectral=self.spectral, spade_norm=self.spade_norm,
                      spade_kernel_size=self.spade_kernel_size,
                      spade_hidden_filters=self.spade_hidden_filters, init_type=self.init_type,
                      init_gain=self.init_gain, modulation=self.modulation,
                      onehot_channels=self.onehot_channels, use_instance=self.use_instance,
                      positional=self.positional, noise_channels=self.noise_channels)
        return config


def count_params(variables) -> int:
    """Number of scalars in ``variables`` (what PyTorch counts as the numel of Parameters)."""
    return int(sum(math.prod(v.shape) for v in variables))
