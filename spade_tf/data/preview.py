"""Contact sheets: colourised label maps beside their photos, as one PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from spade_tf.config import Config
from spade_tf.data.labels import colorize
from spade_tf.fileio import atomic_path


def to_uint8(image) -> np.ndarray:
    """A float image in [-1, 1] (numpy or tensor) as uint8, rounded to the nearest level."""
    return np.clip((np.asarray(image, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def rows_image(rows, pad: int = 4) -> np.ndarray:
    """uint8 grid from rows of equally sized uint8 [H, W, 3] images, white gaps between."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            grid[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = img
    return grid


def sheet_image(labels, photos, config: Config, columns: int = 4) -> Image.Image:
    """A grid of [colourised label | photo] cells. ``photos`` are uint8 or float in [-1, 1]."""
    cells = []
    for label, photo in zip(labels, photos):
        photo = np.asarray(photo)
        if photo.dtype != np.uint8:
            photo = to_uint8(photo)
        cells.append(np.concatenate([colorize(label, config), photo], axis=1))
    if not cells:
        raise ValueError("nothing to show")
    columns = min(columns, len(cells))
    return Image.fromarray(rows_image([cells[i:i + columns] for i in range(0, len(cells), columns)]))


def save_png(img: Image.Image, path: str | os.PathLike) -> Path:
    """Saves atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def dataset_sheet(config: Config, split: str, out: str | os.PathLike, count: int = 16,
                  columns: int = 4, source=None) -> Path:
    """Writes a contact sheet of the first ``count`` examples the pipeline yields for ``split``."""
    from spade_tf.data.pipeline import build_dataset

    ds = build_dataset(config, split, batch_size=1, training=False, source=source)
    labels, photos = [], []
    for batch in ds.take(count):
        labels.append(batch["label"][0].numpy())
        photos.append(batch["image"][0].numpy())
    return save_png(sheet_image(labels, photos, config, columns), out)
