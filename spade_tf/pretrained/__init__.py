"""The trained models shipped in the package, so that ``spade-tf studio`` and ``spade-tf
synthesize`` draw pictures on a fresh install, with no training.

Each model is a folder here: a packed checkpoint (``spade_tf.networks.write_packed_generator``:
``config.yaml`` and float16 ``generator.npz``), its card (``card.md``, ``card.json``: the
command, steps, minutes and scores that made it) and ``segmenter/``, the built-in segmenter
that scored it, so that ``spade-tf evaluate`` reproduces the card. ``scripts/
train_packaged_model.sh`` trains and packs them (``spade_tf.packaging``).

Wherever a model or checkpoint path is taken, ``pretrained`` names the default model and
``pretrained:NAME`` another one. This module reads no TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
DEFAULT = "synthscapes_light"  # the recipe that won at 10 minutes (docs/benchmarks/quality_per_minute.md)
ALIAS = "pretrained"


def available() -> list[str]:
    """Names of the packaged models present in this install."""
    return sorted(p.name for p in FOLDER.iterdir()
                  if p.is_dir() and (p / "config.yaml").is_file() and (p / "generator.npz").is_file())


def resolve(path: str | os.PathLike) -> Path:
    """``pretrained`` / ``pretrained:NAME`` as the packaged model's folder; any other path as
    it is. An alias of a model that is not here is an error naming the ones that are."""
    text = str(path)
    if text != ALIAS and not text.startswith(ALIAS + ":"):
        return Path(path)
    name = text.split(":", 1)[1] if ":" in text else DEFAULT
    folder = FOLDER / name
    if not (folder / "generator.npz").is_file():
        have = available()
        raise FileNotFoundError(
            f"{text}: no packaged model {name!r} in {FOLDER} ("
            + (f"packaged here: {', '.join(have)}" if have else "none is packaged in this install; "
               "scripts/train_packaged_model.sh makes one") + ")")
    return folder
