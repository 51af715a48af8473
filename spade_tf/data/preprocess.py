"""The reference's preprocessing (``data/base_dataset.py``: get_params / get_transform), on PIL.

Photos are resampled bicubically, label and instance maps with nearest neighbour; the same crop
and flip apply to all three. Random choices come from a ``numpy.random.Generator`` the caller
seeds, so the pipeline is deterministic.

Deviation: the reference's ``scale_shortside`` keeps the original short side (a bug: it computes
the new long side from ``load_size`` but returns the old short side). Here the short side really
becomes ``load_size``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from PIL import Image

from spade_tf.config import Config, Preprocess

CROP_MODES = {Preprocess.RESIZE_AND_CROP, Preprocess.CROP, Preprocess.SCALE_WIDTH_AND_CROP,
              Preprocess.SCALE_SHORTSIDE_AND_CROP}


@dataclasses.dataclass(frozen=True)
class Params:
    crop_xy: tuple[int, int]
    flip: bool


def _scaled_size(mode: Preprocess, w: int, h: int, load: int) -> tuple[int, int]:
    """Size after the resize step of ``mode`` (before any crop)."""
    if mode in (Preprocess.RESIZE_AND_CROP,):
        return load, load
    if mode in (Preprocess.SCALE_WIDTH, Preprocess.SCALE_WIDTH_AND_CROP):
        return (w, h) if w == load else (load, int(load * h / w))
    if mode in (Preprocess.SCALE_SHORTSIDE, Preprocess.SCALE_SHORTSIDE_AND_CROP):
        short, long_ = min(w, h), max(w, h)
        if short == load:
            return w, h
        long_ = int(load * long_ / short)
        return (load, long_) if w == short else (long_, load)
    return w, h


def output_size(config: Config, training: bool) -> Optional[tuple[int, int]]:
    """(H, W) every preprocessed example has, or None when it depends on the input size."""
    mode, crop = config.data.preprocess, config.model.crop_size
    if mode in CROP_MODES:
        return crop, crop
    if mode is Preprocess.FIXED:
        return round(crop / config.model.aspect_ratio), crop
    return None


def effective_load_size(config: Config, training: bool) -> int:
    """The reference tests ADE20K / COCO with load_size = crop_size (no zoom, no random crop)."""
    if not training and config.data.preprocess is Preprocess.RESIZE_AND_CROP:
        return config.model.crop_size
    return config.data.load_size


def sample_params(config: Config, size: tuple[int, int], rng: np.random.Generator,
                  training: bool) -> Params:
    """Crop position and flip for an image of PIL size (w, h), as the reference's get_params.

    Outside training the crop is centred and there is no flip (deterministic evaluation).
    """
    w, h = size
    mode, crop = config.data.preprocess, config.model.crop_size
    new_w, new_h = _scaled_size(mode, w, h, effective_load_size(config, training))
    max_x, max_y = max(0, new_w - crop), max(0, new_h - crop)
    if training:
        x, y = int(rng.integers(0, max_x + 1)), int(rng.integers(0, max_y + 1))
        flip = bool(config.data.flip and rng.random() > 0.5)
    else:
        x, y, flip = max_x // 2, max_y // 2, False
    return Params((x, y), flip)


def transform(img: Image.Image, config: Config, params: Params, training: bool,
              method=Image.BICUBIC) -> Image.Image:
    """Applies the preprocessing to one PIL image (bicubic for photos, NEAREST for maps)."""
    mode, crop = config.data.preprocess, config.model.crop_size
    load = effective_load_size(config, training)
    w, h = img.size
    if mode not in (Preprocess.CROP, Preprocess.FIXED, Preprocess.NONE):
        new = _scaled_size(mode, w, h, load)
        if new != (w, h):
            img = img.resize(new, method)
    if mode in CROP_MODES:
        x, y = params.crop_xy
        img = img.crop((x, y, x + crop, y + crop))  # PIL pads with zeros past the border
    if mode is Preprocess.NONE:  # the reference's __make_power_2 with base 32
        ow, oh = img.size
        nw, nh = int(round(ow / 32) * 32), int(round(oh / 32) * 32)
        if (nw, nh) != (ow, oh):
            img = img.resize((max(nw, 32), max(nh, 32)), method)
    if mode is Preprocess.FIXED:
        img = img.resize((crop, round(crop / config.model.aspect_ratio)), method)
    if params.flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def preprocess_example(photo: Image.Image, label: np.ndarray, instance: Optional[np.ndarray],
                       config: Config, rng: np.random.Generator, training: bool):
    """One example: (uint8 [H, W, 3], int32 [H, W], int32 [H, W] or None)."""
    params = sample_params(config, photo.size, rng, training)
    out_photo = np.asarray(transform(photo, config, params, training, Image.BICUBIC), np.uint8)

    def nearest(arr):
        img = Image.fromarray(np.ascontiguousarray(arr, np.int32))
        return np.asarray(transform(img, config, params, training, Image.NEAREST), np.int32)

    return out_photo, nearest(label), None if instance is None else nearest(instance)
