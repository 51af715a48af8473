"""Both gradients of a convolution as forward convolutions (``perf.filter_gradient=swapped``).

TensorFlow's own (Eigen) CPU kernels for ``Conv2DBackpropFilter`` and ``Conv2DBackpropInput``
ran 1.3-3.1x slower than forward convolutions doing the same sums at the ade20k generator's
shapes; with oneDNN, and with cuDNN, the backward kernels are the faster ones
(``spade_tf.perf.resolve_perf`` picks the form per device; docs/performance.md).
"""

from __future__ import annotations

import tensorflow as tf


def swapped_filter_gradient(x, dy, kernel_size, strides, padding=0):
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


def input_gradient_as_conv(x_shape, kernel_shape, strides, pad) -> bool:
    """Whether ``flipped_input_gradient`` beats ``Conv2DBackpropInput`` for this layer.

    Used only with the swapped kernel gradient, i.e. without oneDNN. Measured on the ade20k
    generator's shapes (docs/benchmarks/conv_gradients.md, from
    scripts/bench_conv_gradients.py of commit a0ff134), oneDNN off: TensorFlow's backward-data kernel ran 1.4-3.1x slower than
    the equivalent forward conv from 64x64 up (11x for conv_img's 64 -> 3), but the forward
    form lost where the kernel is much bigger than the activations (8x8 at 1024 channels:
    flipping the kernel costs more than it saves) and where it would have 8x more input than
    output channels (SPADE's 128 -> 1024 at 64x64).
    """
    if strides != 1 or pad != "SAME" or None in tuple(x_shape[1:3]):
        return False
    c_in, c_out = int(kernel_shape[2]), int(kernel_shape[3])
    return int(x_shape[1]) * int(x_shape[2]) >= 256 and c_out <= 4 * c_in


def flipped_input_gradient(dy, kernel):
    """dL/dx of a stride-1 SAME convolution as a forward SAME convolution of dy with the kernel
    rotated by 180 degrees and its in/out channels swapped: dx[h, w, i] = sum_{a, b, o}
    dy[h - a + c, w - b + c, o] * K[a, b, i, o] (c = k // 2). The same products and sums as
    ``Conv2DBackpropInput`` in another order."""
    return tf.nn.conv2d(dy, tf.transpose(tf.reverse(kernel, [0, 1]), (0, 1, 3, 2)), 1, "SAME")


def conv2d_forward_gradients(x, kernel, strides, padding):
    """``tf.nn.conv2d(x, kernel, strides, padding)`` whose kernel gradient is
    ``swapped_filter_gradient`` and whose input gradient is ``flipped_input_gradient`` where
    ``input_gradient_as_conv`` says it is faster (else ``Conv2DBackpropInput``).

    Args:
        x: NHWC input (already zero-padded when ``padding`` is ``VALID``).
        kernel: HWIO kernel with odd K.
        strides: stride in both directions.
        padding: ``SAME`` (symmetric for a stride-1 odd kernel) or ``VALID``.
    """
    k = int(kernel.shape[0])

    @tf.custom_gradient
    def conv(x, kernel):
        y = tf.nn.conv2d(x, kernel, strides=strides, padding=padding)

        def grad(dy):
            if input_gradient_as_conv(x.shape, kernel.shape, strides, padding):
                dx = flipped_input_gradient(dy, kernel)
            else:
                dx = tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=kernel, out_backprop=dy,
                    strides=[1, strides, strides, 1], padding=padding)
            return dx, swapped_filter_gradient(x, dy, k, strides, k // 2 if padding == "SAME" else 0)

        return y, grad

    return conv(x, kernel)
