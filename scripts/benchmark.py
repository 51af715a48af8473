#!/usr/bin/env python3
"""Benchmark suite: generator forward, training iteration, data pipeline, TFLite, matmul rate.

Every measurement runs in its own process (peak RSS is per process), on constant random inputs:
every pixel's class drawn at random, so every pixel sits on a label boundary, the worst case for
perf.uniform_regions, whose cost depends on the label map. The variants "..., real label maps"
run on the COCO-Stuff sample's 21 label maps in ../shared instead (center-cropped, nearest-
resized to the preset, class ids folded into its range: real boundaries, not real classes), one
map per timed run, cycling (the forward: all 21; training: 7). Timings are medians of
--repeats runs after one warm-up run (real label maps: of one run per map).

    .venv/bin/python scripts/benchmark.py [--only matmul,forward,train,data,tflite]
        [--repeats 3] [--json docs/benchmarks/performance.json] [--markdown out.md]

"plain" runs the reference's form of every layer (perf.label_conv=dense, no fusion or
sharing, Conv2DBackpropFilter); "optimised" is the default perf section. Effective GFLOP/s
are 2 x the plain form's multiply-adds (counted from the traced graph's convs and matmuls)
per second, whichever form ran, so the two are comparable with each other and with the
official code's 362 GFLOP per ade20k image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spade_tf.benchmarking import (current_rss_gb, machine_info, median_seconds, peak_rss_gb,
                                   peak_since_reset_gb, reset_peak)
from spade_tf.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADE_TF_SHARED", ROOT.parent / "shared"))

# name -> (preset, overrides)
PRESETS = {
    "tiny": ("tiny", []),
    # the 128 px rows: 151 label channels (ade20k's 150 classes + dontcare), ngf/ndf 32
    "128px": ("ade20k", ["model.crop_size=128", "model.base_filters=32", "model.disc_filters=32"]),
    "ade20k": ("ade20k", []),
    "cityscapes": ("cityscapes", []),
    "coco_stuff": ("coco_stuff", []),
    # CLADE: configs/mobile.yaml (ade20k-sized, 151 label channels, ngf 32) and the light
    # synthscapes preset (few classes) that the mobile benchmark trains
    "mobile": ("mobile", []),
    "synthscapes_light": ("synthscapes_light", []),
}
PLAIN = ["perf.label_conv=dense", "perf.fuse_gamma_beta=false",
         "perf.share_label_features=false", "perf.filter_gradient=native",
         "perf.closed_form_gradients=false", "perf.split_discriminator_input=false",
         "perf.sequential_inference=false", "perf.uniform_regions=false"]
# variant -> overrides of the default (optimised) perf section; the leave-one-out variants show
# what each optimisation contributes (training: TRAIN_ABLATION, generator forward: FORWARD_ABLATION).
VARIANTS = {
    "optimised": [],
    "plain": PLAIN,
    "no lookups": ["perf.label_conv=dense"],
    "no gamma/beta fusion": ["perf.fuse_gamma_beta=false"],
    "no shared label features": ["perf.share_label_features=false"],
    "native conv gradients": ["perf.filter_gradient=native"],
    # perf.filter_gradient=auto is native with oneDNN and swapped without: one of these two rows
    # is the default's form
    "swapped conv gradients": ["perf.filter_gradient=swapped"],
    "autodiff norm gradients": ["perf.closed_form_gradients=false"],
    "D input gradient for all channels": ["perf.split_discriminator_input=false"],
    "parallel inference": ["perf.sequential_inference=false"],
    "no uniform regions": ["perf.uniform_regions=false"],
    "optimised, real label maps": [],
    "no uniform regions, real label maps": ["perf.uniform_regions=false"],
    "low-memory allocator, real label maps": [],
    # the default config in a process that returns freed memory at once (spade-tf --low-memory,
    # spade_tf.memory.release_freed_memory): lower peak RSS, more page faults
    "low-memory allocator": [],
    # the default config in a process that unmaps TensorFlow's import-time library pages
    # (spade-tf --release-library-pages, opt-in): the peak RSS without them; no other variant
    # does, as no user's process does by default
    "library pages released": [],
    # the default config with TensorFlow's oneDNN kernels off (TF_ENABLE_ONEDNN_OPTS=0 in the
    # worker's environment): TensorFlow turns them on by default on some CPUs (AVX-512 ones)
    "oneDNN off": [],
    # CLADE's tables read by a 1x1 conv of the one-hot map instead of argmax + gathers
    "CLADE lookups as a 1x1 conv": ["perf.clade_lookup=onehot_conv"],
}
LOW_MEMORY = "low-memory allocator"
PAGES_RELEASED = "library pages released"
ONEDNN_OFF = "oneDNN off"
# inference-mode variants of the batch-1 forward: the only option that acts in inference mode
# alone, and the allocator setting
REAL = [v for v in VARIANTS if v.endswith("real label maps")]
CLADE = ["CLADE lookups as a 1x1 conv"]  # run for the --clade configs
FORWARD_ABLATION = ["parallel inference", LOW_MEMORY, PAGES_RELEASED, "no uniform regions",
                    ONEDNN_OFF]
TRAIN_ABLATION = [v for v in VARIANTS
                  if v not in ["optimised", "plain", "parallel inference"] + REAL + CLADE]
REAL_TRAIN_MAPS = 7  # training runs on real label maps: every third of the 21
# Official NVlabs/SPADE on this machine kind (torch 2.13, 2 threads, batch 1, medians; issue 7).
OFFICIAL = {
    ("forward", "ade20k"): 4.49, ("forward", "128px"): 0.61,
    ("train", "ade20k"): 18.5, ("train", "128px"): 2.07,
    ("peak_train", "ade20k"): 3.72, ("peak_forward", "ade20k"): 1.30,
}
TARGETS = {("forward", "ade20k"): 3.0, ("train", "ade20k"): 13.0}


def _process_memory(variant):
    """The process's memory settings, after the imports and before anything is built (the
    CLI's defaults unless the variant says otherwise: spade-tf --low-memory,
    --release-library-pages). Returns the RSS right after the framework's import (GB), the
    baseline of the model's own memory."""
    import keras  # noqa: F401  (the framework's import, whatever the worker imports next)
    import tensorflow  # noqa: F401

    from spade_tf.memory import release_freed_memory, release_library_pages

    import_rss = current_rss_gb()
    if variant.startswith(LOW_MEMORY) and not release_freed_memory():
        raise RuntimeError("the low-memory allocator setting needs glibc")
    if variant == PAGES_RELEASED:
        release_library_pages()
    return import_rss


