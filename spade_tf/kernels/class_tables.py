"""CLADE's per-class lookups (``perf.clade_lookup``): ``gather`` or ``onehot_conv``.

CLADE (``spade_tf.layers.ClassAdaptiveNorm``) picks, at every pixel, the row of a
``[classes, C]`` table (gamma or beta) named by the pixel's label, the argmax over the one-hot
channels. Two forms compute that:

- ``gather``: the argmax, then ``tf.gather`` (the reference's definition; TFLite builtin
  ``GATHER``); one gather per table;
- ``onehot_conv``: a 1x1 conv of the one-hot map with the table as its kernel, i.e. one matmul
  ``[N*H*W, classes] @ [classes, C]``. For a one-hot map (exactly one 1 per pixel, as
  ``spade_tf.semantics.to_semantics`` makes, also after the legacy nearest resize) every output
  is one table entry times 1 plus zeros: the same number as the gather, bit for bit, in float32
  and float16 alike. The tables are concatenated so that the one-hot map is read once for all
  of them.

Which is faster depends on the device and the number of classes: the matmul does ``classes``
multiply-adds per output where the gather copies one value, but it runs as one dense GEMM and its
gradient is a dense GEMM too (the gather's is a scatter-add). docs/performance.md has the
measurements that ``spade_tf.perf.resolve_perf`` follows.
"""

from __future__ import annotations

import tensorflow as tf

from spade_tf.config import CladeLookup


def class_lookup(onehot, tables, method="gather"):
    """Each table's row for every pixel's class: ``[table[argmax(onehot)] for table in tables]``.

    Args:
        onehot: NHWC one-hot map [N, H, W, classes] (exactly one 1 per pixel for the two forms
            to agree; a pixel with no 1 gets row 0 from ``gather`` and zeros from
            ``onehot_conv``).
        tables: tensors [classes, C_i], already in the compute dtype.
        method: ``gather`` or ``onehot_conv``.

    Returns:
        a list of NHWC tensors [N, H, W, C_i], one per table.
    """
    if CladeLookup.parse(method, "clade_lookup") is CladeLookup.GATHER:
        label = tf.argmax(onehot, axis=-1, output_type=tf.int32)
        return [tf.gather(t, label) for t in tables]  # GATHER: a TFLite builtin
    widths = [int(t.shape[-1]) for t in tables]
    table = tables[0] if len(tables) == 1 else tf.concat(tables, axis=-1)
    rows = tf.matmul(tf.reshape(tf.cast(onehot, table.dtype), (-1, int(onehot.shape[-1]))), table)
    out = tf.reshape(rows, tf.concat([tf.shape(onehot)[:3], [sum(widths)]], axis=0))
    # Each table's columns as a slice, not one tf.split: LiteRT.js' WebGPU accelerator (2.5.3)
    # computes SPLIT_V followed by an elementwise op wrongly (it binds one texture as both input
    # and output: a WebGPU validation error, and an image of zeros; docs/mobile.md has the
    # reproducer), and STRIDED_SLICE runs right there. The numbers are the same.
    starts = [sum(widths[:i]) for i in range(len(widths))]
    return [out[..., a:a + w] for a, w in zip(starts, widths)] if len(tables) > 1 else [out]
