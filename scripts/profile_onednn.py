#!/usr/bin/env python3
"""Where a generator forward's time goes in oneDNN, read from its verbose log (ONEDNN_VERBOSE=1).

Each case runs in its own process: the function ``spade-tf export`` saves (label map in, uint8
image out, plain forms), called 3 times to warm up, then once with oneDNN logging every
primitive it executes: its kind (convolution, reorder, gemm), implementation (``brg_conv_fwd:
..._amx`` is AMX) and milliseconds. The rest of the call's wall time is TensorFlow's own ops
(casts, the norms' elementwise work, resizes) and dispatch.

Cases: float32; bfloat16 reading the variables (the generator as Keras runs it under
``mixed_bfloat16``); bfloat16 frozen (what ``spade-tf export --precision bf16`` writes:
``spade_tf.frozen_graph``).

    .venv/bin/python scripts/profile_onednn.py --markdown docs/benchmarks/bf16_profile.md \\
        --json docs/benchmarks/bf16_profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"SPADE ade20k 256 px": ("ade20k", None),
          "light (the packaged model) 64 px": ("synthscapes_light", "pretrained")}
CASES = ("fp32", "bf16 with variables", "bf16 frozen")
MARK = "-- timed call --"


def worker(model: str, case: str) -> None:
    import time

    import numpy as np
    import tensorflow as tf

    from spade_tf.benchmarking import inputs_for, prepared_generator
    from spade_tf.config import load_config
    from spade_tf.export import GeneratorModule
    from spade_tf.perf import PLAIN, perf_scope
    from spade_tf.precision import FrozenGenerator, bf16_generator

    preset, checkpoint = MODELS[model]
    rng = np.random.default_rng(0)
    g32, config, _ = prepared_generator(load_config(preset), rng, checkpoint)
    g = {"fp32": lambda: g32, "bf16 with variables": lambda: bf16_generator(g32, config),
         "bf16 frozen": lambda: FrozenGenerator(bf16_generator(g32, config), PLAIN)}[case]()
    module = GeneratorModule(config, g)
    x = {k: tf.constant(v) for k, v in inputs_for(config, rng, 1)[0].items()}
    with perf_scope(g32 if case == "fp32" else getattr(g, "generator", g), PLAIN):
        fn = tf.function(lambda label, instance=None: module.synthesize(label, instance,
                                                                        validate=False))
        for _ in range(3):
            fn(**x).numpy()
    print(MARK, flush=True)
    t = time.perf_counter()
    fn(**x).numpy()
    print(f"wall_ms {1000 * (time.perf_counter() - t):.3f}", flush=True)


def parse(log: str) -> dict:
    """Milliseconds per (kind, implementation, data type) after the mark, and the wall time."""
    after = log.split(MARK, 1)[1]
    per = collections.defaultdict(lambda: [0, 0.0])
    wall = None
    for line in after.splitlines():
        if line.startswith("wall_ms"):
            wall = float(line.split()[1])
        if not line.startswith("onednn_verbose,") or ",exec," not in line:
            continue
        f = line.split(",")
        kind, impl = f[5], f[6] or "-"
        desc = f[8]
        dtype = (desc.split("_", 1)[1].split(":")[0] if kind == "gemm_api"
                 else desc.split(":")[1] if ":" in desc else "")
        key = f"{kind} | {impl} | {dtype}"
        per[key][0] += 1
        per[key][1] += float(f[-1])
    return {"wall_ms": wall, "primitives": {k: {"count": c, "ms": round(ms, 2)}
                                            for k, (c, ms) in sorted(per.items(),
                                                                     key=lambda kv: -kv[1][1])}}


def markdown(result) -> str:
    info = result["machine"]
    out = ["# bf16 forward: where oneDNN's time goes", "",
           f"{info['cpu']}, {info['cores']} cores, CPU bf16 flags: {result['bf16_flags']}; "
           f"TensorFlow {info['tensorflow']}; {info['date']}. One call (after 3 warm-ups) of "
           "the exported function, batch 1, plain forms; `ONEDNN_VERBOSE=1` timings (they add "
           "a little overhead of their own).", "",
           f"Reproduce: `.venv/bin/python {result['command']}`.", ""]
    for model, cases in result["models"].items():
        out += [f"## {model}", "", "| case | wall ms | oneDNN ms | convolutions ms | reorders ms "
                "| gemm (spectral norm's sigma) ms | other TensorFlow ops ms |",
                "|---|---|---|---|---|---|---|"]
        for case, r in cases.items():
            p = r["primitives"]
            total = sum(v["ms"] for v in p.values())
            conv = sum(v["ms"] for k, v in p.items() if k.startswith("convolution"))
            reorder = sum(v["ms"] for k, v in p.items() if k.startswith("reorder"))
            gemm = sum(v["ms"] for k, v in p.items() if k.startswith("gemm"))
            # oneDNN's times add up over ops that TensorFlow's executor ran side by side, so
            # they can exceed the wall time; then the rest cannot be told apart
            rest = f"{r['wall_ms'] - total:.1f}" if total <= r["wall_ms"] else "(ops overlapped)"
            out.append(f"| {case} | {r['wall_ms']:.1f} | {total:.1f} | {conv:.1f} | {reorder:.1f} "
                       f"| {gemm:.1f} | {rest} |")
        out += ["", "<details><summary>every primitive</summary>", "",
                "| case | kind / implementation / type | calls | ms |", "|---|---|---|---|"]
        for case, r in cases.items():
            for k, v in r["primitives"].items():
                out.append(f"| {case} | {k} | {v['count']} | {v['ms']} |")
        out += ["", "</details>", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", metavar="PATH")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    from spade_tf.benchmarking import command_line, machine_info, write_results
    from spade_tf.precision import cpu_flags

    models = {}
    for model in MODELS:
        models[model] = {}
        for case in CASES:
            r = subprocess.run([sys.executable, __file__, "--worker", model, case],
                               capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "ONEDNN_VERBOSE": "1",
                                    "TF_CPP_MIN_LOG_LEVEL": "2"})
            if r.returncode or MARK not in r.stdout:
                raise SystemExit(f"{model}, {case}: the worker failed:\n{r.stderr[-3000:]}")
            models[model][case] = parse(r.stdout)
            print(f"{model}, {case}: {models[model][case]['wall_ms']:.1f} ms", flush=True)
    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    result = {"machine": machine_info(), "bf16_flags": " ".join(flags) or "none",
              "command": command_line("scripts/profile_onednn.py", p, args), "models": models}
    write_results(result, markdown(result), args.json, args.markdown)


if __name__ == "__main__":
    main()
