"""Times the two conv gradients per layer shape: TensorFlow's backward kernels against the
forward-conv forms of ``spade_tf.layers`` (the measurements behind ``_input_gradient_as_conv``).

For every (resolution, in -> out channels, kernel) of the ade20k generator's convs, at batch 1:
- input gradient: ``Conv2DBackpropInput`` vs ``_flipped_input_gradient`` (a SAME conv of dy with
  the kernel rotated 180 degrees, in/out channels swapped), and what the rule picks;
- kernel gradient: ``Conv2DBackpropFilter`` vs ``_swapped_filter_gradient``.

Each time is the median of --repeats calls after a warm-up, in ms, with the rate in GFLOP/s
(2 x multiply-adds / time). Writes a markdown table (--markdown) and prints it.

    .venv/bin/python scripts/bench_conv_gradients.py --markdown docs/benchmarks/conv_gradients.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from spade_tf.fileio import atomic_write_text  # noqa: E402

# (H = W, in channels, out channels, kernel): the ade20k generator's residual-block convs,
# SPADE's fused gamma/beta convs (128 -> 2C) and conv_img.
SHAPES = [(8, 1024, 1024, 3), (16, 1024, 1024, 3), (32, 1024, 512, 3), (32, 512, 512, 3),
          (32, 1024, 512, 1), (64, 512, 256, 3), (64, 256, 256, 3), (128, 256, 128, 3),
          (128, 128, 128, 3), (256, 128, 64, 3), (256, 64, 64, 3), (256, 128, 128, 3),
          (256, 128, 256, 3), (128, 128, 512, 3), (64, 128, 1024, 3), (32, 128, 2048, 3),
          (256, 64, 3, 3)]


def _median_ms(fn, args, repeats):
    fn(*args).numpy()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args).numpy()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args()

    import tensorflow as tf
    from tqdm import tqdm

    from spade_tf.layers import (_flipped_input_gradient, _input_gradient_as_conv,
                                 _swapped_filter_gradient)

    lines = ["| size | in -> out | k | input grad: Conv2DBackpropInput ms (GFLOP/s) | flipped conv ms "
             "(GFLOP/s) | speed-up | rule picks | kernel grad: Conv2DBackpropFilter ms (GFLOP/s) "
             "| swapped conv ms (GFLOP/s) | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for hw, c_in, c_out, k in tqdm(SHAPES, desc="shapes"):
        x = tf.random.normal((1, hw, hw, c_in))
        dy = tf.random.normal((1, hw, hw, c_out))
        kernel = tf.random.normal((k, k, c_in, c_out))
        gflop = 2 * hw * hw * k * k * c_in * c_out / 1e9
        native_dx = tf.function(lambda dy, w, c=c_in, s=hw: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=[1, s, s, c], filter=w, out_backprop=dy, strides=[1, 1, 1, 1],
            padding="SAME"))
        flipped_dx = tf.function(_flipped_input_gradient)
        native_dk = tf.function(lambda x, dy, c=c_in, o=c_out, k=k: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=[k, k, c, o], out_backprop=dy, strides=[1, 1, 1, 1],
            padding="SAME"))
        swapped_dk = tf.function(lambda x, dy, k=k: _swapped_filter_gradient(x, dy, k, 1, k // 2))
        t = [_median_ms(native_dx, (dy, kernel), args.repeats),
             _median_ms(flipped_dx, (dy, kernel), args.repeats),
             _median_ms(native_dk, (x, dy), args.repeats),
             _median_ms(swapped_dk, (x, dy), args.repeats)]
        rate = [gflop / (ms / 1e3) for ms in t]
        rule = "flipped" if _input_gradient_as_conv(x.shape, kernel.shape, 1, "SAME") else "native"
        lines.append(f"| {hw}x{hw} | {c_in} -> {c_out} | {k} | {t[0]:.1f} ({rate[0]:.0f}) | "
                     f"{t[1]:.1f} ({rate[1]:.0f}) | {t[0] / t[1]:.2f}x | {rule} | "
                     f"{t[2]:.1f} ({rate[2]:.0f}) | {t[3]:.1f} ({rate[3]:.0f}) | {t[2] / t[3]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        atomic_write_text(args.markdown, f"Batch 1, medians of {args.repeats} calls after a "
                          f"warm-up ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).\n\n"
                          + text)


if __name__ == "__main__":
    main()
