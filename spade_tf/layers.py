"""SPADE building blocks with the official (PyTorch) semantics, in NHWC.

Paper: Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization", CVPR 2019
(arXiv:1903.07291). Section numbers (§) refer to ``shared/reference/spade-architecture.md``.

Everything here is written against Keras 3 with the TensorFlow backend; the distribution-aware
pieces (synchronized batch statistics, replica-identical spectral-norm vectors) use
``tf.distribute`` directly.
"""

from __future__ import annotations

import math
import os
import typing

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from spade_tf.config import FilterGradient, InitType, LabelConv, LayerNorm, SpadeNorm

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


def upsample_nearest_2x(x):
    """``nn.Upsample(scale_factor=2)``: every pixel repeated 2 x 2.

    Two ``repeat``s. One broadcast between reshapes has about a quarter of the graph nodes but
    its gradient (a sum over two strided axes) took 2.3x as long at 128x128x256 (49 against
    22 ms, 2026-12-02); the ade20k iteration took 4.98 against 4.43 s (single runs)."""
    return ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2)


# --------------------------------------------------------------------------- convolutions


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its CPU kernels through oneDNN in this process.

    TensorFlow decides it once per process: ``TF_ENABLE_ONEDNN_OPTS`` when set, otherwise by
    CPU (on by default on the AVX-512 machines we measured, off on the AVX2 EPYC). The only
    reader is private (``_pywrap_util_port.IsMklEnabled``); where it is missing, the variable
    decides and unset counts as off.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "0").strip().lower() in ("1", "true")


def use_swapped_filter_gradient(mode) -> bool:
    """Resolves ``filter_gradient``: ``auto`` is ``swapped`` on a CPU whose convs run on
    TensorFlow's own (Eigen) kernels, and ``native`` with a GPU (cuDNN's backward kernels) or
    with oneDNN, whose backward kernels are the faster ones: at ade20k's shapes they ran 1.5-5x
    faster than the swapped and flipped forms, and the training iteration took 5.50 s native
    against 7.77 s swapped (docs/benchmarks/conv_gradients.md, docs/performance.md). Without
    oneDNN the swapped forms were 1.3-2.5x faster than the backward kernels."""
    mode = FilterGradient.parse(mode, "filter_gradient")
    if mode is FilterGradient.AUTO:
        return not tf.config.list_logical_devices("GPU") and not onednn_enabled()
    return mode is FilterGradient.SWAPPED


