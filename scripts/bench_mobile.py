#!/usr/bin/env python3
"""Mobile benchmark: SPADE against CLADE generators as TFLite files, on LiteRT.

Per model (SPADE ade20k 256, CLADE ngf 64 / 32 / 16 at 256 with ade20k's 151 label channels,
the light synthscapes preset) and per TFLite variant (fp32, fp16, dynamic int8, full int8; 16x8
where the converter offers it): parameters, multiply-adds, file size, LiteRT latency on 1 and 2
threads (medians after a warm-up, all in this one run), PSNR against the model's fp32 file, and
the speed-up over SPADE ade20k fp32 on 1 thread.

No ade20k-sized model can be trained here, so the 256 px models have their initial weights with
their batch-norm statistics run in on blocky random label maps (as the parity fixtures did),
and CLADE's class tables drawn wider (gamma U[0.5, 2), beta N(0, 0.5^2); their own init, gamma
U[0, 1) and beta 0, shrinks every block to near-zero outputs): their PSNR shows the quantization
of the architecture, not of a trained model. With --light-checkpoint, the light preset row uses
that trained run instead (the one trained model here). Calibration: 8 blocky random label maps;
PSNR: 4 others.

    .venv/bin/python scripts/bench_mobile.py --markdown docs/benchmarks/mobile.md \\
        [--light-checkpoint runs/light] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from spade_tf.benchmarking import (command_line, inputs_for, machine_info,  # noqa: E402
                                   median_seconds, prepared_generator, write_results)
from spade_tf.config import Toggle, load_config  # noqa: E402
from spade_tf.export import (GPU_TFLITE_PERF, GeneratorModule, TFLiteRunner,  # noqa: E402
                             _tflite_function, convert_tflite, psnr)
from spade_tf.flops import graph_multiply_adds  # noqa: E402
from spade_tf.perf import PLAIN, perf_scope  # noqa: E402
from spade_tf.tflite_compat import delegate_summary  # noqa: E402

MODELS = {  # name -> (preset, overrides)
    "SPADE ade20k": ("ade20k", []),
    "CLADE ngf 64": ("mobile", ["model.base_filters=64"]),
    "CLADE ngf 32 (mobile)": ("mobile", []),
    "CLADE ngf 16": ("mobile", ["model.base_filters=16"]),
    "CLADE light synthscapes": ("synthscapes_light", []),
}
# "fp16 gpu": fp16 from the GPU delegate's graph (what spade-tf export writes as fp16); the
# others from the CPU graph, "fp16" included, so that both graphs are timed on XNNPACK
VARIANTS = ["fp32", "fp16", "fp16 gpu", "dynamic_int8", "int8", "16x8"]
TFLITE_PERF = dataclasses.replace(PLAIN, label_conv="gather", affine_inference_norm=Toggle.ON)


def convert_16x8(saved_model_dir, representative):
    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                    signature_keys=["serving_default"])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return conv.convert()


def bench_model(name, repeats, light_checkpoint=None, log=print):
    preset, overrides = MODELS[name]
    rng = np.random.default_rng(0)
    config = load_config(preset, overrides)
    g, config, weights = prepared_generator(
        config, rng, light_checkpoint if preset == "synthscapes_light" else None)
    h, w = config.model.output_hw
    with perf_scope(g, PLAIN):
        fn = tf.function(lambda s: g(s, training=False))
        macs = sum(graph_multiply_adds(fn.get_concrete_function(
            tf.TensorSpec((1, h, w, config.model.semantic_channels))), used_only=True).values())
    calib, test = inputs_for(config, rng, 8), inputs_for(config, rng, 4)
    module = GeneratorModule(config, g)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp_gpu:
        with perf_scope(g, TFLITE_PERF):
            tf.saved_model.save(module, tmp, signatures={"serving_default": _tflite_function(module)})
        with perf_scope(g, GPU_TFLITE_PERF):
            tf.saved_model.save(module, tmp_gpu, signatures={
                "serving_default": _tflite_function(module, "gpu")})

        def rep():
            for x in calib:
                yield dict(x)

        feed = {k: np.concatenate([x[k] for x in test]) for k in test[0]}
        one = {k: v[:1] for k, v in feed.items()}
        fp32_out = None
        for variant in VARIANTS:
            row = {"model": name, "variant": variant, "size": f"{h}x{w}", "weights": weights,
                   "params": g.count_params(), "macs": macs}
            t0 = time.time()
            try:
                blob = (convert_16x8(tmp, rep) if variant == "16x8"
                        else convert_tflite(tmp_gpu, "fp16") if variant == "fp16 gpu"
                        else convert_tflite(tmp, variant, rep if variant == "int8" else None))
            except Exception as e:  # noqa: BLE001 - reported in the table
                row["not_offered"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
                rows.append(row)
                log(f"{name} {variant}: not offered ({row['not_offered']})")
                continue
            row["convert_s"] = round(time.time() - t0, 1)
            row["bytes"] = len(blob)
            row.update({k: v for k, v in delegate_summary(blob).items() if k != "gpu_rules"})
            out = TFLiteRunner(blob)(**feed)
            if variant == "fp32":
                fp32_out = out
            else:
                row["psnr_db"] = round(float(psnr(out, fp32_out)), 2)
            for threads in (1, 2):
                runner = TFLiteRunner(blob, num_threads=threads)
                row[f"latency_{threads}t_s"] = median_seconds(lambda: runner.runner(**one),
                                                              repeats)[0]
            rows.append(row)
            log(f"{name} {variant}: {row['bytes'] / 1e6:.1f} MB, "
                f"{row['latency_1t_s']:.3f} s (1 thread), {row['latency_2t_s']:.3f} s (2), "
                f"PSNR {row.get('psnr_db', '-')}")
    return rows


def markdown(result) -> str:
    info, rows = result["machine"], result["rows"]
    base = next((r["latency_1t_s"] for r in rows
                 if r["model"] == "SPADE ade20k" and r["variant"] == "fp32" and "latency_1t_s" in r),
                None)
    out = [f"machine: {info['cpu']}, {info['isa']}, {info['cores']} cores; TensorFlow "
           f"{info['tensorflow']}; LiteRT (ai-edge-litert, XNNPACK); {info['date']}; batch 1, "
           f"medians of {result['repeats']} after a warm-up", "",
           f"Reproduce: `.venv/bin/python {result['command']}`" + (
               " (`pretrained`: the packaged model)." if "pretrained" in result["command"]
               else "."), "",
           "`fp16 gpu` is the fp16 file `spade-tf export` writes, traced from the GPU delegate's "
           "graph; `fp16` the same weights from the CPU graph. GPU ops: the ops within the GPU "
           "delegate's rules (`spade-tf inspect`); XNNPACK ops: the ops XNNPACK took here.", "",
           "| model | size | params | multiply-adds | variant | file MB | 1 thread s | 2 threads s | "
           "PSNR vs fp32 dB | speed-up vs SPADE fp32, 1 thread | GPU ops | XNNPACK ops | weights |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "not_offered" in r:
            out.append(f"| {r['model']} | {r['size']} | {r['params'] / 1e6:.2f} M | "
                       f"{r['macs'] / 1e9:.2f} G | {r['variant']} | not offered: "
                       f"{r['not_offered']} | | | | | | | |")
            continue
        speed = f"{base / r['latency_1t_s']:.1f}x" if base else ""
        out.append(f"| {r['model']} | {r['size']} | {r['params'] / 1e6:.2f} M | "
                   f"{r['macs'] / 1e9:.2f} G | {r['variant']} | {r['bytes'] / 1e6:.1f} | "
                   f"{r['latency_1t_s']:.3f} | {r['latency_2t_s']:.3f} | "
                   f"{r.get('psnr_db', '(reference)')} | {speed} | "
                   f"{r['gpu_delegate_ops']}/{r['ops']} | {r['xnnpack_ops']}/{r['ops']} | "
                   f"{r['weights']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per latency (median)")
    p.add_argument("--light-checkpoint", metavar="RUN",
                   help="a trained synthscapes_light run for the light row ('pretrained': the "
                        "packaged model)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", metavar="PATH")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, args.repeats, args.light_checkpoint,
                            log=lambda m: print(m, flush=True))
    result = {"machine": machine_info(), "repeats": args.repeats, "rows": rows,
              "command": command_line("scripts/bench_mobile.py", p, args)}
    write_results(result, markdown(result), args.json, args.markdown)


if __name__ == "__main__":
    main()
