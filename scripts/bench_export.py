#!/usr/bin/env python3
"""Export benchmark: file sizes, export times, and batch-1 generator latency of the Keras model
(inside tf.function), the reloaded SavedModel and every TFLite variant (ai-edge-litert on every
core; fp32 also on one thread, LiteRT's own default), for the tiny, 128 px (synthscapes) and
ade20k 256 px presets. Random weights: latency and size do not depend on training.

    .venv/bin/python scripts/bench_export.py [--presets tiny synthscapes ade20k] [--repeats 5]

Prints a markdown table (docs/benchmarks/export.md holds a committed run) and writes JSON with
--json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from spade_tf.benchmarking import median_seconds  # noqa: E402 (after the log level)


def _median(fn, repeats: int) -> float:
    return median_seconds(fn, repeats)[0]


def bench_preset(preset: str, repeats: int, variants, workdir: str) -> dict:
    import numpy as np
    import tensorflow as tf

    from spade_tf.config import load_config
    from spade_tf.export import GeneratorModule, TFLiteRunner, export_generator
    from spade_tf.networks import build_networks

    config = load_config(preset)
    m = config.model
    nets = build_networks(config, discriminator=False, encoder=False)
    module = GeneratorModule(config, nets.generator)
    h, w = module.height, module.width
    rng = np.random.default_rng(0)
    feed = {"label": rng.integers(0, m.num_classes, (1, h, w)).astype(np.int32)}
    if m.use_instance:
        feed["instance"] = rng.integers(0, 5, (1, h, w)).astype(np.int32)
    if m.use_vae:
        feed["z"] = rng.standard_normal((1, m.z_dim)).astype(np.float32)
    row = {"preset": preset, "size": f"{h}x{w}", "generator_params": nets.generator.count_params()}

    keras_fn = tf.function(lambda **kw: module.synthesize(**kw))
    tfeed = {k: tf.constant(v) for k, v in feed.items()}
    row["keras_s"] = _median(lambda: keras_fn(**tfeed).numpy(), repeats)

    t = time.time()
    res = export_generator((nets, config), workdir, name=preset, tflite=variants,
                           parity_inputs=[feed], progress=lambda s: None)
    row["export_s"] = round(time.time() - t, 1)
    row["saved_model_mb"] = res.report["saved_model_bytes"] / 1e6
    row["saved_model_export_s"] = res.report["saved_model_seconds"]
    loaded = tf.saved_model.load(str(res.version_dir))
    sig = loaded.signatures["serving_default"]
    row["saved_model_s"] = _median(lambda: sig(**tfeed)["image"].numpy(), repeats)
    for variant, path in res.tflite.items():
        runner = TFLiteRunner(path)  # every core (LiteRT's own default is one thread)
        row["tflite_threads"] = runner.num_threads
        row[f"tflite_{variant}_s"] = _median(lambda: runner(**feed), repeats)
        if variant == "fp32":  # what LiteRT's default gives, for comparison with older runs
            one = TFLiteRunner(path, num_threads=1)
            row["tflite_fp32_1thread_s"] = _median(lambda: one(**feed), repeats)
        row[f"tflite_{variant}_mb"] = os.path.getsize(path) / 1e6
        row[f"tflite_{variant}_max_levels_vs_keras"] = res.report["tflite"][variant]["max_abs_levels_vs_keras"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "synthscapes", "ade20k"])
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
    p.add_argument("--variants", default="fp32,fp16,dynamic_int8")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args()

    import tensorflow as tf

    variants = tuple(v for v in args.variants.split(",") if v)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            print(f"... {preset}", flush=True)
            rows.append(bench_preset(preset, args.repeats, variants, tmp))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores (TFLite on {rows[0].get('tflite_threads')} "
          f"threads); python {platform.python_version()}, "
          f"tensorflow {tf.__version__}; batch 1, median of {args.repeats} after a warm-up\n")
    head = ["preset", "size", "G params", "Keras s", "SavedModel s"]
    head += [f"TFLite {v} s" for v in variants] + ["TFLite fp32, 1 thread s"]
    head += ["SavedModel MB"] + [f"{v} MB" for v in variants] + ["export s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["preset"], r["size"], f"{r['generator_params'] / 1e6:.1f}M", f"{r['keras_s']:.3f}",
                 f"{r['saved_model_s']:.3f}"]
        cells += [f"{r.get(f'tflite_{v}_s', float('nan')):.3f}" for v in variants]
        cells += [f"{r.get('tflite_fp32_1thread_s', float('nan')):.3f}"]
        cells += [f"{r['saved_model_mb']:.1f}"] + [f"{r.get(f'tflite_{v}_mb', float('nan')):.1f}" for v in variants]
        cells += [f"{r['export_s']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