def _swapped_filter_gradient(x, dy, kernel_size, strides, padding=0):
    """dL/dK of a convolution as one forward convolution with batch and channels swapped.

    dK[a, b, i, o] = sum_{n, h, w} xp[n, s*h + a, s*w + b, i] * dy[n, h, w, o] (xp: x
    zero-padded by ``padding``) is a VALID convolution of xp viewed as [i, H, W, n] with dy
    viewed as a [h, w, n, o] kernel dilated by the stride. The same products and sums as
    ``Conv2DBackpropFilter`` in another order; on CPUs without oneDNN (TensorFlow's own conv
    kernels) it ran 1.3-2.5x faster than the kernel-gradient op, with oneDNN 1.5-5x slower.
    """
    xt = tf.transpose(x, (3, 1, 2, 0))
    if dy.shape[0] == 1:  # batch 1: the kernel view is a free reshape
        dyt = tf.reshape(dy, tf.concat([tf.shape(dy)[1:3], [1, tf.shape(dy)[3]]], 0))
    else:
        dyt = tf.transpose(dy, (1, 2, 0, 3))
    if padding:
        # A pad op, not the conv's explicit padding: with explicit padding the ade20k training
        # step was measured 15-20% slower here.
        xt = tf.pad(xt, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    r = tf.nn.conv2d(xt, dyt, strides=1, padding="VALID", dilations=strides)
    return tf.transpose(r[:, :kernel_size, :kernel_size, :], (1, 2, 0, 3))


def _input_gradient_as_conv(x_shape, kernel_shape, strides, pad) -> bool:
    """Whether ``_flipped_input_gradient`` beats ``Conv2DBackpropInput`` for this layer.

    Used only with the swapped kernel gradient, i.e. without oneDNN. Measured on the ade20k
    generator's shapes (docs/benchmarks/conv_gradients.md, from
    scripts/bench_conv_gradients.py), oneDNN off: TensorFlow's backward-data kernel ran 1.4-3.1x slower than
    the equivalent forward conv from 64x64 up (11x for conv_img's 64 -> 3), but the forward
    form lost where the kernel is much bigger than the activations (8x8 at 1024 channels:
    flipping the kernel costs more than it saves) and where it would have 8x more input than
    output channels (SPADE's 128 -> 1024 at 64x64).
    """
    if strides != 1 or pad != "SAME" or None in tuple(x_shape[1:3]):
        return False
    c_in, c_out = int(kernel_shape[2]), int(kernel_shape[3])
    return int(x_shape[1]) * int(x_shape[2]) >= 256 and c_out <= 4 * c_in


def _flipped_input_gradient(dy, kernel):
    """dL/dx of a stride-1 SAME convolution as a forward SAME convolution of dy with the kernel
    rotated by 180 degrees and its in/out channels swapped: dx[h, w, i] = sum_{a, b, o}
    dy[h - a + c, w - b + c, o] * K[a, b, i, o] (c = k // 2). The same products and sums as
    ``Conv2DBackpropInput`` in another order."""
    return tf.nn.conv2d(dy, tf.transpose(tf.reverse(kernel, [0, 1]), (0, 1, 3, 2)), 1, "SAME")


def conv2d(x, kernel, strides=1, padding=0, swapped_filter_gradient=False):
    """A convolution (NHWC, HWIO) with PyTorch's symmetric zero padding, optionally with both
    gradients as forward convolutions.

    Args:
        x: NHWC input.
        kernel: HWIO kernel (a tensor: cast and spectral-normalized already).
        strides: stride in both directions.
        padding: zero padding on each side (PyTorch's ``padding``).
        swapped_filter_gradient: compute the kernel's gradient with
            ``_swapped_filter_gradient`` instead of ``Conv2DBackpropFilter``, and, where
            ``_input_gradient_as_conv`` says it is faster, the input's gradient with
            ``_flipped_input_gradient`` instead of ``Conv2DBackpropInput``
            (``perf.filter_gradient=swapped``, the CPU default).
    """
    k, p = int(kernel.shape[0]), int(padding)
    if k % 2 == 1 and p == k // 2 and strides == 1:
        pad = "SAME"  # symmetric here
    else:
        # An explicit pad op (see _swapped_filter_gradient).
        pad = "VALID"
        if p:
            x = tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
    if not swapped_filter_gradient:
        return tf.nn.conv2d(x, kernel, strides=strides, padding=pad)

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, strides=strides, padding=pad)

        def grad(dy):
            if _input_gradient_as_conv(x.shape, kernel.shape, strides, pad):
                dx = _flipped_input_gradient(dy, kernel)
            else:
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                    strides=[1, strides, strides, 1], padding=pad)
            return dx, _swapped_filter_gradient(x, dy, k, strides, k // 2 if pad == "SAME" else 0)

        return y, grad

    return conv(x, kernel)


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
        filter_gradient: how the kernel gradient is computed: ``native``
            (``Conv2DBackpropFilter``), ``swapped`` (a forward conv with batch and channels
            swapped, faster on CPU without oneDNN; the same sums) or ``auto`` (swapped
            without a GPU and without oneDNN: ``use_swapped_filter_gradient``).
        **kwargs: standard ``keras.layers.Layer`` arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, filters, kernel_size, strides=1, padding=0, use_bias=True,
                 init_type="xavier", init_gain=0.02, filter_gradient="auto", **kwargs):
        super().__init__(**kwargs)
        self.filter_gradient = str(FilterGradient.parse(filter_gradient, "filter_gradient"))
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
        swapped = use_swapped_filter_gradient(self.filter_gradient)
        return conv2d(inputs, kernel, self.strides, self.padding, swapped)

    def compute_output_shape(self, input_shape):
        def out(n):
            return None if n is None else (n + 2 * self.padding - self.kernel_size) // self.strides + 1
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, strides=self.strides,
                      padding=self.padding, use_bias=self.use_bias, init_type=self.init_type,
                      init_gain=self.init_gain, filter_gradient=self.filter_gradient)
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
        filter_gradient: ``native`` | ``swapped`` | ``auto`` (see ``TorchConv2D``).
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    INIT_POWER_ITERATIONS = 10

    def __init__(self, filters, kernel_size, strides=1, padding=0, use_bias=True,
                 init_type="xavier", init_gain=0.02, power_iterations=1, epsilon=1e-12,
                 filter_gradient="auto", **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
                         init_type=init_type, init_gain=init_gain,
                         filter_gradient=filter_gradient, **kwargs)
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

    def weight_matrix(self):
        """``kernel_orig`` as the reference's (out, in*k*k) matrix (OIHW flattening)."""
        return tf.reshape(tf.transpose(self.kernel_orig, (3, 2, 0, 1)), (self.filters, -1))

    # W = weight_matrix() is never formed in the forward: transposing a 1024x1024x3x3 kernel
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


def normalize_closed_form(x, mean, var, count, epsilon, axes, replica_context=None):
    """(x - mean) * rsqrt(var + epsilon) whose gradient treats mean and var as the batch (or
    instance) statistics of x over ``axes`` that they are, in closed form:
    dx = rstd * (dy - sum(dy) / count - y * sum(dy * y) / count).

    Autodiff of the two-pass statistics takes about 8 elementwise passes and keeps x - mean for
    the backward pass; this takes 3 and keeps only y. ``mean`` and ``var`` arrive without a
    gradient of their own (stop_gradient'ed by the caller). With ``replica_context`` (synchronized
    batch norm under a strategy) the two sums are all-reduced, as autodiff's all-reduce gradients
    do. The same gradient to float rounding (tests/test_performance.py).
    """
    rstd = tf.math.rsqrt(var + epsilon)

    @tf.custom_gradient
    def normalize(x):
        y = (x - mean) * rstd

        def grad(dy):
            sums = [tf.reduce_sum(dy, axes, keepdims=True),
                    tf.reduce_sum(dy * y, axes, keepdims=True)]
            if replica_context is not None:
                sums = replica_context.all_reduce("sum", sums)
            return rstd * (dy - sums[0] / count - y * (sums[1] / count))

        return y, grad

    return normalize(x)


