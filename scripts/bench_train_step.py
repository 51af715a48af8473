"""Seconds per training step of whole presets at their own batch size, each in its own process,
with the perf forms chosen for this machine ("auto") and in the reference's plain forms.

    .venv/bin/python scripts/bench_train_step.py                       # the light presets
    .venv/bin/python scripts/bench_train_step.py --rows quickstart:auto,oasis_light:plain

Writes docs/benchmarks/train_step.{md,json}. A row is PRESET:FORM[:key=value ...], FORM one of
auto (resolved for this device), plain (every perf option at the reference's form), or
auto-minus-OPTION (auto with that one option at its plain form). The first step (tracing) is
reported apart; the median is over --repeats steps on a fixed set of real synthscapes batches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from spade_tf.benchmarking import machine_info, median_seconds
from spade_tf.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROWS = ("quickstart:auto", "synthscapes_light:auto", "oasis_light:auto",
                "oasis_light:auto-minus-broadcast_noise", "oasis_light:plain",
                "oasis_clade_light:auto")


def perf_overrides(form: str) -> list[str]:
    from spade_tf.perf import PLAIN

    plain = {k: (str(bool(v)).lower() if v.value in ("true", "false") else v.value)
             for k, v in vars(PLAIN).items()}
    if form == "auto":
        return []
    if form == "plain":
        return [f"perf.{k}={v}" for k, v in plain.items()]
    if form.startswith("auto-minus-"):
        key = form[len("auto-minus-"):]
        if key not in plain:
            raise SystemExit(f"--rows: unknown perf option {key!r}; options: {', '.join(plain)}")
        return [f"perf.{key}={plain[key]}"]
    raise SystemExit(f"--rows: form {form!r} is not auto, plain or auto-minus-OPTION")


def worker(row: str, repeats: int) -> dict:
    import tensorflow as tf

    from spade_tf.config import load_config
    from spade_tf.data import build_dataset
    from spade_tf.gan import GauGAN

    preset, form, *extra = row.split(":")
    config = load_config(preset, perf_overrides(form) + extra)
    batches = list(build_dataset(config, "train", training=True).take(4))
    gan = GauGAN(config, vgg_loss=None)
    gan.compile()
    step = tf.function(gan.train_step)
    t0 = time.perf_counter()
    logs = step(batches[0])
    float(next(iter(logs.values())))
    first = time.perf_counter() - t0
    med, times = median_seconds(lambda b: float(next(iter(step(b).values()))), repeats, batches)
    counts = gan.networks.param_counts()
    return {"row": row, "preset": preset, "form": form, "batch": config.train.batch_size,
            "size": "x".join(map(str, config.model.output_hw)), "family": str(config.model.family),
            "G_params": counts["generator"], "D_params": counts["discriminator"],
            "first_step_s": round(first, 2), "median_s": round(med, 4),
            "times_s": [round(t, 4) for t in times]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated PRESET:FORM")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per row (median)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "train_step"),
                   help="path stem of the .md and .json written")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    results = []
    for row in args.rows.split(","):
        proc = subprocess.run([sys.executable, __file__, "--worker", row, "--repeats",
                               str(args.repeats)], capture_output=True, text=True)
        if proc.returncode:
            print(f"FAILED {row}: {proc.stderr[-1500:]}", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"{row}: {r['median_s']:.3f} s/step (batch {r['batch']}, first {r['first_step_s']} s)",
              flush=True)
    info = machine_info()
    lines = ["# Seconds per training step (whole presets, their own batch size)", "",
             f"Produced by `{' '.join(['scripts/bench_train_step.py'] + sys.argv[1:])}` on "
             f"{info.get('cpu', 'this machine')} ({info.get('cores', '?')} cores); one process per "
             f"row, median of {args.repeats} steps after the first (tracing) one, on 4 real "
             f"synthscapes batches. `auto`: the perf forms resolved for this device; `plain`: the "
             f"reference's forms; `auto-minus-X`: auto with X at its plain form.", "",
             "| preset | form | family | batch | size | G params | D params | s/step | first step s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['preset']} | {r['form']} | {r['family']} | {r['batch']} | {r['size']} | "
                     f"{r['G_params']:,} | {r['D_params']:,} | **{r['median_s']:.3f}** | "
                     f"{r['first_step_s']} |")
    atomic_write_text(f"{args.out}.md", "\n".join(lines) + "\n")
    atomic_write_text(f"{args.out}.json", json.dumps({"machine": info, "results": results},
                                                     indent=1) + "\n")
    print(f"wrote {args.out}.md and .json")


if __name__ == "__main__":
    main()
