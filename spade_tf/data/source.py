"""What every example source shares: reading, checking and preprocessing one example, and the
``Source`` that ``pipeline.build_dataset`` draws from. The folders and synthscapes sources live
in ``pipeline``; prepared TFRecords in ``records``; TFDS in ``tfds_builder``. All of them import
this module, and ``pipeline`` imports them: one way, no circle."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from spade_tf.config import Config
from spade_tf.data.io import DataError, read_index_map, read_photo
from spade_tf.data.preprocess import preprocess_example
from spade_tf.semantics import invalid_label_ids


def check_labels(label: np.ndarray, config: Config, name: str) -> None:
    """Raises ``DataError`` naming ``name``, the bad ids and the allowed range."""
    bad = invalid_label_ids(label, config.model)
    if bad.size:
        n = config.model.num_classes
        allowed = f"[0, {n})" + (f", {n} or 255 (dontcare)" if config.model.contain_dontcare else "")
        raise DataError(f"{name}: label id(s) {bad[:10].tolist()} out of range; allowed ids are "
                        f"{allowed} (model.num_classes={n})")


def load_example(config: Config, image_src, label_src, inst_src, names, rng, training: bool):
    """Reads, checks and preprocesses one example (numpy), raising ``DataError`` on bad data.

    ``*_src`` are paths or the files' bytes; ``names`` are the file names used in messages.
    """
    max_px = config.data.max_image_pixels
    photo = read_photo(image_src, names[0], max_px)
    label = read_index_map(label_src, names[1], max_px)
    if photo.size != (label.shape[1], label.shape[0]):
        raise DataError(f"size mismatch: photo {names[0]} is {photo.size[0]}x{photo.size[1]}, "
                        f"label {names[1]} is {label.shape[1]}x{label.shape[0]}")
    check_labels(label, config, names[1])
    instance = None
    if config.model.use_instance:
        instance = read_index_map(inst_src, names[2], max_px)
        if instance.shape != label.shape:
            raise DataError(f"size mismatch: instance map {names[2]} is {instance.shape[1]}x"
                            f"{instance.shape[0]}, label {names[1]} is {label.shape[1]}x"
                            f"{label.shape[0]}")
    return preprocess_example(photo, label, instance, config, rng, training)


class Source:
    """Where examples come from.

    Either indexable (folders, synthscapes: ``load(index, rng)``), or a stream of encoded
    examples (prepared TFRecords, TFDS): ``stream(seed)`` gives one epoch of [4] string tensors
    (photo, label, instance bytes and a name), in a seeded order, and ``load(payload, rng)``
    decodes one. Loaders are numpy code that runs in tf.data's threads.
    """

    def __init__(self, count: int, load: Callable, stream: Optional[Callable] = None):
        self.count = count
        self.load = load
        self.stream = stream


def bytes_loader(config: Config, training: bool):
    """``load(payload, rng)`` for [photo, label, instance, name] byte payloads."""
    def load(payload, rng):
        photo, label, inst, name = (bytes(x) for x in payload)
        name = name.decode("utf-8", "replace")
        names = (f"{name} (photo)", f"{name} (label)", f"{name} (instance)")
        return load_example(config, photo, label, inst or None, names, rng, training)
    return load