def modulate(normalized, gamma, beta, slope=None):
    """SPADE's ``normalized * (1 + gamma) + beta``, then leaky ReLU with ``slope`` unless None,
    with a hand-written gradient.

    Autodiff keeps ``1 + gamma`` and the pre-activation for the backward pass, two more tensors
    of the activation's size per SPADE layer; this keeps only ``normalized``, ``gamma`` and the
    output (the next conv keeps it anyway), and reads the leaky ReLU's mask from the output's sign
    (the same mask as from its input, since the slope is positive). Exact.
    """

    @tf.custom_gradient
    def fn(normalized, gamma, beta):
        out = normalized * (1.0 + gamma) + beta
        if slope is not None:
            out = tf.nn.leaky_relu(out, slope)

        def grad(dout):
            if slope is not None:
                # The LeakyRelu op holds its slope as a float32 attribute: the same number here.
                dout = tf.where(out > 0, dout, dout * float(np.float32(slope)))
            return dout * (1.0 + gamma), dout * normalized, dout

        return out, grad

    return fn(normalized, gamma, beta)


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
        closed_form_gradient: in training mode, use the closed-form gradient
            dx = rstd * (dy - mean(dy) - y * mean(dy * y)) (means over the global batch,
            all-reduced when synchronized) instead of differentiating the two-pass statistics
            op by op: fewer passes, and only y is kept for the backward pass, not x - mean
            (``perf.closed_form_gradients``). The same gradient to float rounding
            (tests/test_performance.py).
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, momentum=0.9, epsilon=1e-5, synchronized=False, affine=False,
                 init_gain=0.02, closed_form_gradient=False, **kwargs):
        super().__init__(**kwargs)
        self.closed_form_gradient = bool(closed_form_gradient)
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
        if training and self.closed_form_gradient:
            y = normalize_closed_form(x, tf.stop_gradient(mean), tf.stop_gradient(var), count,
                                      self.epsilon, [0, 1, 2], self._sync_context())
        else:
            y = (x - mean) * tf.math.rsqrt(var + self.epsilon)
        if self.affine:
            y = y * self.gamma + self.beta
        return tf.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, epsilon=self.epsilon, synchronized=self.synchronized,
                      affine=self.affine, init_gain=self.init_gain,
                      closed_form_gradient=self.closed_form_gradient)
        return config


@keras.saving.register_keras_serializable(package="spade_tf")
class InstanceNormalization(keras.layers.Layer):
    """``nn.InstanceNorm2d(affine=False)``: per sample and channel, biased variance over H, W.

    Identical in training and inference (no running statistics), as in the reference.

    Args:
        epsilon: added to the variance (PyTorch's 1e-5).
        closed_form_gradient: in training mode, the closed-form gradient of the normalization
            (see ``normalize_closed_form``; ``perf.closed_form_gradients``).
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, epsilon=1e-5, closed_form_gradient=False, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.closed_form_gradient = bool(closed_form_gradient)

    def call(self, inputs, training=False):
        x = at_least_float32(inputs)
        mean = tf.reduce_mean(x, [1, 2], keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), [1, 2], keepdims=True)
        if training and self.closed_form_gradient:
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
        config.update(epsilon=self.epsilon, closed_form_gradient=self.closed_form_gradient)
        return config


def make_param_free_norm(norm, name=None, closed_form_gradient=False):
    """SPADE's parameter-free normalization for ``norm`` in {sync_batch, batch, instance}."""
    norm = SpadeNorm.parse(norm, "spade_norm")
    if norm is SpadeNorm.INSTANCE:
        return InstanceNormalization(name=name, closed_form_gradient=closed_form_gradient)
    return TorchBatchNorm(synchronized=norm is SpadeNorm.SYNC_BATCH, name=name,
                          closed_form_gradient=closed_form_gradient)


def make_layer_norm(norm, init_gain=0.02, name=None, closed_form_gradient=False):
    """The norm after a (spectral) conv in D and E (``get_nonspade_norm_layer``), or None.

    As in the reference, the batch variants there are *affine*; instance norm is not.
    """
    norm = LayerNorm.parse(norm, "norm")
    if norm is LayerNorm.NONE:
        return None
    if norm is LayerNorm.INSTANCE:
        return InstanceNormalization(name=name, closed_form_gradient=closed_form_gradient)
    return TorchBatchNorm(synchronized=norm is LayerNorm.SYNC_BATCH, affine=True,
                          init_gain=init_gain, name=name,
                          closed_form_gradient=closed_form_gradient)


def make_conv(spectral, filters, kernel_size, strides=1, padding=0, use_bias=True,
              init_type="xavier", init_gain=0.02, filter_gradient="auto", name=None):
    cls = SpectralConv2D if spectral else TorchConv2D
    return cls(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias,
               init_type=init_type, init_gain=init_gain, filter_gradient=filter_gradient,
               name=name)


# --------------------------------------------------------------------------- label-map convs


def _sizes(x):
    """``x``'s dimensions: Python ints where static, scalar tensors where not. Static sizes
    keep the traced graph small (a slice with constant bounds needs far fewer nodes than one
    with computed bounds), and each node costs process memory (docs/benchmarks/graph_memory.md)."""
    if all(d is not None for d in x.shape):
        return list(x.shape)
    shape = tf.shape(x)
    return [d if d is not None else shape[i] for i, d in enumerate(x.shape)]


