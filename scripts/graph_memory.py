#!/usr/bin/env python3
"""What a traced graph costs in process memory, and how big the generator's graphs are.

The regional form of ``perf.uniform_regions`` adds a cond per SPADE conv; its extra peak RSS
(0.13-0.17 GB in an ade20k forward, 2026-12-02) was not live tensors (scripts/memory_peak.py
--inference: 0.628 against 0.627 GB) and did not move with glibc's settings. This measures the
other candidate, the graph itself:

1. a synthetic tf.function whose cond branch (never taken) holds N small integer ops: RSS after
   tracing and after the first call, per graph node (each setting in its own process);
2. the ade20k generator's inference graph (a batch-1 forward, as benchmark.py and
   inference_memory.py trace it): nodes in the main graph and in the cond branches, with
   ``perf.uniform_regions`` on and off, and the RSS after tracing and after the first call.

    .venv/bin/python scripts/graph_memory.py [--config ade20k] [--sizes 0 250 500]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def _rss_gb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1e6
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def _nodes(graph):
    gd = graph.as_graph_def()
    return len(gd.node), sum(len(f.node_def) for f in gd.library.function)


def synthetic(n):
    import tensorflow as tf

    x = tf.random.uniform((1000, 3), maxval=100, dtype=tf.int32)

    def heavy():
        y = x
        for t in range(n):  # about 29 nodes a step: slices, adds, compares, clips, a select
            i = y[:, 1] + (t % 3 - 1)
            ok = (i >= 0) & (i <= 99)
            y = tf.where(ok[:, None], tf.stack([y[:, 0], tf.clip_by_value(i, 0, 99), y[:, 2]], 1), y)
        return y

    fn = tf.function(lambda v: tf.cond(tf.reduce_sum(v) < 0, heavy, lambda: v))
    r0 = _rss_gb()
    main, branches = _nodes(fn.get_concrete_function(x).graph)
    r1 = _rss_gb()
    fn(x).numpy()
    r2 = _rss_gb()
    return {"ops": n, "nodes": main + branches, "trace_gb": r1 - r0, "first_call_gb": r2 - r1}


def generator(config_name, regions):
    import tensorflow as tf

    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark import _inputs
    from spade_tf.config import load_config
    from spade_tf.networks import build_networks
    from spade_tf.semantics import to_semantics

    config = load_config(config_name, [f"perf.uniform_regions={str(regions).lower()}"])
    g = build_networks(config, discriminator=False, encoder=False).generator
    x = _inputs(config, 1)
    seg = to_semantics(x["label"], x.get("instance"), config=config)
    fn = tf.function(lambda s: g(s, training=False))
    r0 = _rss_gb()
    graph = fn.get_concrete_function(seg).graph
    r1 = _rss_gb()
    fn(seg).numpy()
    r2 = _rss_gb()
    main, branches = _nodes(graph)
    ops = collections.Counter(n.op for n in graph.as_graph_def().node)
    return {"regions": regions, "main_nodes": main, "branch_nodes": branches,
            "conds": ops.get("StatelessIf", 0) + ops.get("If", 0),
            "trace_gb": r1 - r0, "first_call_gb": r2 - r1, "rss_after_gb": r2}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="ade20k", help="preset or YAML file (default ade20k)")
    p.add_argument("--sizes", type=int, nargs="*", default=[0, 250, 500],
                   help="ops in the synthetic branch (default 0 250 500)")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        kind, value = args.worker
        out = synthetic(int(value)) if kind == "synthetic" else generator(args.config,
                                                                          value == "on")
        print("RESULT " + json.dumps(out))
        return

    def run(kind, value):
        cmd = [sys.executable, __file__, "--config", args.config, "--worker", kind, str(value)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            raise SystemExit(f"{kind} {value} failed:\n{done.stderr[-3000:]}")
        return json.loads(lines[-1][len("RESULT "):])

    print("| synthetic branch ops | graph nodes | RSS after tracing GB | after the first call GB "
          "| per node KB |\n|---|---|---|---|---|")
    base = None
    for n in args.sizes:
        r = run("synthetic", n)
        total = r["trace_gb"] + r["first_call_gb"]
        base = total if base is None else base
        per = ((total - base) * 1e6 / r["nodes"]) if r["nodes"] and n else float("nan")
        print(f"| {n} | {r['nodes']:,} | +{r['trace_gb']:.3f} | +{r['first_call_gb']:.3f} | "
              f"{per:.1f} |", flush=True)
    print(f"\n| {args.config} forward | main graph nodes | cond branch nodes | conds | RSS after "
          "tracing GB | after the first call GB | RSS then GB |\n|---|---|---|---|---|---|---|")
    for regions in (True, False):
        r = run("generator", "on" if regions else "off")
        print(f"| uniform regions {'on' if regions else 'off'} | {r['main_nodes']:,} | "
              f"{r['branch_nodes']:,} | {r['conds']} | +{r['trace_gb']:.3f} | "
              f"+{r['first_call_gb']:.3f} | {r['rss_after_gb']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
