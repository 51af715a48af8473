#!/usr/bin/env python3
"""The exported generator in float32 against bfloat16, on this machine: latency and PSNR.

For each model, the function ``spade-tf export`` saves (``GeneratorModule.synthesize``: label map
in, uint8 image out), traced with float32 arithmetic and with ``--precision bf16``'s
(``spade_tf.precision.bf16_generator``; reading the variables, and frozen as the export writes
it: ``spade_tf.precision.FrozenGenerator``), in the plain forms the SavedModel gets. Batch 1,
medians of ``--repeats`` runs, the three alternating run by run so that all see the same
machine. PSNR: bf16's image against float32's on the same maps (the packaged model: its validation maps; the others: blocky random maps).

    .venv/bin/python scripts/bench_precision.py --markdown docs/benchmarks/precision.md \\
        --json docs/benchmarks/precision.json
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spade_tf.benchmarking import (command_line, inputs_for, machine_info,  # noqa: E402
                                   prepared_generator, write_results)
from spade_tf.config import load_config  # noqa: E402
from spade_tf.export import GeneratorModule, psnr  # noqa: E402
from spade_tf.perf import PLAIN, perf_scope  # noqa: E402
from spade_tf.precision import (FrozenGenerator, bf16_generator, bf16_hardware,  # noqa: E402
                                cpu_flags)

MODELS = {  # name (no commas: --models splits on them) -> (preset, checkpoint)
    "light (synthscapes_light; the packaged model) 64 px": ("synthscapes_light", "pretrained"),
    "SPADE ade20k 256 px": ("ade20k", None),
    "CLADE mobile 256 px": ("mobile", None),
}


def maps_for(config, checkpoint, rng, n):
    if checkpoint:
        from spade_tf.data import build_dataset

        return [{k: v.numpy() for k, v in b.items() if k in ("label", "instance")}
                for b in build_dataset(config, "val", batch_size=1, training=False).take(n)]
    return inputs_for(config, rng, n)


def bench(name, repeats, log):
    preset, checkpoint = MODELS[name]
    rng = np.random.default_rng(0)
    g32, config, weights = prepared_generator(load_config(preset), rng, checkpoint)
    g16 = bf16_generator(g32, config)
    maps = maps_for(config, checkpoint, rng, 8)
    feeds = [{k: tf.constant(v) for k, v in x.items()} for x in maps]
    rows = []
    # the plain forms only: what the export traces (a bf16 SavedModel always; this machine's CPU
    # forms were measured slower in bf16: docs/performance.md)
    for forms, perf in (("plain (export's)", PLAIN),):
        fns, images = {}, {}
        for precision, g in (("fp32", g32), ("bf16", g16), ("bf16 frozen", FrozenGenerator(g16, perf))):
            module = GeneratorModule(config, g)
            with perf_scope(g16 if precision == "bf16 frozen" else g, perf):
                fn = tf.function(lambda label, instance=None, m=module: m.synthesize(
                    label, instance, validate=False), reduce_retracing=True)
                images[precision] = np.concatenate([fn(**f).numpy() for f in feeds])
            fns[precision] = fn
        times = {p: [] for p in fns}
        for i in range(repeats):  # alternating
            for precision in list(fns) if i % 2 == 0 else list(fns)[::-1]:
                t = time.perf_counter()
                fns[precision](**feeds[i % len(feeds)]).numpy()
                times[precision].append(time.perf_counter() - t)
        med = {p: float(np.median(t)) for p, t in times.items()}
        diff = np.abs(images["bf16 frozen"].astype(np.int32) - images["fp32"].astype(np.int32))
        row = {"model": name, "forms": forms, "weights": weights,
               "fp32_s": round(med["fp32"], 4), "bf16_variables_s": round(med["bf16"], 4),
               "bf16_s": round(med["bf16 frozen"], 4),
               "speedup": round(med["fp32"] / med["bf16 frozen"], 2),
               "psnr_db": round(psnr(images["bf16 frozen"], images["fp32"]), 2),
               "max_levels": int(diff.max()), "mean_levels": round(float(diff.mean()), 3),
               "maps": len(maps), "times_s": {p: [round(x, 4) for x in t] for p, t in times.items()}}
        log(f"{name}, {forms}: fp32 {row['fp32_s']} s, bf16 {row['bf16_variables_s']} s, "
            f"bf16 frozen {row['bf16_s']} s ({row['speedup']}x), {row['psnr_db']} dB")
        rows.append(row)
    return rows


def markdown(result) -> str:
    info = result["machine"]
    out = [f"machine: {info['cpu']}, {info['isa']}, {info['cores']} cores; bf16 flags: "
           f"{result['bf16_flags']} ({result['bf16_hardware']}); TensorFlow {info['tensorflow']}; "
           f"{info['date']}; batch 1, medians of {result['repeats']} runs per precision, "
           f"alternating.", "",
           f"Reproduce: `.venv/bin/python {result['command']}`.", "",
           "bf16 frozen: what `spade-tf export --precision bf16` writes (weights as graph "
           "constants, weight-only results folded: `spade_tf.frozen_graph`); bf16 with "
           "variables: the same arithmetic reading the float32 variables at every call. "
           "Speed-up and PSNR: bf16 frozen against fp32.", "",
           "| model | forms | fp32 s | bf16 with variables s | bf16 frozen s | bf16 speed-up "
           "| bf16 vs fp32 PSNR dB | max levels | weights |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        out.append(f"| {r['model']} | {r['forms']} | {r['fp32_s']} | {r['bf16_variables_s']} | "
                   f"{r['bf16_s']} | **{r['speedup']}x** | {r['psnr_db']} | {r['max_levels']} | "
                   f"{r['weights']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated model names (default: all)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per precision (median)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", metavar="PATH")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += bench(name, args.repeats, log=lambda m: print(m, flush=True))
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    result = {"machine": machine_info(), "repeats": args.repeats, "rows": rows,
              "bf16_flags": " ".join(flags) or "none", "bf16_hardware": bf16_hardware().what,
              "command": command_line("scripts/bench_precision.py", p, args)}
    write_results(result, markdown(result), args.json, args.markdown)


if __name__ == "__main__":
    main()
