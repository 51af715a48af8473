"""A TensorFlow Datasets builder over the reference's folder layouts (offline, ``manual_dir``).

    import spade_tf.data.tfds_builder  # registers "spade_folders"
    ds = tfds.load("spade_folders/coco_stuff", split="train", data_dir=...,
                   download_and_prepare_kwargs={"download_config":
                       tfds.download.DownloadConfig(manual_dir="/data/cocostuff")})

Nothing is downloaded: the dataset is read from ``manual_dir`` in the preset's layout (see
``spade_tf.data.folders``), with the same pairing checks. Photos are stored as their original
bytes; label and instance maps as 16-bit PNGs (Cityscapes instance ids above 255 survive).
``build_dataset(config, split, source="tfds:spade_folders/coco_stuff")`` reads it back through
the same decoding and checks as the folders.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from spade_tf.config import Config, DatasetPreset, load_config
from spade_tf.data.folders import list_examples
from spade_tf.data.io import DataError, read_index_map

PRESETS = ("ade20k", "cityscapes", "coco_stuff", "facades")


def _preset_config(preset: str, root: str) -> Config:
    return load_config(preset, [f"data.root={root}"])


def _uint16_map(path, max_pixels) -> np.ndarray:
    arr = read_index_map(path, str(path), max_pixels)
    if arr.min() < 0 or arr.max() > 65535:
        raise DataError(f"{path}: ids outside 0..65535 cannot be stored as a 16-bit PNG")
    return arr.astype(np.uint16)[..., None]


class SpadeFolders(tfds.core.GeneratorBasedBuilder):
    """SPADE's datasets (ADE20K, Cityscapes, COCO-Stuff, Facades) from local folders."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=p, description=f"{p} in its official layout")
                       for p in PRESETS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the dataset in its official layout in manual_dir (see spade_tf.data.folders): "
        "ADEChallengeData2016/ for ade20k, the folder holding leftImg8bit/ and gtFine/ for "
        "cityscapes, the folder holding {train,val}_{img,label,inst}/ for coco_stuff.")

    def _info(self) -> tfds.core.DatasetInfo:
        label = tfds.features.Image(shape=(None, None, 1), dtype=np.uint16, encoding_format="png")
        features = {"image": tfds.features.Image(shape=(None, None, 3)), "label": label,
                    "stem": tfds.features.Text()}
        if self.builder_config.name in ("cityscapes", "coco_stuff"):
            features["instance"] = tfds.features.Image(shape=(None, None, 1), dtype=np.uint16,
                                                       encoding_format="png")
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                     description=__doc__)

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        config = _preset_config(self.builder_config.name, root)
        return {split: self._generate_examples(config, split) for split in ("train", "val")}

    def _generate_examples(self, config: Config, split: str):
        max_px = config.data.max_image_pixels
        for ex in list_examples(config, split):
            record = {"image": os.fspath(ex.image), "label": _uint16_map(ex.label, max_px),
                      "stem": ex.stem}
            if ex.instance is not None:
                record["instance"] = _uint16_map(ex.instance, max_px)
            yield ex.stem, record


def tfds_source(config: Config, split: str, training: bool, name: str):
    """A stream source over ``tfds:NAME`` (built from ``data.root`` on first use if needed)."""
    import tensorflow as tf

    from spade_tf.data.source import Source, bytes_loader

    data_dir = os.environ.get("TFDS_DATA_DIR")
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not config.data.root:
            raise DataError(f"TFDS dataset {name} is not prepared and data.root is not set")
        if config.data.dataset is DatasetPreset.CUSTOM:
            raise DataError("the TFDS builder covers ade20k, cityscapes, coco_stuff and facades")
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=config.data.root))
    count = builder.info.splits[split].num_examples
    has_inst = "instance" in builder.info.features
    if config.model.use_instance and not has_inst:
        raise DataError(f"TFDS dataset {name} has no instance maps, but model.use_instance=true")
    decoders = {k: tfds.decode.SkipDecoding() for k in ("image", "label", "instance")
                if k in builder.info.features}

    def stream(seed: int, shuffle: bool):
        ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
        if shuffle:
            ds = ds.shuffle(min(count, 2048), seed=seed, reshuffle_each_iteration=True)
        return ds.map(lambda ex: tf.stack([ex["image"], ex["label"],
                                           ex["instance"] if has_inst else tf.constant(b""),
                                           ex["stem"]]))

    return Source(count, bytes_loader(config, training), stream=stream)
