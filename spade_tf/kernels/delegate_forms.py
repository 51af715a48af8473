"""Forms that the TFLite GPU delegate takes whole, for the GPU TFLite graph (the ``fp16`` file).

The GPU delegate (``tensorflow/lite/delegates/gpu``) runs an op only if it passes the rules of
``tensorflow/lite/tools/versioning/gpu_compatibility.cc`` and its tensors are at most 4-D
(BHWC); every op that fails falls back to the CPU, splits the graph and copies tensors between
GPU and CPU. The plain forms of four computations fail (``spade_tf.tflite_compat`` checks a
file against those rules):

- the one-hot label map: ``ONE_HOT``, or ``EQUAL`` + ``CAST``s through int32 (the full-int8
  form); here ``relu(1 - |label - id|)`` on the label as floats: 1 at the id, 0 elsewhere,
  exactly, for whole-number ids (exact in float16 up to 2048);
- the instance edges: ``NOT_EQUAL`` / ``LOGICAL_OR`` on ints; here ``min(|a - b|, 1)`` and
  ``max`` on floats, the same 0/1 map for whole-number ids;
- the 2x nearest upsampling: two ``repeat``s, i.e. rank-5 ``RESHAPE`` / ``TILE``; here one
  ``RESIZE_NEAREST_NEIGHBOR`` with PyTorch's legacy source index ``floor(dst * in / out)``
  (``align_corners`` and ``half_pixel_centers`` off), the same pixels;
- the uint8 output: ``ROUND`` and ``CAST``; here ``floor(x * 127.5 + 128)`` clipped to
  [0, 255], whole-number levels as float32 that the caller casts (rounds halves up where
  ``round`` rounds them to even: at most one level off, on exact ties only).

CLADE's lookups take the existing 1x1-conv form (``class_tables``, ``perf.clade_lookup``), and
SPADE's first conv its dense form (``perf.label_conv: dense``). ``tests/test_kernels.py`` proves
each form here equal to its plain form.
"""

from __future__ import annotations

import tensorflow as tf

# float16 holds every whole number up to 2**11 exactly: ids above it would merge on a GPU that
# computes in half precision (the delegate's default for an fp16 file)
FLOAT16_EXACT_IDS = 2048


def onehot_arithmetic(label, channel_ids, extra=None, dtype=tf.float32):
    """A one-hot map from integer ids with float ops only: channel k is ``relu(1 - |x - t_k|)``.

    Args:
        label: integer [N, H, W] ids (checked by the caller: nothing here validates them).
        channel_ids: the id each channel stands for, one per channel (a list of ints).
        extra: optional ``(channel, id)``: a second id that also lights ``channel`` (the
            dontcare id 255 beside its channel's own id).
        dtype: the output dtype.

    Returns:
        [N, H, W, len(channel_ids)] 0/1 map; the label's only CAST is at the input.
    """
    x = tf.cast(label, dtype)[..., None]
    onehot = tf.nn.relu(1.0 - tf.abs(x - tf.constant(channel_ids, dtype)))
    if extra is not None:
        channel, id_ = extra
        unit = [1.0 if k == channel else 0.0 for k in range(len(channel_ids))]
        onehot = onehot + tf.nn.relu(1.0 - tf.abs(x - float(id_))) * tf.constant(unit, dtype)
    return onehot


def instance_edges_arithmetic(instance, dtype=tf.float32):
    """``spade_tf.semantics.instance_edges`` with float ops: 1 where the id differs from a
    4-neighbour (both sides of each change), else 0; borders compare inward.

    Args:
        instance: integer [N, H, W] ids. Exact while they are whole numbers the dtype holds
            (renumber them below ``FLOAT16_EXACT_IDS`` for half precision: only changes matter).
        dtype: the output dtype.

    Returns:
        [N, H, W, 1] 0/1 map (rank 4 throughout: the delegate's tensors are BHWC).
    """
    t = tf.cast(instance, dtype)[..., None]
    dx = tf.minimum(tf.abs(t[:, :, 1:] - t[:, :, :-1]), 1.0)  # [N, H, W-1, 1]
    dy = tf.minimum(tf.abs(t[:, 1:] - t[:, :-1]), 1.0)  # [N, H-1, W, 1]
    pad = [[0, 0], [0, 0], [0, 0], [0, 0]]

    def padded(d, axis, before):
        p = [list(r) for r in pad]
        p[axis] = [1, 0] if before else [0, 1]
        return tf.pad(d, p)

    return tf.maximum(tf.maximum(padded(dx, 2, True), padded(dx, 2, False)),
                      tf.maximum(padded(dy, 1, True), padded(dy, 1, False)))


def resize_nearest_2x(x):
    """``nn.Upsample(scale_factor=2)`` (every pixel repeated 2 x 2) as one resize op.

    With ``align_corners`` and ``half_pixel_centers`` off, TensorFlow's and TFLite's nearest
    resize read source pixel ``floor(dst * in / out)`` = ``floor(dst / 2)``: PyTorch's legacy
    nearest, so the same pixels as the two ``repeat``s. Its gradient is TensorFlow's
    ``ResizeNearestNeighborGrad`` (a sum over each 2 x 2 block).
    """
    h, w = x.shape[1], x.shape[2]
    size = ([2 * int(h), 2 * int(w)] if h is not None and w is not None
            else 2 * tf.shape(x)[1:3])
    return tf.compat.v1.image.resize_nearest_neighbor(x, size, align_corners=False,
                                                       half_pixel_centers=False)


def float_levels(image):
    """A [-1, 1] image as whole-number levels 0..255 in float32, with the delegate's ops:
    ``floor(x * 127.5 + 128)`` clipped; ``spade_tf.export.to_uint8`` rounds ``x * 127.5 +
    127.5`` to even instead, which differs only on exact ties (by one level)."""
    x = tf.cast(image, tf.float32)
    return tf.minimum(tf.maximum(tf.floor(x * 127.5 + 128.0), 0.0), 255.0)
