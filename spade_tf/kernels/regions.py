"""SPADE's gamma/beta convs only near label boundaries (``perf.uniform_regions``).

Inside a uniform region, SPADE's gamma and beta at a pixel depend only on the pixel's class:
one value per class, computed once; the conv runs only at the pixels near a boundary. Exact,
with a hand-written gradient (tests/test_kernels.py).
"""

from __future__ import annotations

import typing

import tensorflow as tf
from keras import ops

from spade_tf.kernels.onehot_conv import static_sizes


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
            and run: measured by scripts/graph_memory.py of commit 19dd428, docs/benchmarks/history.md).
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
    _, h, w = static_sizes(indices)
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
