"""Class names and colour palettes of every preset, and colourised label previews.

ADE20K and COCO-Stuff names ship with the package (``labels/*.json``, copied from the reference
material); Cityscapes names and colours are the official ones from ``cityscapesscripts``;
synthscapes brings its own. Presets without an official palette get a fixed, well-separated
one (the PASCAL VOC bit-interleaving colour map, as COCO-Stuff's own tools use).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from spade_tf.config import Config, DatasetPreset

DONTCARE_COLOR = (0, 0, 0)


def voc_colormap(n: int) -> np.ndarray:
    """The PASCAL VOC colour map: class bits spread over the high bits of R, G and B."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


@functools.lru_cache(maxsize=None)
def _json_classes(name: str) -> dict[int, str]:
    text = resources.files("spade_tf.data").joinpath("labels", f"{name}_classes.json").read_text()
    return {int(k): v for k, v in json.loads(text)["classes"].items()}


@functools.lru_cache(maxsize=None)
def _cityscapes():
    from cityscapesscripts.helpers.labels import labels

    return {lab.id: (lab.name, tuple(lab.color)) for lab in labels if lab.id >= 0}


def class_names(preset: str | DatasetPreset, num_classes: int) -> list[str]:
    """Names of ids 0..num_classes-1 for a preset (``class_<id>`` where none is known)."""
    preset = DatasetPreset.parse(preset, "data.dataset")
    if preset is DatasetPreset.ADE20K:
        known = _json_classes("ade20k")
    elif preset is DatasetPreset.COCO_STUFF:
        known = _json_classes("coco_stuff")
    elif preset is DatasetPreset.CITYSCAPES:
        known = {i: name for i, (name, _) in _cityscapes().items()}
    elif preset is DatasetPreset.SYNTHSCAPES:
        from spade_tf.data.synthscapes import CLASS_NAMES

        known = dict(enumerate(CLASS_NAMES))
    else:
        known = {}
    return [known.get(i, f"class_{i}") for i in range(num_classes)]


def palette(preset: str | DatasetPreset, num_classes: int) -> np.ndarray:
    """uint8 [num_classes + 1, 3] colours; the last row is the dontcare colour."""
    preset = DatasetPreset.parse(preset, "data.dataset")
    colors = np.zeros((num_classes + 1, 3), np.uint8)
    colors[:num_classes] = voc_colormap(num_classes + 1)[1:]  # VOC's entry 0 is black: skip it
    if preset is DatasetPreset.CITYSCAPES:
        for i, (_, color) in _cityscapes().items():
            if i < num_classes:
                colors[i] = color
    elif preset is DatasetPreset.SYNTHSCAPES:
        from spade_tf.data.synthscapes import PALETTE

        colors[: len(PALETTE)] = np.asarray(PALETTE[:num_classes], np.uint8)
    colors[num_classes] = DONTCARE_COLOR
    return colors


def colorize(label, config: Config) -> np.ndarray:
    """uint8 RGB preview [..., 3] of an integer label map; dontcare (255 or num_classes) is black,
    any other out-of-range id is magenta so that it stands out."""
    label = np.asarray(label)
    n = config.model.num_classes
    colors = palette(config.data.dataset, n)
    idx = np.where(label == 255, n, label)
    bad = (idx < 0) | (idx > n)
    out = colors[np.clip(idx, 0, n)]
    out[bad] = (255, 0, 255)
    return out
