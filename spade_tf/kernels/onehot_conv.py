"""A convolution of a one-hot label map as lookups (``perf.label_conv``: ``gather`` or
``segment_sum``).

A KxK conv of a one-hot map is a sum of K*K rows of the kernel, one per tap, picked by the
class under that tap: no multiplications, about 1/C of the dense conv's work.
"""

from __future__ import annotations

import tensorflow as tf

from spade_tf.config import LabelConv


def static_sizes(x):
    """``x``'s dimensions: Python ints where static, scalar tensors where not. Static sizes
    keep the traced graph small (a slice with constant bounds needs far fewer nodes than one
    with computed bounds), and each node costs process memory (docs/benchmarks/history.md, graph memory)."""
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
    sizes = static_sizes(indices)
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

