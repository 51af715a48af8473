#!/usr/bin/env python3
"""Quality per CPU-minute: the light recipes trained for equal wall-clock minutes on this machine.

Each recipe (a preset) trains with ``spade-tf train --max-minutes``, one run per seed, in
stages: the run stops at the first mark (10 minutes by default), is scored, and resumes from
its checkpoint up to the next mark (30). Every stage is scored twice with
``spade_tf.evaluation.evaluate`` on the 200 held-out synthscapes maps: with the moving average
of G (``--weights ema``, what export, synthesize and the studio use) and with G itself. The
scores are the built-in segmenter's mIoU (its ceiling on the real images beside it) and KID
with its pooled features (a stand-in: no Inception weights here).

Wall-clock minutes only mean something on an otherwise idle machine: run nothing else beside
it (the table states each run's steps, so a slowed run shows as fewer steps).

Writes docs/benchmarks/quality_per_minute.{md,json} and one picture grid per mark
(quality_per_minute_10min.png, ...): the same validation label maps, one column per recipe.

    .venv/bin/python scripts/quality_per_minute.py                 # 10 and 30 min, seeds 0 1
    .venv/bin/python scripts/quality_per_minute.py --minutes 10    # the 10-minute column only
    .venv/bin/python scripts/quality_per_minute.py --recipes oasis_light \
        --variant oasis_nobal=oasis_light:loss.class_balancing=false    # a variant beside a preset

``--steps`` marks by steps instead (``spade-tf train --max-steps``): equal steps, for two
variants of one recipe whose speed differs, e.g. bfloat16 against float32 (docs/benchmarks/
precision_quality.md):

    .venv/bin/python scripts/quality_per_minute.py --steps 2000 --recipes synthscapes_light \
        --variant bf16=synthscapes_light:train.precision=mixed_bfloat16 --name precision_quality \
        --workdir runs/precision_quality

Re-running with the same --workdir reuses what is done: finished stages are read back, and an
unfinished run resumes at its next mark (``--minutes 10 30`` after ``--minutes 10`` trains
each run 20 more minutes). Delete the folder for a fresh run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]

# The presets compared, in the grid's and the table's order, with their names in the docs.
RECIPES = {"quickstart": "SPADE (quickstart)",
           "synthscapes_light": "CLADE light",
           "oasis_light": "OASIS light",
           "oasis_clade_light": "OASIS + CLADE light"}
WEIGHTS = {"ema": "moving average", "generator": "G"}


def spade_tf_cli() -> list[str]:
    return [sys.executable, "-m", "spade_tf"]


def last_step(run: Path) -> int:
    """The step the run stopped at (``steps.log`` has one line per step)."""
    lines = (run / "steps.log").read_text().split()
    return int(lines[-1]) if lines else 0


def stage_name(mark: float, unit: str) -> str:
    """The stage's folder: ``at_10min`` or ``at_2000steps``."""
    return f"at_{mark:g}min" if unit == "minutes" else f"at_{mark:g}steps"


def mark_text(mark: float, unit: str) -> str:
    return f"{mark:g} min" if unit == "minutes" else f"{mark:g} steps"


def unit_of(summary: dict) -> str:
    """What the summary's marks count (summaries from before --steps have minutes)."""
    return "steps" if "marks_steps" in summary else "minutes"


def ensure_segmenter(seg_dir: Path, steps: int) -> dict:
    if not (seg_dir / "segmenter.json").is_file():
        subprocess.run(spade_tf_cli() + ["train-segmenter", "--config", "quickstart", "--out",
                                         str(seg_dir), "--steps", str(steps), "--quiet"], check=True)
    return json.loads((seg_dir / "segmenter.json").read_text())


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """``NAME=PRESET[:key=value,key=value]`` -> (name, preset, overrides)."""
    name, _, rest = text.partition("=")
    preset, _, sets = rest.partition(":")
    if not name or not preset:
        raise SystemExit(f"--variant {text!r}: expected NAME=PRESET[:key=value,...]")
    return name, preset, [x for x in sets.split(",") if x]


