"""Datasets: the reference's folder layouts, prepared TFRecords, TFDS and synthscapes."""

from spade_tf.data.io import DataError
from spade_tf.data.pipeline import SkipCounter, build_dataset

__all__ = ["DataError", "SkipCounter", "build_dataset"]
