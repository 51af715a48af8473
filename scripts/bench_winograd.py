"""Is Winograd F(2x2, 3x3) written in TensorFlow ops faster than TensorFlow's own 3x3 conv here?

Winograd's F(2x2, 3x3) computes a 3x3 stride-1 conv with 16 multiplies per 2x2 output tile
instead of 36 (2.25x fewer multiply-adds); it is the one way we know to do less dense work for
the generator's 3x3 convs. Without a custom kernel it has to be written as TensorFlow ops:
4x4 input tiles transformed with strided slices and adds, 16 batched matmuls [tiles, C_in] x
[C_in, C_out], and the output transform. This script times that form against ``tf.nn.conv2d``
on shapes of the ade20k generator, and the batched matmul alone, at batch 1 (medians of
--repeats calls after a warm-up), and checks that the two agree (relative error).

    .venv/bin/python scripts/bench_winograd.py --markdown docs/benchmarks/winograd.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_conv_gradients import _median_ms  # noqa: E402 (the same timing as that table)
from spade_tf.fileio import atomic_write_text  # noqa: E402

# (H = W, in channels, out channels): residual-block and SPADE gamma/beta convs of ade20k
SHAPES = [(256, 128, 128), (256, 128, 256), (128, 256, 128), (64, 512, 256), (16, 1024, 1024)]


def _four_slices(x, axis):
    """The rows r, r+2, r+4, ... for r = 0..3: the 4 rows of every tile (tiles overlap by 2)."""
    n = (x.shape[axis] - 2) // 2
    out = []
    for r in range(4):
        index = [slice(None)] * 4
        index[axis] = slice(r, r + 2 * n, 2)
        out.append(x[tuple(index)])
    return out


def _input_transform(d):
    """B^T d along one axis, B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]."""
    d0, d1, d2, d3 = d
    return [d0 - d2, d1 + d2, d2 - d1, d1 - d3]


def winograd_conv3x3(x, w):
    """``conv2d(x, w, 1, 'SAME')`` for a 3x3 kernel and even H, W, by Winograd F(2x2, 3x3)."""
    import numpy as np
    import tensorflow as tf

    n, h, wd, c = x.shape
    co = w.shape[-1]
    g = tf.constant(np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]), w.dtype)
    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    tiles = []
    for u in _input_transform(_four_slices(xp, 1)):
        tiles += _input_transform(_four_slices(u, 2))
    v = tf.reshape(tf.stack(tiles, 0), [16, -1, c])               # [16, tiles, C_in]
    u = tf.reshape(tf.einsum("ik,klcd,jl->ijcd", g, w, g), [16, c, co])  # G w G^T
    m = tf.reshape(tf.matmul(v, u), [4, 4, n, h // 2, wd // 2, co])
    rows = [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]               # A^T = [[1,1,1,0],[0,1,-1,-1]]
    out = [[r[0] + r[1] + r[2], r[1] - r[2] - r[3]] for r in rows]
    y = tf.stack([tf.stack(o, 3) for o in out], 2)                 # [N, H/2, 2, W/2, 2, C_out]
    return tf.reshape(y, [n, h, wd, co])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    args = p.parse_args()

    import numpy as np
    import tensorflow as tf

    from tqdm import tqdm

    rng = np.random.default_rng(0)
    conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    wino = tf.function(winograd_conv3x3)
    bmm = tf.function(lambda a, b: tf.matmul(a, b))
    lines = [f"Batch 1, medians of {args.repeats} calls after a warm-up "
             f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC).", "",
             "| size | in -> out | conv2d ms (GFLOP/s of the direct conv's work) | Winograd ms | "
             "speed-up | its batched matmul alone ms (GFLOP/s) | max rel. error |",
             "|---|---|---|---|---|---|---|"]
    for h, ci, co in tqdm(SHAPES, desc="shapes"):
        x = tf.constant(rng.standard_normal((1, h, h, ci)).astype(np.float32))
        w = tf.constant((0.05 * rng.standard_normal((3, 3, ci, co))).astype(np.float32))
        ref, got = conv(x, w).numpy(), wino(x, w).numpy()
        err = float(np.abs(ref - got).max() / np.abs(ref).max())
        t_conv, t_wino = _median_ms(conv, (x, w), args.repeats), _median_ms(wino, (x, w), args.repeats)
        tiles = (h // 2) ** 2
        a = tf.constant(rng.standard_normal((16, tiles, ci)).astype(np.float32))
        b = tf.constant(rng.standard_normal((16, ci, co)).astype(np.float32))
        t_mm = _median_ms(bmm, (a, b), args.repeats)
        direct = 2 * h * h * 9 * ci * co
        lines.append(f"| {h}x{h} | {ci} -> {co} | {t_conv:.1f} ({direct / t_conv / 1e6:.0f}) | "
                     f"{t_wino:.1f} | {t_conv / t_wino:.2f}x | {t_mm:.1f} "
                     f"({2 * 16 * tiles * ci * co / t_mm / 1e6:.0f}) | {err:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        atomic_write_text(args.markdown, text)


if __name__ == "__main__":
    main()