def train_stage(recipe: str, seed: int, run: Path, minutes: float, log, preset: str = None,
                overrides=(), to_step: int = None) -> dict:
    """Trains ``run`` for ``minutes`` more wall-clock minutes, or up to step ``to_step``
    (resuming it when it has a checkpoint); returns the stage's steps and seconds."""
    step0 = last_step(run) if (run / "steps.log").is_file() else 0
    stop = ["--max-steps", str(to_step)] if to_step else ["--max-minutes", f"{minutes:g}"]
    cmd = spade_tf_cli() + ["train", "--config", preset or recipe, "--workdir", str(run),
                            *stop, "--set", f"train.seed={seed}"]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.time()
    with open(run.parent / f"{run.name}.log", "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT,
                       env={**os.environ, "CI": "true"})  # CI: line progress, not a bar
    seconds = time.time() - t0
    steps = last_step(run)
    log(f"  trained {recipe} seed {seed}: steps {step0} -> {steps} in {seconds:.0f} s")
    return {"steps": steps, "stage_seconds": round(seconds, 1)}


def score(run: Path, out: Path, segmenter: Path) -> dict:
    from spade_tf.evaluation import evaluate

    scores = {}
    for weights in WEIGHTS:
        m = evaluate(run, out / weights, segmenter=str(segmenter), weights=weights, progress=False)
        g = m["segmentation"]["generated"]
        scores[weights] = {"miou": g["miou"], "pixel_accuracy": g["pixel_accuracy"],
                           "per_class_iou": g["per_class_iou"], "kid": m["kid"]["mean"],
                           "kid_std": m["kid"]["std"], "fid": m["fid"], "images": m["images"],
                           "extractor": m["extractor"]}
    return scores


