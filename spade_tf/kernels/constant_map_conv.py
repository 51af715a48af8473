"""A convolution of a map that holds one vector at every pixel (``perf.broadcast_noise``).

OASIS' noise is one vector per image, repeated over the image, and it goes through the first
3x3 conv of every SPADE layer together with the label map. With zero padding, such a conv takes
only (2p+1)^2 distinct values for a kernel of size 2p+1: p rows of the top border, the interior,
p rows of the bottom border (and the same for columns). So it is the conv of a
(2p+1) x (2p+1) map of the vector, whose rows and columns are then repeated: the same products
and sums per output pixel, over 9 pixels instead of H x W (at 64 x 64, 455x fewer).
"""

from __future__ import annotations

import tensorflow as tf


def _border_index(size, p):
    """Output row (or column) -> row of the small map: 0..p-1, then p, then p+1..2p."""
    return tf.concat([tf.range(p), tf.fill([size - 2 * p], p), tf.range(p + 1, 2 * p + 1)], 0)


def constant_map_conv(vector, kernel, hw):
    """``conv2d(broadcast(vector, [N, H, W, C]), kernel, stride 1, 'SAME')`` for an odd square
    kernel, computed on a (2p+1)^2 map.

    Args:
        vector: [N, C], the value of every pixel.
        kernel: HWIO [k, k, C, F], k odd.
        hw: (H, W) of the map (ints or scalar tensors).

    Returns:
        [N, H, W, F].
    """
    k = int(kernel.shape[0])
    p = k // 2
    h, w = hw
    n = 2 * p + 1
    small_h = n if isinstance(h, int) and h >= n else (h if isinstance(h, int) else None)
    small_w = n if isinstance(w, int) and w >= n else (w if isinstance(w, int) else None)
    if small_h is None or small_w is None or small_h < n or small_w < n:
        # dynamic sizes, or a map smaller than the kernel's reach: every pixel is a border
        full = tf.broadcast_to(vector[:, None, None, :],
                               tf.stack([tf.shape(vector)[0], h, w, tf.shape(vector)[1]]))
        return tf.nn.conv2d(full, kernel, 1, "SAME")
    small = tf.broadcast_to(vector[:, None, None, :],
                            tf.stack([tf.shape(vector)[0], n, n, tf.shape(vector)[1]]))
    y = tf.nn.conv2d(small, kernel, 1, "SAME")
    y = tf.gather(y, _border_index(h, p), axis=1)
    return tf.gather(y, _border_index(w, p), axis=2)
