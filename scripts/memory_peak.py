"""Live-memory peak of one training iteration or generator forward, and the allocations up to it.

Peak RSS (what benchmark.py and ``/usr/bin/time -v`` report) also counts memory that the C
allocator keeps after TensorFlow freed it, so it moves by +-0.1 GB between runs of the same
code. This runs the iteration on TensorFlow's BFC allocator (``TF_CPU_ALLOCATOR_USE_BFC``), whose
counters give the bytes held by live tensors: the same number on every run, so the effect of a
change on memory can be read from one run. It also profiles the iteration and prints the
allocations around the peak (op name, size), which says which tensors make it.

    .venv/bin/python scripts/memory_peak.py --config ade20k
    .venv/bin/python scripts/memory_peak.py --config ade20k --set perf.split_discriminator_input=false
    .venv/bin/python scripts/memory_peak.py --config ade20k --inference
    .venv/bin/python scripts/memory_peak.py --config ade20k --inference --real-labels
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def allocations(xplane_path):
    """[(time ns, 'MemoryAllocation' | 'MemoryDeallocation', stats dict)] in time order."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(Path(xplane_path).read_bytes())
    rows = []
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "")
                if name not in ("MemoryAllocation", "MemoryDeallocation"):
                    continue
                stats = {}
                for s in ev.stats:
                    value = (s.int64_value or s.uint64_value or s.str_value
                             or (plane.stat_metadata[s.ref_value].name if s.ref_value else ""))
                    stats[stat_names.get(s.metadata_id, "")] = value
                rows.append((line.timestamp_ns + ev.offset_ps // 1000, name, stats))
    return sorted(rows, key=lambda r: r[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="ade20k", help="preset or YAML file")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--around", type=int, default=12, help="allocations listed before the peak")
    parser.add_argument("--inference", action="store_true",
                        help="one generator forward in inference mode (batch 1) instead of a "
                             "training iteration")
    parser.add_argument("--real-labels", action="store_true",
                        help="the first of benchmark.py's real label maps (the COCO-Stuff sample) "
                             "instead of random classes per pixel: perf.uniform_regions then "
                             "takes its regional form")
    args = parser.parse_args()
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # before TensorFlow starts
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(ROOT / "scripts"))
    import tensorflow as tf

    from benchmark import _inputs, _real_inputs
    from spade_tf.config import load_config
    from spade_tf.gan import GauGAN
    from spade_tf.networks import build_networks
    from spade_tf.semantics import to_semantics

    config = load_config(args.config, list(args.set) + ["train.batch_size=1"])
    if args.real_labels:
        def _inputs(config, batch):  # noqa: F811 (the real maps instead)
            return _real_inputs(config, batch)[0]
    if args.inference:  # what benchmark.py's forward measurement runs
        g = build_networks(config, discriminator=False, encoder=False).generator
        x = _inputs(config, 1)
        seg = to_semantics(x["label"], x.get("instance"), config=config)
        forward = tf.function(lambda s: g(s, training=False))

        def run():
            forward(seg).numpy()
        held = "weights and input"
    else:
        batch = {k: tf.constant(v) for k, v in _inputs(config, 1).items()}
        gan = GauGAN(config, vgg_loss=None)
        gan.compile()
        step = tf.function(gan.train_step)

        def run():
            step(batch)["GAN"].numpy()
        held = "weights, optimizer slots and inputs"

    def gb(key):
        return tf.config.experimental.get_memory_info("CPU:0")[key] / 1e9

    print(f"{held}: {gb('current'):.3f} GB", flush=True)
    run()  # tracing
    tf.config.experimental.reset_memory_stats("CPU:0")
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        run()
        tf.profiler.experimental.stop()
        path = max(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")),
                   key=os.path.getmtime)
        rows = allocations(path)
    what = "forward" if args.inference else "iteration"
    print(f"live peak of the {what}: {gb('peak'):.3f} GB (after it: {gb('current'):.3f} GB)")
    allocs = [r for r in rows if r[1] == "MemoryAllocation"]
    if not allocs:
        print("the profile recorded no allocations")
        return
    peak = max(allocs, key=lambda r: int(r[2].get("bytes_allocated") or 0))
    i = rows.index(peak)
    print(f"\nallocations up to the peak ({int(peak[2]['bytes_allocated']) / 1e9:.3f} GB in use):")
    print("| in use GB | size MB | op | shape |\n|---|---|---|---|")
    for _, kind, st in rows[max(0, i - 4 * args.around): i + 1]:
        if kind == "MemoryAllocation" and int(st.get("requested_bytes") or 0) >= 1 << 20:
            print(f"| {int(st.get('bytes_allocated') or 0) / 1e9:.3f} | "
                  f"{int(st.get('requested_bytes') or 0) / 1e6:.1f} | {st.get('tf_op', '')} | "
                  f"{st.get('shape', '')} |")


if __name__ == "__main__":
    main()