def onehot_indices(onehot):
    """The hot channel of each pixel of a one-hot NHWC map, as int32 [N, H, W]; pixels where no
    channel is hot (all zeros) get the index C (a zero row in ``onehot_conv``'s tables)."""
    c = int(onehot.shape[-1])
    idx = tf.argmax(onehot, axis=-1, output_type=tf.int32)
    return tf.where(tf.reduce_max(onehot, axis=-1) > 0, idx, c)


def onehot_conv(indices, kernel, method="segment_sum"):
    """``conv2d(one_hot(indices, C), kernel, SAME)`` for a KxK stride-1 kernel, by lookups.

    Output pixel p is the sum over the K*K taps t of row ``indices[p + t]`` of the tap's
    kernel slice ``kernel[t]`` (C, F): no multiplications, about 1/C of the dense conv's work.
    Taps that fall outside the map (the conv's zero padding) and index C read a zero row.

    Exact for maps with at most one 1 per pixel; the sum runs in another order than the
    conv's, so results agree to float rounding (tests/test_performance.py).

    Args:
        indices: int32 [N, H, W] class per pixel, in [0, C].
        kernel: [K, K, C, F] tensor.
        method: ``segment_sum`` (one fused SparseSegmentSum, and one for the kernel
            gradient) or ``gather`` (K*K ``tf.gather`` + add, TFLite builtins).
    """
    k, c, f = int(kernel.shape[0]), int(kernel.shape[2]), int(kernel.shape[3])
    p = k // 2
    table = tf.reshape(tf.pad(tf.reshape(kernel, (k * k, c, f)), [[0, 0], [0, 1], [0, 0]]),
                       (k * k * (c + 1), f))  # tap t, class j -> row t*(C+1) + j; j=C is zero
    padded = tf.pad(indices, [[0, 0], [p, p], [p, p]], constant_values=c)
    sizes = _sizes(indices)
    h, w = sizes[1], sizes[2]
    taps = [padded[:, i:i + h, j:j + w] + (i * k + j) * (c + 1) for i in range(k) for j in range(k)]
    if LabelConv.parse(method, "label_conv") is LabelConv.GATHER:
        y = tf.gather(table, taps[0])
        for t in taps[1:]:
            y = y + tf.gather(table, t)
        return y
    rows = tf.reshape(tf.stack(taps, axis=-1), (-1,))  # pixel-major: K*K rows per pixel
    size = indices.shape.num_elements() or tf.size(indices)
    pixels = tf.reshape(tf.broadcast_to(tf.range(size)[:, None], (size, k * k)), (-1,))

    @tf.custom_gradient
    def lookup(table):
        y = tf.sparse.segment_sum(table, rows, pixels)

        def grad(dy):
            return _onehot_conv_table_gradient(indices, dy, k, c, f)

        return y, grad

    return tf.reshape(lookup(table), tf.stack([*sizes, f]))


def _onehot_conv_table_gradient(indices, dy, k, c, f):
    """d(loss)/d(table) of ``onehot_conv``: row (t, j) sums dy over the pixels p whose tap t
    reads class j, i.e. over the pixels q = p + offset_t of class j, of dy[q - offset_t].

    The pixels are sorted by class once; every tap then reads dy (zero-padded) at the sorted
    positions shifted by its offset, and one fused SparseSegmentSum adds them up in order
    (segment t*(C+1) + j). One unsorted segment sum per tap over dy, the first form of this,
    took 2.6x as long in the ade20k profile.
    """
    p = k // 2
    n, h, w = tf.shape(indices)[0], tf.shape(indices)[1], tf.shape(indices)[2]
    flat = tf.reshape(indices, (-1,))
    order = tf.argsort(flat, stable=True)
    classes = tf.gather(flat, order)
    qn, rem = order // (h * w), order % (h * w)
    qh, qw = rem // w, rem % w
    hp, wp = h + 2 * p, w + 2 * p
    dy_pad = tf.reshape(tf.pad(tf.reshape(dy, (n, h, w, f)), [[0, 0], [p, p], [p, p], [0, 0]]),
                        (-1, f))
    # Tap (i, j) reads q = p_out + (i - p, j - p): p_out = q - (i - p, j - p), which sits at
    # q + (2p - i, 2p - j) in the padded dy.
    base = qn * hp * wp + qh * wp + qw
    rows = tf.concat([base + (2 * p - i) * wp + (2 * p - j) for i in range(k) for j in range(k)], 0)
    segments = tf.concat([classes + t * (c + 1) for t in range(k * k)], 0)
    return tf.sparse.segment_sum(dy_pad, rows, segments, num_segments=k * k * (c + 1))


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


# ------------------------------------------------------------------ uniform label regions

# The regional form runs only where at most this fraction of a map's pixels is near a label
# boundary: above it, gathering the boundary pixels' patches costs about what the dense conv
# saves (REGION_MAX_FRACTION and REGION_MIN_PIXELS: docs/performance.md, uniform regions).
REGION_MAX_FRACTION = 0.5
# ... and only at resolutions of at least this many pixels (below, nearly every pixel of a real
# label map is near a boundary, and the convs are small).
REGION_MIN_PIXELS = 32 * 32


