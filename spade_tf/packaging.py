"""Packing a trained run into a model that ships in the package (``spade_tf.pretrained``):
the generator that inference runs, as float16, the segmenter that scored it, and a card whose
numbers ``spade-tf evaluate`` reproduces."""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from spade_tf.fileio import atomic_dir, atomic_write_text
from spade_tf.networks import PACKED_WEIGHTS

CARD_JSON = "card.json"
CARD_MD = "card.md"
SAMPLES = "samples.png"
# What the card's scores are allowed to move by when ``evaluate`` reruns them on another
# machine (other float rounding in the generator and the segmenter); the tests use it.
CARD_TOLERANCE = {"miou": 0.01, "kid": 0.05}


def _steps(run: Path) -> Optional[int]:
    log = run / "steps.log"
    if log.is_file():
        lines = log.read_text().split()
        return int(lines[-1]) if lines else 0
    return None


def pack(checkpoint: str | os.PathLike, out: str | os.PathLike, *, segmenter: str | os.PathLike,
         command: str = "", minutes: Optional[float] = None, steps: Optional[int] = None,
         overwrite: bool = False, progress: bool = False) -> dict:
    """Writes ``out`` (atomically): the packed generator of ``checkpoint`` (its moving average
    with refreshed statistics when it has one), a copy of the built-in ``segmenter`` folder,
    and a card (``card.json``, ``card.md``, ``samples.png``) with the scores of the packed
    weights themselves: the validation split scored by ``spade_tf.evaluation.evaluate``.

    Args:
        checkpoint: a training run folder (or checkpoint folder).
        out: the model's folder, e.g. ``spade_tf/pretrained/synthscapes_light``.
        segmenter: a built-in segmenter folder (``spade-tf train-segmenter``); it ships with
            the model so that the card can be checked on any install.
        command: the training command, for the card.
        minutes: the training's wall-clock minutes, for the card.
        steps: the training steps, for the card (default: the run's ``steps.log``).
        overwrite: replace an existing ``out``.

    Returns the card (as written to ``card.json``).
    """
    from spade_tf.benchmarking import machine_info
    from spade_tf.ema import inference_generator
    from spade_tf.evaluation import evaluate
    from spade_tf.networks import load_networks, write_packed_generator

    checkpoint, segmenter, out = Path(checkpoint), Path(segmenter), Path(out)
    if not (segmenter / "segmenter.json").is_file():
        raise FileNotFoundError(f"--segmenter {segmenter}: not a built-in segmenter folder (no "
                                f"segmenter.json; make one with spade-tf train-segmenter)")
    nets, config = load_networks(checkpoint, generator=True, discriminator=False)
    generator, note = inference_generator(nets, config)
    note = f"{note}; packed as float16"
    with atomic_dir(out, overwrite) as tmp:
        write_packed_generator(tmp, generator, config, note)
        shutil.copytree(segmenter, tmp / "segmenter")
        metrics = evaluate(tmp, tmp / "eval", segmenter=str(tmp / "segmenter"), progress=progress,
                           grid_rows=4)
        _enlarge(tmp / "eval" / "report.png", tmp / SAMPLES)
        shutil.rmtree(tmp / "eval")
        seg, machine = metrics["segmentation"], machine_info()
        card = {
            "name": out.name,
            "family": str(config.model.family), "norm_mode": str(config.model.norm_mode),
            "size": list(config.model.output_hw), "classes": config.model.num_classes,
            "dataset": str(config.data.dataset),
            "command": command, "steps": steps if steps is not None else _steps(checkpoint),
            "minutes": None if minutes is None else round(float(minutes), 1),
            "machine": f"{machine['cpu']}, {machine['cores']} CPUs",
            "date": datetime.date.today().isoformat(),
            "weights": note,
            "packed_bytes": (tmp / PACKED_WEIGHTS).stat().st_size,
            "g_params": int(sum(w.shape.num_elements() for w in generator.trainable_weights)),
            "scores": {"images": metrics["images"], "split": metrics["split"],
                       "miou": seg["generated"]["miou"],
                       "pixel_accuracy": seg["generated"]["pixel_accuracy"],
                       "kid": metrics["kid"]["mean"], "kid_std": metrics["kid"]["std"],
                       "fid": metrics["fid"], "extractor": "built-in segmenter features (segmenter/)",
                       "ceiling_miou": seg["real_ceiling"]["miou"]},
            # a packed model's own segmenter/ is evaluate's default
            "evaluate": f"spade-tf evaluate --checkpoint pretrained:{out.name} --out eval",
        }
        atomic_write_text(tmp / CARD_JSON, json.dumps(card, indent=2) + "\n")
        atomic_write_text(tmp / CARD_MD, card_markdown(card))
    return card


def _enlarge(src: Path, dst: Path, scale: int = 3) -> None:
    """The label | generated | real rows at 3x (nearest): 64 px images are too small to read."""
    from PIL import Image

    from spade_tf.data.preview import save_png

    img = Image.open(src)
    save_png(img.resize((img.width * scale, img.height * scale), Image.NEAREST), dst)


def architecture(card: dict) -> str:
    name = {"spade": "SPADE", "oasis": "OASIS"}.get(card["family"], card["family"])
    return name + (" with CLADE (class-adaptive normalization)" if card["norm_mode"] == "clade" else "")


def card_markdown(card: dict) -> str:
    s = card["scores"]
    h, w = card["size"]
    return "\n".join([
        f"# Model card: {card['name']}", "",
        f"![label | generated | real]({SAMPLES})", "",
        f"{architecture(card)}: a generator of "
        f"{card['g_params']:,} parameters, {h} x {w} px, {card['classes']} classes of "
        f"{card['dataset']}. Shipped as float16 ({card['packed_bytes'] / 1e6:.1f} MB); it loads "
        "as float32.", "",
        "| | |", "|---|---|",
        f"| trained with | `{card['command']}` |",
        f"| steps | {card['steps']} |",
        f"| minutes | {card['minutes']} (wall clock, {card['machine']}) |",
        f"| weights | {card['weights']} |",
        f"| held-out mIoU | **{s['miou']:.4f}** (real images: {s['ceiling_miou']:.4f}), "
        f"{s['images']} {s['split']} maps |",
        f"| pixel accuracy | {s['pixel_accuracy']:.4f} |",
        f"| KID | {s['kid']:.3f} ± {s['kid_std']:.3f} ({s['extractor']}; not comparable with "
        f"published Inception KIDs) |",
        f"| date | {card['date']} |", "",
        "Reproduce the scores (the segmenter that scored it ships in `segmenter/`, and "
        "`evaluate` uses it by default):", "",
        f"    {card['evaluate']}", "",
        "Use it: `spade-tf studio` (paint, and it draws), `spade-tf synthesize --model pretrained "
        "--labels LABEL.png --out OUT` (and `--instance INST.png` where the model takes instance "
        "maps), `spade-tf export --checkpoint pretrained --out "
        "export/models` (Serving, TFLite).", ""])