def _inputs(config, batch):
    import numpy as np

    m = config.model
    h, w = m.output_hw
    rng = np.random.default_rng(0)
    out = {"label": rng.integers(0, m.num_classes, (batch, h, w)).astype(np.int32),
           "image": rng.uniform(-1, 1, (batch, h, w, 3)).astype(np.float32)}
    if m.use_instance:
        out["instance"] = rng.integers(0, 5, (batch, h, w)).astype(np.int32)
    return out


def _real_inputs(config, batch, maps=None):
    """[input dict of ``batch`` maps], cycling through the COCO-Stuff sample's label (and
    instance) maps: center-cropped to the preset's aspect ratio, nearest-resized to its size,
    ids other than 255 folded into [0, num_classes), 255 kept as dontcare where the preset has
    it. ``maps``: use every len/maps-th file only."""
    import numpy as np
    from PIL import Image

    m = config.model
    h, w = m.output_hw
    root = SHARED / "data" / "coco_stuff_sample"
    files = sorted(root.glob("*_label/*.png"))
    if not files:
        raise FileNotFoundError(f"no label maps under {root}: the real-label variants need the "
                                f"COCO-Stuff sample (set SPADE_TF_SHARED)")
    if maps:
        files = files[::max(1, len(files) // maps)][:maps]

    def load(path, ids):
        im = Image.open(path)
        iw, ih = im.size
        cw, ch = (iw, round(iw * h / w)) if iw * h / w <= ih else (round(ih * w / h), ih)
        left, top = (iw - cw) // 2, (ih - ch) // 2
        im = im.crop((left, top, left + cw, top + ch)).resize((w, h), Image.NEAREST)
        a = np.asarray(im).astype(np.int32)
        if not ids:
            return a
        keep = (a == 255) if m.contain_dontcare else np.zeros_like(a, bool)
        return np.where(keep, 255, a % m.num_classes)

    rng = np.random.default_rng(0)
    labels = [load(f, True) for f in files]
    insts = [load(f.parent.parent / f.parent.name.replace("label", "inst") / f.name, False)
             for f in files] if m.use_instance else None
    out = []
    for i in range(0, len(files) - batch + 1, batch):
        x = {"label": np.stack(labels[i:i + batch]),
             "image": rng.uniform(-1, 1, (batch, h, w, 3)).astype(np.float32)}
        if insts is not None:
            x["instance"] = np.stack(insts[i:i + batch])
        out.append(x)
    return out


def _boundary_fraction(config, seg):
    """The fraction of pixels near a label boundary at full resolution (perf.uniform_regions'
    ``label_regions``)."""
    from spade_tf.kernels.onehot_conv import onehot_indices
    from spade_tf.kernels.regions import label_regions

    n = config.model.num_label_channels
    r = label_regions(onehot_indices(seg[..., :n]), seg[..., n:], config.model.spade_kernel_size)
    return int(r.boundary.shape[0]) / int(r.indices.shape.num_elements())


def worker_matmul(repeats):
    import numpy as np
    import tensorflow as tf

    n = 4096
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    t_np, _ = median_seconds(lambda: a @ a, repeats + 2)
    ta = tf.constant(a)
    mm = tf.function(lambda x: tf.linalg.matmul(x, x))
    t_tf, _ = median_seconds(lambda: mm(ta).numpy(), repeats + 2)
    flop = 2 * n**3
    return {"numpy_gflops": flop / t_np / 1e9, "tf_gflops": flop / t_tf / 1e9, "n": n}


def _plain_generator_macs(config, batch):
    import tensorflow as tf

    from spade_tf.config import apply_overrides
    from spade_tf.flops import graph_multiply_adds
    from spade_tf.networks import build_networks

    plain = apply_overrides(config, PLAIN)
    g = build_networks(plain, discriminator=False, encoder=False).generator
    h, w = config.model.output_hw
    spec = tf.TensorSpec((batch, h, w, config.model.semantic_channels))
    fn = tf.function(lambda s: g(s, training=False))
    return sum(graph_multiply_adds(fn.get_concrete_function(spec)).values())


def worker_forward(name, variant, batch, repeats):
    import tensorflow as tf

    from spade_tf.config import load_config
    from spade_tf.networks import build_networks
    from spade_tf.semantics import to_semantics

    import_rss = _process_memory(variant)
    preset, overrides = PRESETS[name]
    config = load_config(preset, overrides + VARIANTS[variant])
    nets = build_networks(config, discriminator=False, encoder=False)
    g = nets.generator
    xs = _real_inputs(config, batch) if variant in REAL else [_inputs(config, batch)]
    # one map's one-hot input is live at a time (21 of ade20k's are 0.8 GB)
    segs = [(lambda x=x: to_semantics(x["label"], x.get("instance"), config=config)) for x in xs]
    z = tf.random.normal((batch, config.model.z_dim)) if config.model.use_vae else None
    fn = tf.function(lambda s: g(s, z=z, training=False))
    t0 = time.perf_counter()
    fn(segs[0]()).numpy()
    trace_s = time.perf_counter() - t0
    peak_with_trace = peak_rss_gb()
    steady = reset_peak()
    med, times = median_seconds(lambda s: fn(s).numpy(), len(segs) if variant in REAL else repeats,
                           segs if variant in REAL else [segs[0]()])
    peak = max(peak_rss_gb(), peak_with_trace)
    steady_peak = peak_since_reset_gb() if steady else None
    macs = _plain_generator_macs(config, batch)  # after the peak was read: its own model
    return {"kind": "forward", "name": name, "variant": variant, "batch": batch,
            "size": "x".join(map(str, config.model.output_hw)), "G_params": g.count_params(),
            "first_call_s": trace_s, "median_s": med, "times_s": times,
            "images_per_s": batch / med, "plain_macs": macs,
            "effective_gflops": 2 * macs / med / 1e9, "peak_rss_gb": peak,
            "import_rss_gb": import_rss, "model_memory_gb": peak - import_rss,
            "steady_peak_rss_gb": steady_peak, "label_maps": len(segs),
            "boundary_fraction": statistics.median(_boundary_fraction(config, s()) for s in segs)}


def worker_train(name, variant, repeats):
    import tensorflow as tf

    from spade_tf.config import load_config
    from spade_tf.gan import GauGAN

    import_rss = _process_memory(variant)
    preset, overrides = PRESETS[name]
    config = load_config(preset, overrides + ["train.batch_size=1"] + VARIANTS[variant])
    xs = _real_inputs(config, 1, REAL_TRAIN_MAPS) if variant in REAL else [_inputs(config, 1)]
    batches = [{k: tf.constant(v) for k, v in x.items()} for x in xs]
    gan = GauGAN(config, vgg_loss=None)
    gan.compile()
    step = tf.function(gan.train_step)
    t0 = time.perf_counter()
    step(batches[0])["GAN"].numpy()
    trace_s = time.perf_counter() - t0
    steady = reset_peak()
    med, times = median_seconds(lambda b: step(b)["GAN"].numpy(),
                           len(batches) if variant in REAL else repeats, batches)
    steady_peak = peak_since_reset_gb() if steady else None
    counts = gan.networks.param_counts()
    return {"kind": "train", "name": name, "variant": variant, "batch": 1,
            "size": "x".join(map(str, config.model.output_hw)), "G_params": counts["generator"],
            "D_params": counts["discriminator"], "first_step_s": trace_s, "median_s": med,
            "times_s": times, "images_per_s": 1 / med, "peak_rss_gb": peak_rss_gb(),
            "import_rss_gb": import_rss, "model_memory_gb": peak_rss_gb() - import_rss,
            "steady_peak_rss_gb": steady_peak, "label_maps": len(batches)}


def worker_import(framework, repeats):
    """RSS right after importing ``framework`` (tensorflow + keras, or torch), in a fresh
    process: the baseline that the model's own memory is counted from. For the official code
    (torch) this is the part of its quoted peak that is not its model's."""
    del repeats
    if framework == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            return {"kind": "import", "name": framework, "skipped": "torch is not installed"}
    else:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    return {"kind": "import", "name": framework, "rss_gb": current_rss_gb()}


def worker_data(name, repeats):
    from spade_tf.config import load_config
    from spade_tf.data.pipeline import build_dataset

    if name == "coco_stuff_sample":
        root = SHARED / "data" / "coco_stuff_sample"
        if not root.is_dir():
            return {"kind": "data", "name": name, "skipped": f"{root} is absent"}
        config = load_config("coco_stuff", [f"data.root={root}"])
    else:
        config = load_config("synthscapes")
    ds = build_dataset(config, "train", batch_size=1, repeat=True).prefetch(4)
    it = iter(ds)
    n = 64
    for _ in range(8):  # warm-up
        next(it)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            next(it)
        rates.append(n / (time.perf_counter() - t))
    return {"kind": "data", "name": name, "size": "x".join(map(str, config.model.output_hw)),
            "pairs_per_s": statistics.median(rates), "rates": rates}


def run_worker(args_list, repeats, timeout=3000):
    cmd = [sys.executable, __file__, "--worker", json.dumps(args_list), "--repeats", str(repeats)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if len(args_list) > 2 and args_list[2] == ONEDNN_OFF:
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        return {"kind": args_list[0], "args": args_list, "failed": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gb(x):
    return "" if x is None else f"{x:.2f}"


def markdown(results) -> str:
    info, rows = results["machine"], results["rows"]
    isa = f", {info['isa']}" if "isa" in info else ""
    out = [f"machine: {info['cpu']}{isa}, {info['cores']} cores ({info['machine']}); python {info['python']}, "
           f"TensorFlow {info['tensorflow']}, Keras {info['keras']}; oneDNN {info['onednn']}; "
           f"{info['date']}; medians of {results['repeats']} runs after a warm-up", ""]
    for m in results.get("merged", []):
        out += [f"Rerun on {m['date']} and merged into this run's results (same machine "
                f"kind): {', '.join(' '.join(map(str, j)) for j in m['jobs'])}.", ""]
    mm = next((r for r in rows if r.get("kind") == "matmul" and "failed" not in r), None)
    if mm:
        out += [f"Dense fp32 matmul {mm['n']}x{mm['n']}, same run: numpy (OpenBLAS) "
                f"{mm['numpy_gflops']:.0f} GFLOP/s, TensorFlow {mm['tf_gflops']:.0f} GFLOP/s "
                f"(the issue quotes about 167 GFLOP/s for torch on this machine kind).", ""]
    ref_rate = mm["numpy_gflops"] if mm else None

    def official(kind, name):
        return OFFICIAL.get((kind, name))

    def speedup(off, t):
        return f"{off / t:.2f}x" if off else ""

    fw = [r for r in rows if r.get("kind") == "forward" and "failed" not in r]
    if fw:
        out += ["### Generator forward (inference mode)", "",
                "| config | size | variant | batch | G params | s / call | images/s | effective GFLOP/s | "
                "vs numpy matmul | peak RSS GB | model's own GB | steady peak GB | official s | "
                "speed-up |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in fw:
            off = official("forward", r["name"]) if r["batch"] == 1 else None
            ratio = f"{r['effective_gflops'] / ref_rate:.2f}" if ref_rate else ""
            out.append(f"| {r['name']} | {r['size']} | {_variant_cell(r)} | {r['batch']} | "
                       f"{r['G_params'] / 1e6:.1f}M | {r['median_s']:.3f} | {r['images_per_s']:.2f} | "
                       f"{r['effective_gflops']:.0f} | {ratio} | {r['peak_rss_gb']:.2f} | "
                       f"{_gb(r.get('model_memory_gb'))} | {_gb(r.get('steady_peak_rss_gb'))} | "
                       f"{off if off else ''} | {speedup(off, r['median_s'])} |")
        out.append("")
    tr = [r for r in rows if r.get("kind") == "train" and "failed" not in r]
    if tr:
        out += ["### Training iteration (G step + D step, no VGG, batch 1)", "",
                "| config | size | variant | G params | D params | first step (trace) s | s / iteration | "
                "images/s | peak RSS GB | model's own GB | steady peak GB | official s | speed-up |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in tr:
            off = official("train", r["name"])
            out.append(f"| {r['name']} | {r['size']} | {_variant_cell(r)} | {r['G_params']:,} | {r['D_params']:,} | "
                       f"{r['first_step_s']:.1f} | {r['median_s']:.2f} | {r['images_per_s']:.3f} | "
                       f"{r['peak_rss_gb']:.2f} | {_gb(r.get('model_memory_gb'))} | "
                       f"{_gb(r.get('steady_peak_rss_gb'))} | "
                       f"{off if off else ''} | {speedup(off, r['median_s'])} |")
        out.append("")
    imports = {r["name"]: r for r in rows if r.get("kind") == "import"}
    if imports:
        out += ["### Memory: the process and the model", "",
                "Peak RSS is the process as a user runs it (nothing unmapped). The model's own "
                "memory is that peak minus the RSS right after the framework's import, measured "
                "in the same worker process.", ""]
        tf_rss = imports.get("tensorflow", {}).get("rss_gb")
        torch = imports.get("torch", {})
        if tf_rss is not None:
            out.append(f"- RSS right after `import tensorflow, keras` (a fresh process): {tf_rss:.2f} GB")
        if "rss_gb" in torch:
            t = torch["rss_gb"]
            est = "; ".join(f"{what} {OFFICIAL[(key, 'ade20k')]:.2f} - {t:.2f} = "
                            f"{OFFICIAL[(key, 'ade20k')] - t:.2f} GB"
                            for what, key in (("inference", "peak_forward"),
                                              ("training", "peak_train")))
            out.append(f"- RSS right after `import torch` (a fresh process): {t:.2f} GB. The "
                       f"official code was not run here: its quoted ade20k peaks minus this give "
                       f"its model's own memory as an estimate: {est}")
        else:
            out.append(f"- official code's import baseline: {torch.get('skipped', 'not measured')}")
        out.append("")
    da = [r for r in rows if r.get("kind") == "data"]
    if da:
        out += ["### Data pipeline (decode, resize, crop, flip, one example per batch)", "",
                "| source | size | pairs/s |", "|---|---|---|"]
        for r in da:
            rate = f"{r['pairs_per_s']:.1f}" if "pairs_per_s" in r else r.get("skipped", "failed")
            out.append(f"| {r['name']} | {r.get('size', '')} | {rate} |")
        out.append("")
    tl = [r for r in rows if r.get("kind") == "tflite_export" and "failed" not in r]
    for r in tl:
        out += ["### Export: Keras vs SavedModel vs TFLite (batch 1)", ""]
        for p in r["rows"]:
            cells = [f"{k.replace('tflite_', 'TFLite ').replace('_s', '')} {v:.3f} s"
                     for k, v in p.items() if k.endswith("_s") and not k.startswith("export")
                     and isinstance(v, float)]
            threads = f"; TFLite on {p['tflite_threads']} threads" if "tflite_threads" in p else ""
            out.append(f"- {p['preset']} ({p['size']}{threads}): " + ", ".join(cells))
        out.append("")
    fails = [r for r in rows if "failed" in r]
    for r in fails:
        out.append(f"- FAILED {r.get('args')}: {r['failed'][-300:]}")
    return "\n".join(out) + "\n"


def _variant_cell(r):
    n = r.get("label_maps", 1)
    if n <= 1:
        return r["variant"]
    frac = r.get("boundary_fraction")
    near = f", median {frac:.0%} of pixels near a boundary" if frac is not None else ""
    return f"{r['variant']} ({n} maps{near})"


def _row_key(r):
    return (r.get("kind"), r.get("name"), r.get("variant"), r.get("batch"))


def _merged(earlier, new, jobs):
    """``earlier`` with ``new``'s rows in place of (or after) the rows they measure again."""
    fresh = {_row_key(r): r for r in new["rows"]}
    rows = [fresh.pop(_row_key(r), r) for r in earlier["rows"]] + list(fresh.values())
    merged = earlier.get("merged", []) + [{"date": new["machine"]["date"], "jobs": jobs,
                                           "machine": new["machine"]}]
    return dict(earlier, rows=rows, merged=merged, official=new["official"],
                targets=new["targets"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="matmul,forward,train,data,tflite",
                   help="comma-separated parts to run (default: all)")
    p.add_argument("--forward", default="tiny,128px,ade20k,cityscapes,coco_stuff",
                   help="configs for the forward benchmark")
    p.add_argument("--batches", default="1,8", help="forward batch sizes")
    p.add_argument("--train", default="tiny,128px,ade20k", help="configs for the training benchmark")
    p.add_argument("--plain", default="ade20k,128px",
                   help="configs also measured in the plain (reference) form")
    p.add_argument("--ablation", default="ade20k",
                   help="configs whose training iteration (and batch-1 forward, for the "
                        "inference-only options) is also measured with each optimisation "
                        "turned off in turn")
    p.add_argument("--real", default="ade20k,128px",
                   help="configs also measured on real label maps (the optimised form, with "
                        "and without perf.uniform_regions)")
    p.add_argument("--clade", default="mobile,synthscapes_light",
                   help="CLADE configs measured in both forms of perf.clade_lookup (argmax + "
                        "gathers, the default, and a 1x1 conv of the one-hot map), forward at "
                        "every batch size and training")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--json", metavar="PATH", help="write every result as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the tables as markdown")
    p.add_argument("--merge-into", metavar="JSON",
                   help="an earlier run's JSON: run only the selected measurements and replace "
                        "(or add) their rows there; the merge is recorded in the output")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, *rest = json.loads(args.worker)
        fn = {"matmul": worker_matmul, "forward": worker_forward, "train": worker_train,
              "data": worker_data, "import": worker_import}[kind]
        print(json.dumps(fn(*rest, args.repeats) if kind != "matmul" else fn(args.repeats)))
        return

    from spade_tf.progress import progress

    parts = set(args.only.split(","))
    plain = set(filter(None, args.plain.split(",")))
    ablation = set(filter(None, args.ablation.split(",")))
    real = set(filter(None, args.real.split(",")))
    clade = list(filter(None, args.clade.split(",")))
    jobs = []
    if "matmul" in parts:
        jobs.append(["matmul"])
    if parts & {"forward", "train"}:  # the baselines of the model's own memory
        jobs += [["import", "tensorflow"], ["import", "torch"]]
    if "forward" in parts:
        for name in filter(None, args.forward.split(",")):
            for b in (int(x) for x in args.batches.split(",")):
                jobs.append(["forward", name, "optimised", b])
                if name in plain and b == 1:
                    jobs.append(["forward", name, "plain", b])
                if name in ablation and b == 1:
                    jobs += [["forward", name, v, b] for v in FORWARD_ABLATION]
                if name in real:
                    jobs += [["forward", name, v, b] for v in REAL]
        for name in clade:
            for b in (int(x) for x in args.batches.split(",")):
                jobs += [["forward", name, v, b] for v in ["optimised"] + CLADE]
    if "train" in parts:
        for name in filter(None, args.train.split(",")):
            jobs.append(["train", name, "optimised"])
            if name in plain:
                jobs.append(["train", name, "plain"])
            if name in ablation:
                jobs += [["train", name, v] for v in TRAIN_ABLATION]
            if name in real:
                jobs += [["train", name, v] for v in REAL]
        for name in clade:
            jobs += [["train", name, v] for v in ["optimised"] + CLADE]
    if "data" in parts:
        jobs += [["data", "synthscapes"], ["data", "coco_stuff_sample"]]
    rows = []
    bar = progress(jobs + ([["tflite"]] if "tflite" in parts else []), desc="benchmark", unit="run")
    for job in bar:
        bar.set_postfix_str(" ".join(map(str, job)))
        if job[0] == "tflite":
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "export.json"
                proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_export.py"),
                                       "--presets", "tiny", "ade20k", "--repeats", str(args.repeats),
                                       "--json", str(out)], capture_output=True, text=True)
                rows.append({"kind": "tflite_export", "rows": json.loads(out.read_text())}
                            if proc.returncode == 0 else
                            {"kind": "tflite_export", "args": job, "failed": proc.stderr[-1500:]})
            continue
        rows.append(dict(run_worker(job, args.repeats), kind=job[0]) if job[0] != "matmul" else
                    {"kind": "matmul", **run_worker(job, args.repeats)})
    results = {"machine": machine_info(), "repeats": args.repeats, "rows": rows,
               "official": {f"{k[0]}/{k[1]}": v for k, v in OFFICIAL.items()},
               "targets": {f"{k[0]}/{k[1]}": v for k, v in TARGETS.items()}}
    if args.merge_into:
        results = _merged(json.loads(Path(args.merge_into).read_text()), results, jobs)
    text = markdown(results)
    print(text)
    for path, content in ((args.json, json.dumps(results, indent=2) + "\n"), (args.markdown, text)):
        if path:
            atomic_write_text(path, content)


if __name__ == "__main__":
    main()