class LabelRegions(typing.NamedTuple):
    """Where SPADE's gamma and beta are not a function of the pixel's own class.

    Attributes:
        indices: int32 [N, H, W], the class of each pixel (``onehot_indices``).
        boundary: int32 [B, 3], (n, i, j) of every pixel whose 2·(K//2) neighbourhood holds
            another class, a nonzero non-one-hot channel (the instance edges) or the image border.
        worth: scalar bool, the regional form pays (boundary fraction < REGION_MAX_FRACTION).
        taps: per tap of a KxK SAME conv (row-major), (rows [B, 1] int32, valid [B, 1] bool or
            None): the row of the map flattened to [N*H*W, F] that the tap reads for each
            boundary pixel, clamped into the map where the tap falls in the zero padding
            (``valid`` False there; None for the centre tap). Computed once per resolution and
            shared by every SPADE conv there: per conv they were 3/4 of the regional graph's
            nodes, and the graph's size is process memory (about 15 KB per node once traced
            and run: ``scripts/graph_memory.py``).
    """

    indices: tf.Tensor
    boundary: tf.Tensor
    worth: tf.Tensor
    taps: tuple


def label_regions(indices, extra=None, kernel_size=3, max_fraction=REGION_MAX_FRACTION):
    """``LabelRegions`` of a label map at one resolution.

    SPADE's gamma at pixel p is a KxK conv of the hidden features, each a KxK conv (+ ReLU) of
    the label map: p depends on the labels within 2·(K//2) pixels. Where they are all one class
    c, with no instance edge and no zero padding in reach, gamma(p) is the same for every such
    pixel of class c: one value per class, computed once (``regional_conv``).

    Args:
        indices: int32 [N, H, W] from ``onehot_indices`` (index C: no class).
        extra: the label map's other channels [N, H, W, E] (the instance edges), or None.
        kernel_size: K of SPADE's convs.
        max_fraction: ``worth`` is False above this boundary fraction.
    """
    r = 2 * (int(kernel_size) // 2)
    win = 2 * r + 1
    f = tf.cast(indices, tf.float32)[..., None]  # class ids < 2^24: exact in float32
    hi = tf.nn.max_pool2d(f, win, 1, "SAME")  # SAME pooling ignores the outside
    lo = -tf.nn.max_pool2d(-f, win, 1, "SAME")
    uniform = tf.equal(hi, lo)[..., 0]
    if extra is not None and int(extra.shape[-1]):
        e = tf.reduce_max(tf.abs(tf.cast(extra, tf.float32)), axis=-1, keepdims=True)
        uniform &= tf.equal(tf.nn.max_pool2d(e, win, 1, "SAME")[..., 0], 0.0)
    _, h, w = _sizes(indices)
    rows = tf.range(h)
    cols = tf.range(w)
    inside = ((rows >= r) & (rows < h - r))[:, None] & ((cols >= r) & (cols < w - r))[None, :]
    uniform &= inside[None]
    boundary = tf.cast(tf.where(~uniform), tf.int32)
    fraction = tf.cast(tf.shape(boundary)[0], tf.float32) / tf.cast(tf.size(indices), tf.float32)
    return LabelRegions(indices, boundary, fraction < max_fraction,
                        _tap_rows(h, w, boundary, int(kernel_size)))


def class_hidden_features(kernel, bias, onehot_channels):
    """[C + 1, F]: SPADE's hidden features of a pixel whose whole KxK window is class c (row
    C: no class), relu(sum over the taps of the shared kernel's row c + bias)."""
    n = int(onehot_channels)
    rows = tf.reduce_sum(kernel[:, :, :n, :], axis=[0, 1])
    return ops.relu(tf.concat([rows, tf.zeros_like(rows[:1])], 0) + bias)


def _tap_rows(h, w, boundary, k):
    """``LabelRegions.taps`` for a KxK SAME conv on an [N, h, w, F] map at the pixels
    ``boundary`` [B, 3] (n, i, j)."""
    p = k // 2
    n, i0, j0 = tf.unstack(boundary[..., None], axis=1)  # each [B, 1]: gather_nd's rows

    def shifted(x, d, size):  # (x + d clamped into [0, size), valid or None)
        if not d:
            return x, None
        y = x + d
        return tf.clip_by_value(y, 0, size - 1), (y >= 0) & (y < size)

    rows = [shifted(i0, d, h) for d in range(-p, p + 1)]
    cols = [shifted(j0, d, w) for d in range(-p, p + 1)]
    base = n * (h * w)
    taps = []
    for i, valid_i in rows:
        row_base = base + i * w
        for j, valid_j in cols:
            valid = (valid_i if valid_j is None else valid_j if valid_i is None
                     else valid_i & valid_j)
            taps.append((row_base + j, valid))
    return tuple(taps)


def _masked(x, valid, zero):
    return x if valid is None else tf.where(valid, x, zero)


def regional_conv(hidden, kernel, bias, class_hidden, regions):
    """``conv2d(hidden, kernel, SAME) + bias`` where ``hidden`` holds SPADE's hidden features
    of a label map with ``regions``: a conv at the boundary pixels only (per tap, a gather of
    their neighbours' rows and a matmul), and one value per class everywhere else.

    The same sums as the dense conv at every pixel (float rounding aside): off the boundary the
    patch is ``class_hidden[c]`` under every tap, so the output is class_hidden[c] · (the
    kernel summed over its taps) + bias. The gradient is written out so that the backward pass
    also runs on the boundary pixels only and keeps nothing but the inputs. Both passes gather
    per tap (B rows at a time), not a B x K*K*F patch matrix (45 MB at ade20k's 256x256: the
    inference memory peak is in that block).

    Args:
        hidden: [N, H, W, F] SPADE's hidden features (``relu(mlp_shared(seg))``).
        kernel: [K, K, F, O] HWIO kernel; bias: [O].
        class_hidden: [C + 1, F] from ``class_hidden_features``.
        regions: ``LabelRegions`` of the label map at this resolution.
    """
    k = int(kernel.shape[0])
    if len(regions.taps) != k * k:
        raise ValueError(f"regional_conv: the regions were found for {len(regions.taps)} taps, "
                         f"the kernel has {k}x{k}")
    boundary, taps = regions.boundary, regions.taps
    n_rows = int(class_hidden.shape[0])
    features = int(hidden.shape[-1])
    # Each pixel reads one row of [class values; boundary values]: its class's row, or (on the
    # boundary) its own. One gather makes the output, with no dense copy for a scatter.
    rows_of = tf.tensor_scatter_nd_update(regions.indices, boundary,
                                          n_rows + tf.range(tf.shape(boundary)[0]))

    @tf.custom_gradient
    def conv(hidden, kernel, bias, class_hidden):
        tap_sum = tf.reduce_sum(kernel, axis=[0, 1])
        table = tf.matmul(class_hidden, tap_sum) + bias
        flat = tf.reshape(hidden, (-1, features))  # a view: no copy
        tap_kernels = tf.unstack(tf.reshape(kernel, (k * k, features, -1)))
        zero = tf.zeros((), hidden.dtype)  # one node for every tap (the graph's size is memory)
        values = bias
        for (index, valid), tap_kernel in zip(taps, tap_kernels):
            # one tap at a time: left to itself the executor gathers all K*K at once
            with tf.control_dependencies([values]):
                rows = _masked(tf.gather_nd(flat, index), valid, zero)
            values = values + tf.matmul(rows, tap_kernel)
        out = tf.gather(tf.concat([table, values], 0), rows_of)

        def grad(dout):
            d_rows = tf.math.unsorted_segment_sum(
                tf.reshape(dout, (-1, dout.shape[-1])), tf.reshape(rows_of, (-1,)),
                n_rows + tf.shape(boundary)[0])
            d_table, d_values = d_rows[:n_rows], d_rows[n_rows:]
            d_bias = tf.reduce_sum(d_table, 0) + tf.reduce_sum(d_values, 0)
            d_class_hidden = tf.matmul(d_table, tap_sum, transpose_b=True)
            d_taps, d_flat = [], None  # the forward's flat view, tap kernels and zero
            for a in range(k):  # one row of taps at a time: K scatters of K*B rows
                index_row, updates_row = [], []
                for (index, valid), tap_kernel in zip(taps[a * k:(a + 1) * k],
                                                      tap_kernels[a * k:(a + 1) * k]):
                    with tf.control_dependencies(d_taps[-1:] + ([d_flat] if a else [])):
                        rows = _masked(tf.gather_nd(flat, index), valid, zero)
                    d_taps.append(tf.matmul(rows, d_values, transpose_a=True))
                    updates_row.append(_masked(tf.matmul(d_values, tap_kernel, transpose_b=True),
                                               valid, zero))
                    index_row.append(index)
                index_row = tf.concat(index_row, 0)
                updates_row = tf.concat(updates_row, 0)
                d_flat = (tf.scatter_nd(index_row, updates_row, tf.shape(flat))
                          if d_flat is None else
                          tf.tensor_scatter_nd_add(d_flat, index_row, updates_row))
            d_kernel = (tf.reshape(tf.stack(d_taps), kernel.shape)
                        + tf.matmul(class_hidden, d_table, transpose_a=True))
            return tf.reshape(d_flat, tf.shape(hidden)), d_kernel, d_bias, d_class_hidden

        return out, grad

    return conv(hidden, kernel, bias, class_hidden)


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

    The variables are always the reference's three convs; ``label_conv`` and
    ``fuse_gamma_beta`` only change how they are applied (the same numbers to float rounding).

    Args:
        norm_type: the parameter-free norm: ``sync_batch`` (default, ``spadesyncbatch3x3``),
            ``batch`` or ``instance``.
        kernel_size: K of the three convs (the ``3x3`` of ``--norm_G``).
        hidden_filters: width of the shared conv (``nhidden``, 128 in the reference).
        init_type: ``--init_type`` for the convs.
        init_gain: ``--init_variance``.
        onehot_channels: how many leading channels of the label map are one-hot (the classes
            and dontcare); None: unknown, the shared conv stays dense.
        label_conv: ``dense`` | ``gather`` | ``segment_sum``: how the shared conv reads the
            one-hot channels (see ``onehot_conv``).
        fuse_gamma_beta: run mlp_gamma and mlp_beta as one conv with 2C outputs.
        filter_gradient: ``native`` | ``swapped`` | ``auto`` for the three convs.
        closed_form_gradients: in training mode, hand-written gradients for the norm and the
            modulation (``normalize_closed_form``, ``modulate``; ``perf.closed_form_gradients``).
        sequential_inference: in inference mode, run the label branch only once ``x`` is
            ready, in a fixed order with the norm (``perf.sequential_inference``; see
            ``_sequential_inference``).
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
        regions: ``LabelRegions`` of the label map at x's resolution: gamma and beta by
            ``regional_conv`` where worth it (``perf.uniform_regions``); None: dense convs.
    """

    def __init__(self, norm_type="sync_batch", kernel_size=3, hidden_filters=128,
                 init_type="xavier", init_gain=0.02, onehot_channels=None, label_conv="dense",
                 fuse_gamma_beta=False, filter_gradient="auto", closed_form_gradients=False,
                 sequential_inference=False, **kwargs):
        super().__init__(**kwargs)
        self.sequential_inference = bool(sequential_inference)
        self.norm_type = str(SpadeNorm.parse(norm_type, "norm_type"))
        self.kernel_size = int(kernel_size)
        self.hidden_filters = int(hidden_filters)
        self.init_type = str(InitType.parse(init_type, "init_type"))
        self.init_gain = float(init_gain)
        self.onehot_channels = None if onehot_channels is None else int(onehot_channels)
        self.label_conv = str(LabelConv.parse(label_conv, "label_conv"))
        self.fuse_gamma_beta = bool(fuse_gamma_beta)
        self.filter_gradient = str(FilterGradient.parse(filter_gradient, "filter_gradient"))
        self.closed_form_gradients = bool(closed_form_gradients)

    def build(self, x_shape, segmap_shape):
        # Sublayers are made here: gamma/beta need the channels of x, known only now.
        c = int(x_shape[-1])
        k, p = self.kernel_size, self.kernel_size // 2
        init = dict(init_type=self.init_type, init_gain=self.init_gain,
                    filter_gradient=self.filter_gradient)
        self.param_free_norm = make_param_free_norm(
            self.norm_type, name="param_free_norm",
            closed_form_gradient=self.closed_form_gradients)
        self.mlp_shared = TorchConv2D(self.hidden_filters, k, padding=p, name="mlp_shared", **init)
        self.mlp_gamma = TorchConv2D(c, k, padding=p, name="mlp_gamma", **init)
        self.mlp_beta = TorchConv2D(c, k, padding=p, name="mlp_beta", **init)
        self.param_free_norm.build(x_shape)
        hw_seg = tuple(x_shape[:3]) + (int(segmap_shape[-1]),)
        self.mlp_shared.build(hw_seg)
        hidden = tuple(x_shape[:3]) + (self.hidden_filters,)
        self.mlp_gamma.build(hidden)
        self.mlp_beta.build(hidden)

    def shared_kernel(self):
        """(kernel, bias) of mlp_shared in the compute dtype."""
        conv = self.mlp_shared
        return ops.cast(conv.kernel, self.compute_dtype), ops.cast(conv.bias, self.compute_dtype)

    def hidden_features(self, seg, indices=None):
        """relu(mlp_shared(seg)) for a label map already at x's resolution (``indices``: its
        ``onehot_indices``, needed for the lookup forms)."""
        kernel, bias = self.shared_kernel()
        if indices is None and self.label_conv != LabelConv.DENSE.value and self.onehot_channels:
            indices = onehot_indices(seg[..., :self.onehot_channels])
        return ops.relu(label_map_conv(self.mlp_shared, kernel, bias, seg, indices,
                                       self.onehot_channels, self.label_conv))

    def class_hidden(self, regions):
        """``class_hidden_features`` of this layer's shared conv, when ``regions`` are used."""
        if regions is None or not self.onehot_channels:
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
        if not self.fuse_gamma_beta:
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

    def call(self, x, segmap, training=False, hidden=None, activation_slope=None, indices=None,
             regions=None):
        if self.sequential_inference and not training:
            out = self._sequential_inference(x, segmap, hidden, indices, regions)
        else:
            normalized = self.param_free_norm(x, training=training)
            if hidden is None:
                hidden = self.hidden_features(self._resized(segmap, x), indices)
            gamma, beta = self.modulation(hidden, regions)
            if training and self.closed_form_gradients:
                return modulate(normalized, gamma, beta, activation_slope)
            out = normalized * (1.0 + gamma) + beta
        if activation_slope is not None:
            out = ops.leaky_relu(out, negative_slope=activation_slope)
        return out

    def _sequential_inference(self, x, segmap, hidden, indices, regions=None):
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
                hidden = self.hidden_features(self._resized(segmap, x), indices)
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
                      label_conv=self.label_conv, fuse_gamma_beta=self.fuse_gamma_beta,
                      filter_gradient=self.filter_gradient,
                      closed_form_gradients=self.closed_form_gradients,
                      sequential_inference=self.sequential_inference)
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
        **kwargs: standard ``keras.layers.Layer`` arguments.
    """

    def __init__(self, norm_type="sync_batch", init_gain=0.02, **kwargs):
        super().__init__(**kwargs)
        self.norm_type = str(SpadeNorm.parse(norm_type, "norm_type"))
        self.init_gain = float(init_gain)

    def build(self, x_shape, segmap_shape=None):
        c = int(x_shape[-1])
        self.param_free_norm = make_param_free_norm(self.norm_type, name="param_free_norm")
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
        modulation: ``spade`` (the reference) or ``affine``: every SPADE replaced by an
            ``AffineNorm`` of the same norm type, which ignores the label map (the baseline).
        onehot_channels: leading one-hot channels of the label map (see ``SPADE``).
        label_conv: ``dense`` | ``gather`` | ``segment_sum`` (see ``SPADE``).
        fuse_gamma_beta: fuse each SPADE's gamma and beta convs (see ``SPADE``).
        filter_gradient: ``native`` | ``swapped`` | ``auto`` for every conv of the block.
        closed_form_gradients: hand-written norm and modulation gradients (see ``SPADE``).
        sequential_inference: in inference mode, one SPADE layer's label branch at a time (see
            ``SPADE``): the shortcut, then the main branch.
        **kwargs: standard ``keras.layers.Layer`` arguments.

    Call arguments:
        x: NHWC features.
        segmap: NHWC semantic map, at full or at x's resolution.
        training: Python bool.
        hidden: optional dict ``{"norm_0": ..., "norm_1": ..., "norm_s": ...}`` of the SPADE
            layers' precomputed shared features (``SPADE.call``'s ``hidden``).
        indices: optional ``onehot_indices`` of a ``segmap`` at x's resolution (``SPADE.call``).
        regions: optional ``LabelRegions`` at x's resolution (``SPADE.call``).
    """

    MODULATIONS = ("spade", "affine")

    def __init__(self, filters, spectral=True, spade_norm="sync_batch", spade_kernel_size=3,
                 spade_hidden_filters=128, init_type="xavier", init_gain=0.02, modulation="spade",
                 onehot_channels=None, label_conv="dense", fuse_gamma_beta=False,
                 filter_gradient="auto", closed_form_gradients=False, sequential_inference=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.sequential_inference = bool(sequential_inference)
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
        self.label_conv = str(LabelConv.parse(label_conv, "label_conv"))
        self.fuse_gamma_beta = bool(fuse_gamma_beta)
        self.filter_gradient = str(FilterGradient.parse(filter_gradient, "filter_gradient"))
        self.closed_form_gradients = bool(closed_form_gradients)

    def build(self, x_shape, segmap_shape):
        fin = int(x_shape[-1])
        self.learned_shortcut = fin != self.filters
        fmiddle = min(fin, self.filters)
        init = dict(init_type=self.init_type, init_gain=self.init_gain,
                    filter_gradient=self.filter_gradient)
        if self.modulation == "spade":
            def make_norm(name):
                return SPADE(norm_type=self.spade_norm, kernel_size=self.spade_kernel_size,
                             hidden_filters=self.spade_hidden_filters,
                             onehot_channels=self.onehot_channels, label_conv=self.label_conv,
                             fuse_gamma_beta=self.fuse_gamma_beta,
                             closed_form_gradients=self.closed_form_gradients,
                             sequential_inference=self.sequential_inference, name=name, **init)
        else:
            def make_norm(name):
                return AffineNorm(self.spade_norm, init_gain=self.init_gain, name=name)
        self.conv_0 = make_conv(self.spectral, fmiddle, 3, padding=1, name="conv_0", **init)
        self.conv_1 = make_conv(self.spectral, self.filters, 3, padding=1, name="conv_1", **init)
        self.norm_0 = make_norm("norm_0")
        self.norm_1 = make_norm("norm_1")
        mid_shape = tuple(x_shape[:3]) + (fmiddle,)
        self.norm_0.build(x_shape, segmap_shape)
        self.conv_0.build(x_shape)
        self.norm_1.build(mid_shape, segmap_shape)
        self.conv_1.build(mid_shape)
        if self.learned_shortcut:
            self.conv_s = make_conv(self.spectral, self.filters, 1, use_bias=False, name="conv_s",
                                    **init)
            self.norm_s = make_norm("norm_s")
            self.norm_s.build(x_shape, segmap_shape)
            self.conv_s.build(x_shape)

    @property
    def spade_layers(self) -> dict:
        """{"norm_0": ..., "norm_1": ..., ["norm_s": ...]}: the block's SPADE layers (empty
        for ``affine`` modulation), all at the block's resolution."""
        if self.modulation != "spade":
            return {}
        names = ["norm_0", "norm_1"] + (["norm_s"] if self.learned_shortcut else [])
        return {n: getattr(self, n) for n in names}

    def call(self, x, segmap, training=False, hidden=None, indices=None, regions=None):
        hidden = hidden or {}

        def norm(name, t, activated=False):
            layer = getattr(self, name)
            if self.modulation != "spade":
                out = layer(t, segmap, training=training)
                return leaky_relu(out) if activated else out
            # The leaky ReLU goes into the SPADE layer, which fuses it with the modulation.
            kw = dict(training=training, activation_slope=LRELU_SLOPE if activated else None)
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
        after_shortcut = (self.sequential_inference and not training and self.learned_shortcut
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
                      onehot_channels=self.onehot_channels, label_conv=self.label_conv,
                      fuse_gamma_beta=self.fuse_gamma_beta, filter_gradient=self.filter_gradient,
                      closed_form_gradients=self.closed_form_gradients,
                      sequential_inference=self.sequential_inference)
        return config


def count_params(variables) -> int:
    """Number of scalars in ``variables`` (what PyTorch counts as the numel of Parameters)."""
    return int(sum(math.prod(v.shape) for v in variables))
