#!/usr/bin/env python3
"""Peak RSS of generator inference, stage by stage and call by call: as the CLI runs it by
default (TensorFlow's import-time library pages unmapped, ``spade_tf.memory.release_library_pages``),
with those pages kept (``spade-tf --keep-library-pages``), and with the low-memory allocator
setting on top of the default (``spade-tf --low-memory``, ``spade_tf.memory.release_freed_memory``).

benchmark.py reads the peak after a warm-up and 3 timed calls. With glibc's default allocator
the peak can grow over the calls (freed blocks stay in the heap), so this runs more calls and
prints, for each: wall time, user and system CPU time, minor page faults, RSS after the call
and the peak so far. Each setting runs in its own process (peak RSS is per process).

    .venv/bin/python scripts/inference_memory.py [--config ade20k] [--calls 10]
        [--markdown docs/benchmarks/inference_memory.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("default", "library pages kept", "low-memory")


def _status_gb():
    out = {}
    for line in open("/proc/self/status"):
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1e6  # kB
    return out["VmRSS"], out["VmHWM"]


def worker(config_name, overrides, setting, calls):
    import resource

    stages = []

    def stage(name):
        rss, hwm = _status_gb()
        stages.append({"stage": name, "rss_gb": rss, "peak_gb": hwm})

    if setting == "low-memory":
        from spade_tf.memory import release_freed_memory

        if not release_freed_memory():
            raise RuntimeError("the low-memory setting needs glibc")
    import tensorflow as tf

    stage("import TensorFlow")
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark import _inputs
    from spade_tf.config import load_config
    from spade_tf.memory import release_library_pages
    from spade_tf.networks import build_networks
    from spade_tf.semantics import to_semantics

    if setting != "library pages kept":
        release_library_pages()
    stage("library pages unmapped (not in 'kept')")

    config = load_config(config_name, overrides)
    g = build_networks(config, discriminator=False, encoder=False).generator
    stage("build the generator (weights)")
    x = _inputs(config, 1)
    seg = to_semantics(x["label"], x.get("instance"), config=config)
    stage("the one-hot input")
    fn = tf.function(lambda s: g(s, training=False))
    fn.get_concrete_function(seg)
    stage("trace")
    rows = []
    for i in range(calls):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        fn(seg).numpy()
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rss, hwm = _status_gb()
        rows.append({"call": i + 1, "wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime,
                     "sys_s": r1.ru_stime - r0.ru_stime, "minor_faults": r1.ru_minflt - r0.ru_minflt,
                     "rss_gb": rss, "peak_gb": hwm})
    return {"setting": setting, "stages": stages, "calls": rows}


def markdown(config_name, overrides, results):
    out = [f"Generator inference, `{config_name}`{' ' + ' '.join(overrides) if overrides else ''}, "
           f"batch 1, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. GB = 10^9 bytes, "
           "as `/usr/bin/time -v` and benchmark.py.", "",
           "| setting | " + " | ".join(s["stage"] for s in results[0]["stages"]) + " |",
           "|---|" + "---|" * len(results[0]["stages"])]
    for r in results:
        out.append(f"| {r['setting']} | " + " | ".join(f"RSS {s['rss_gb']:.3f}"
                                                      for s in r["stages"]) + " |")
    out += ["", "| setting | call | wall s | user CPU s | system CPU s | minor faults | "
            "RSS after GB | peak so far GB |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in r["calls"]:
            out.append(f"| {r['setting']} | {c['call']} | {c['wall_s']:.2f} | {c['user_s']:.2f} | "
                       f"{c['sys_s']:.2f} | {c['minor_faults']:,} | {c['rss_gb']:.3f} | "
                       f"{c['peak_gb']:.3f} |")
    out += ["", "| setting | median wall s (calls 2-) | median system CPU s | median minor faults "
            f"| peak after call {min(4, len(results[0]['calls']))} GB (benchmark.py's) | peak after all "
            "GB |", "|---|---|---|---|---|---|"]
    for r in results:
        later = r["calls"][1:] or r["calls"]
        med = lambda key: statistics.median(c[key] for c in later)  # noqa: E731
        four = r["calls"][min(3, len(r["calls"]) - 1)]["peak_gb"]
        out.append(f"| {r['setting']} | {med('wall_s'):.2f} | {med('sys_s'):.2f} | "
                   f"{med('minor_faults'):,.0f} | {four:.3f} | {r['calls'][-1]['peak_gb']:.3f} |")
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="ade20k", help="preset or YAML file (default ade20k)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--calls", type=int, default=10, help="forward calls per setting (default 10)")
    p.add_argument("--markdown", metavar="PATH", help="also write the tables here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.calls < 1:
        p.error(f"--calls must be at least 1, got {args.calls}")
    if args.worker:
        print(json.dumps(worker(args.config, args.set, args.worker, args.calls)))
        return
    results = []
    for setting in SETTINGS:
        print(f"{setting}: {args.calls} calls ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", setting, "--config",
                               args.config, "--calls", str(args.calls), "--set", *args.set],
                              capture_output=True, text=True,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        if proc.returncode != 0:
            sys.exit(f"the {setting} worker failed:\n{proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    text = markdown(args.config, args.set, results)
    print(text)
    if args.markdown:
        from spade_tf.fileio import atomic_write_text

        atomic_write_text(args.markdown, text)


if __name__ == "__main__":
    main()