def grid(snapshots: dict, count: int = 8, scale: int = 2):
    """label | one column per snapshot (a recipe or a mark; moving average) | real, for the
    first ``count`` validation maps."""
    import numpy as np
    from PIL import Image

    from spade_tf.data.labels import colorize
    from spade_tf.data.preview import rows_image, to_uint8
    from spade_tf.evaluation import generate_split
    from spade_tf.networks import load_networks

    columns, label, real, config = [], None, None, None
    for path in snapshots.values():
        nets, config = load_networks(path, generator=True, discriminator=False)
        label, fake, real = next(generate_split(nets, config, batch_size=count, max_images=count,
                                                progress=False))
        columns.append(fake)
    rows = [[colorize(label[i], config)] + [to_uint8(c[i]) for c in columns] + [to_uint8(real[i])]
            for i in range(len(label))]
    img = Image.fromarray(rows_image(rows))
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    marks = p.add_mutually_exclusive_group()
    marks.add_argument("--minutes", type=float, nargs="+", default=[10, 30],
                       help="the marks, cumulative wall-clock minutes of training (default 10 30)")
    marks.add_argument("--steps", type=int, nargs="+",
                       help="the marks as training steps instead (equal steps, not equal minutes)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default 0 1)")
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES),
                   help="presets to compare (default: all four)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PRESET:K=V,...",
                   help="also a preset with overrides, under its own name (repeatable)")
    p.add_argument("--segmenter-steps", type=int, default=800, help="built-in segmenter steps")
    p.add_argument("--workdir", default="runs/quality_per_minute",
                   help="runs and scores go here (relative to the repository, so that the "
                        "committed report names no path of this machine)")
    p.add_argument("--out-doc", default=str(ROOT / "docs" / "benchmarks"),
                   help="folder for the .md, .json and grids")
    p.add_argument("--name", default="quality_per_minute",
                   help="base name of the written files (default quality_per_minute)")
    args = p.parse_args()

    from spade_tf.data.preview import save_png
    from spade_tf.fileio import atomic_write_text
    from spade_tf.networks import load_networks, save_networks

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    seg_dir = work / "segmenter"
    seg_info = ensure_segmenter(seg_dir, args.segmenter_steps)
    ceiling = seg_info["ceiling_on_real_val"]
    log(f"segmenter ceiling on real val: mIoU {ceiling['miou']:.4f}")

    unit = "steps" if args.steps else "minutes"
    marks = sorted(args.steps or args.minutes)
    variants = {name: (preset, sets) for name, preset, sets in map(parse_variant, args.variant)}
    for name, (preset, sets) in variants.items():
        RECIPES[name] = f"{name} ({preset} + {', '.join(sets)})"
    recipes = list(args.recipes) + list(variants)
    results = []
    for mark_i, mark in enumerate(marks):  # every run reaches a mark before any goes further
        for seed in args.seeds:
            for recipe in recipes:
                run = work / f"{recipe}_seed{seed}"
                stage = run / stage_name(mark, unit)
                done = stage / "stage.json"
                if done.is_file():
                    results.append(json.loads(done.read_text()))
                    continue
                run.mkdir(parents=True, exist_ok=True)
                before = marks[mark_i - 1] if mark_i else 0
                if before and not (run / stage_name(before, unit) / "stage.json").is_file():
                    raise SystemExit(f"{run}: the {mark_text(before, unit)} stage is missing; run "
                                     "the marks in order (the default does)")
                log(f"{recipe} seed {seed}: training to {mark_text(mark, unit)}")
                record = {"recipe": recipe, "seed": seed, unit: mark,
                          **train_stage(recipe, seed, run, mark - before, log,
                                        *variants.get(recipe, (recipe, ())),
                                        to_step=mark if unit == "steps" else None)}
                # Keep this mark's networks: the next stage overwrites the run's checkpoints.
                nets, config = load_networks(run, generator=True, discriminator=False)
                save_networks(nets, config, stage / "networks", overwrite=True)
                record["scores"] = score(stage / "networks", stage, seg_dir)
                record["g_params"] = int(sum(v.shape.num_elements()
                                             for v in nets.generator.trainable_variables))
                atomic_write_text(done, json.dumps(record, indent=2) + "\n")
                results.append(record)
                s = record["scores"]
                log(f"  {recipe} seed {seed} at {mark_text(mark, unit)} ({record['steps']} steps): mIoU "
                    f"EMA {s['ema']['miou']:.4f} / G {s['generator']['miou']:.4f}, KID "
                    f"EMA {s['ema']['kid']:.3f} / G {s['generator']['kid']:.3f}")

    out = Path(args.out_doc)
    out.mkdir(parents=True, exist_ok=True)
    grids, by_minutes = {}, None
    if len(recipes) == 1 and len(marks) > 1:
        # One recipe: one grid whose columns are its marks (what the extra minutes bought).
        snaps = {mark: work / f"{recipes[0]}_seed{args.seeds[0]}" / stage_name(mark, unit) / "networks"
                 for mark in marks}
        by_minutes = f"{args.name}_by_minutes.png"
        save_png(grid(snaps), out / by_minutes)
    else:
        for mark in marks:
            snaps = {r: work / f"{r}_seed{args.seeds[0]}" / stage_name(mark, unit) / "networks"
                     for r in recipes}
            name = f"{args.name}_{stage_name(mark, unit)[3:]}.png"
            save_png(grid(snaps), out / name)
            grids[mark] = name
    summary = {"command": "python scripts/quality_per_minute.py " + " ".join(sys.argv[1:]),
               f"marks_{unit}": marks, "seeds": args.seeds, "recipes": recipes,
               "recipe_names": {r: RECIPES[r] for r in recipes},
               "segmenter": seg_info, "runs": results, "grids": grids, "by_minutes": by_minutes,
               "machine": os.uname().machine, "cpus": os.cpu_count()}
    atomic_write_text(out / f"{args.name}.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / f"{args.name}.md", markdown(summary))
    log(f"wrote {out / (args.name + '.md')}")


def winner(summary: dict, mark: float) -> tuple[str, str]:
    """The (recipe, weights) with the best mean mIoU over seeds at ``mark``."""
    import numpy as np

    best = None
    for recipe in summary["recipes"]:
        for w in WEIGHTS:
            vals = [r["scores"][w]["miou"] for r in summary["runs"]
                    if r["recipe"] == recipe and r[unit_of(summary)] == mark]
            if vals and (best is None or np.mean(vals) > best[0]):
                best = (float(np.mean(vals)), recipe, w)
    return best[1], best[2]


def close_calls(summary: dict, mark: float, best: str, weights: str, names: dict) -> list[str]:
    """A line for every other recipe whose mean mIoU (same weights) is within the seeds'
    spread of the best's: the best of a few seeds is not a winner over those."""
    import numpy as np

    def scores(recipe, key):
        return [r["scores"][weights][key] for r in summary["runs"]
                if r["recipe"] == recipe and r[unit_of(summary)] == mark]

    top = scores(best, "miou")
    lines = []
    for recipe in summary["recipes"]:
        other = scores(recipe, "miou")
        if recipe == best or len(top) < 2 or len(other) < 2:
            continue
        gap = float(np.mean(top) - np.mean(other))
        spread = max(np.ptp(top), np.ptp(other)) / 2  # half the range over seeds
        if gap <= spread:
            lines.append(f"A tie with **{names[recipe]}** ({np.mean(other):.4f}, {gap:.4f} behind, "
                         f"within the seeds' spread of ±{spread:.4f}); mean KID "
                         f"{np.mean(scores(best, 'kid')):.3f} against "
                         f"{np.mean(scores(recipe, 'kid')):.3f}.")
    return lines


def markdown(s: dict) -> str:
    import numpy as np

    from spade_tf.data.synthscapes import CLASS_NAMES

    ceiling = s["segmenter"]["ceiling_on_real_val"]
    runs = s["runs"]
    names = {**RECIPES, **s.get("recipe_names", {})}
    unit = unit_of(s)
    if unit == "minutes":
        title = "Quality per CPU-minute: the light recipes at equal wall-clock minutes"
        how = ("- Each run trains with `spade-tf train --config PRESET --max-minutes M --set "
               "train.seed=S`; a later mark resumes the same run. Minutes count from the start "
               "of `fit` (tracing included), so the steps reached are what a user gets.")
        busy = ", nothing else running"
    else:
        title = "Quality at equal steps"
        how = ("- Each run trains with `spade-tf train --config PRESET --max-steps N --set "
               "train.seed=S`; a later mark resumes the same run. Equal steps: the scores do not "
               "depend on the machine's load; the seconds column does (stage wall-clock seconds, "
               "start-up and scoring excluded).")
        busy = ""
    lines = [f"# {title}", "",
             f"Produced by `{s['command'].strip()}` on this machine ({s['cpus']} CPUs, "
             f"{s['machine']}){busy}. Rerun it to reproduce; the module docstring "
             "says how it stages and resumes.", "",
             "- Data: synthscapes at 64 x 64 (9 classes), batch 4; 200 held-out validation maps.",
             how,
             "- Scores: the built-in segmenter (`spade-tf train-segmenter --config quickstart "
             f"--steps {s['segmenter']['steps']}`); **ceiling** on the real validation images: "
             f"mIoU **{ceiling['miou']:.4f}**. KID with its 64-d pooled features (a stand-in, "
             "not comparable with published numbers; lower is better).",
             "- Each run is scored with its moving average of G (`--weights ema`: what export, "
             "synthesize and the studio use) and with G (`--weights generator`): one training, "
             "with and without EMA.", ""]
    for mark in s[f"marks_{unit}"]:
        at = [r for r in runs if r[unit] == mark]
        if not at:
            continue
        when = mark_text(mark, unit).replace(" min", " minutes")
        # equal steps: the seconds each took (equal minutes: the steps column says it)
        secs = (lambda rs: "") if unit == "minutes" else (
            lambda rs: f"{np.mean([r['stage_seconds'] for r in rs]):.0f} | ")
        lines += [f"## {when}", "",
                  "| recipe | seed | steps | " + ("" if unit == "minutes" else "seconds | ")
                  + "G parameters | mIoU, EMA | mIoU, G | KID, EMA | KID, G |",
                  "|---|---|---|" + ("" if unit == "minutes" else "---|") + "---|---|---|---|---|"]
        for r in at:
            e, g = r["scores"]["ema"], r["scores"]["generator"]
            lines.append(f"| {names[r['recipe']]} | {r['seed']} | {r['steps']} | {secs([r])}"
                         f"{r['g_params']:,} | {e['miou']:.4f} | {g['miou']:.4f} | "
                         f"{e['kid']:.3f} ± {e['kid_std']:.3f} | {g['kid']:.3f} ± {g['kid_std']:.3f} |")
        for recipe in s["recipes"]:
            rs = [r for r in at if r["recipe"] == recipe]
            if len(rs) > 1:  # one seed: its row is the mean
                mean = {w: np.mean([r["scores"][w]["miou"] for r in rs]) for w in WEIGHTS}
                kid = {w: np.mean([r["scores"][w]["kid"] for r in rs]) for w in WEIGHTS}
                lines.append(f"| **{names[recipe]}, mean** | | {np.mean([r['steps'] for r in rs]):.0f} "
                             f"| {secs(rs)}| **{mean['ema']:.4f}** | **{mean['generator']:.4f}** | "
                             f"{kid['ema']:.3f} | {kid['generator']:.3f} |")
        best, w = winner(s, mark)
        lines += ["", f"Best mean mIoU at {when}: **{names[best]}** with "
                      f"{WEIGHTS[w]} weights (ceiling {ceiling['miou']:.4f})."]
        lines += close_calls(s, mark, best, w, names)
        if "oasis_light" in s["recipes"] and "quickstart" in s["recipes"]:
            for w in WEIGHTS:
                wins = []
                for seed in s["seeds"]:
                    o = [r for r in at if r["recipe"] == "oasis_light" and r["seed"] == seed]
                    q = [r for r in at if r["recipe"] == "quickstart" and r["seed"] == seed]
                    if o and q:
                        wins.append(o[0]["scores"][w]["miou"] > q[0]["scores"][w]["miou"])
                lines.append(f"OASIS light beats the quickstart SPADE ({WEIGHTS[w]} weights) in "
                             f"{sum(wins)} of {len(wins)} seeds.")
        lines += ["", f"### Per-class IoU at {when} (moving average, mean over seeds)", "",
                  "| class | " + " | ".join(names[r] for r in s["recipes"]) + " | real images |",
                  "|---|" + "---|" * len(s["recipes"]) + "---|"]
        for i, name in enumerate(CLASS_NAMES):
            cells = []
            for recipe in s["recipes"]:
                vals = [r["scores"]["ema"]["per_class_iou"][i] for r in at if r["recipe"] == recipe]
                vals = [v for v in vals if v is not None and v == v]
                cells.append(f"{np.mean(vals):.3f}" if vals else "-")
            c = ceiling["per_class_iou"][i]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if c is None or c != c else f'{c:.3f}'} |")
        if mark in s["grids"] or f"{mark}" in s["grids"]:
            name = s["grids"].get(mark) or s["grids"][f"{mark}"]
            lines += ["", f"### The same validation labels at {when}", "",
                      "Columns: colourised label | " + " | ".join(names[r] for r in s["recipes"])
                      + f" | real. Moving-average weights, seed {s['seeds'][0]}; 2x nearest upscale.",
                      "", f"![recipes at {when}]({name})", ""]
    if s.get("by_minutes"):
        by = "minute by minute" if unit == "minutes" else "mark by mark"
        lines += ["", f"## {names[s['recipes'][0]]}, seed {s['seeds'][0]}, {by}", "",
                  "Columns: colourised label | "
                  + " | ".join(mark_text(m, unit) for m in s[f"marks_{unit}"])
                  + " | real. Moving-average weights; 2x nearest upscale.", "",
                  f"![one run at each mark]({s['by_minutes']})", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
