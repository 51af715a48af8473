"""``spade-tf prepare-data``: a folder dataset packed into sharded TFRecord files.

Each record holds the original files' bytes (no re-encoding, so nothing is lost) plus the stem;
decoding and every check happen at read time, exactly as for folders. ``meta.json`` records the
preset, split, count and shard files. Shards make FILE sharding possible under
``MultiWorkerMirroredStrategy`` and turn many small reads into a few large ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import tensorflow as tf

from spade_tf.config import Config, DatasetPreset
from spade_tf.data.folders import list_examples
from spade_tf.data.io import DataError, read_bytes
from spade_tf.fileio import atomic_dir

META = "meta.json"
_FEATURES = {k: tf.io.FixedLenFeature([], tf.string, default_value=b"")
             for k in ("image", "label", "instance", "stem")}


def _bytes_feature(b: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))


def prepare_data(config: Config, split: str, out_dir: str | os.PathLike, num_shards: int | None = None,
                 progress: bool = True, overwrite: bool = False) -> Path:
    """Writes ``out_dir/{split}-XXXXX-of-YYYYY.tfrecord`` and ``meta.json``, atomically (a
    temporary folder renamed into place; an existing split folder is replaced only with
    ``overwrite``)."""
    from spade_tf.progress import progress as progress_bar

    if config.data.dataset is DatasetPreset.SYNTHSCAPES:
        raise ValueError("synthscapes is generated on the fly; write it to folders with "
                         "'spade-tf synthscapes' first if you want files")
    examples = list_examples(config, split)
    if not examples:
        raise DataError(f"the {split} split is empty")
    num_shards = num_shards or max(1, min(16, len(examples) // 64))
    out = Path(out_dir) / split
    with atomic_dir(out, overwrite) as tmp:
        names = [f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]
        writers = [tf.io.TFRecordWriter(str(tmp / n)) for n in names]
        for i, ex in enumerate(progress_bar(examples, desc=f"prepare {split}", unit="ex",
                                            enabled=progress)):
            feats = {"image": read_bytes(ex.image), "label": read_bytes(ex.label),
                     "instance": read_bytes(ex.instance) if ex.instance else b"",
                     "stem": ex.stem.encode()}
            record = tf.train.Example(features=tf.train.Features(
                feature={k: _bytes_feature(v) for k, v in feats.items()}))
            writers[i % num_shards].write(record.SerializeToString())
        for w in writers:
            w.close()
        meta = {"dataset": config.data.dataset.value, "split": split, "count": len(examples),
                "files": names, "use_instance": config.model.use_instance,
                "num_classes": config.model.num_classes}
        (tmp / META).write_text(json.dumps(meta, indent=1))
    return out


def records_source(config: Config, split: str, training: bool, folder: str):
    from spade_tf.data.source import Source, bytes_loader

    root = Path(folder) / split
    meta_path = root / META
    if not meta_path.is_file():
        raise DataError(f"{folder}: no prepared {split} split ({meta_path} not found); run "
                        f"'spade-tf prepare-data' first")
    meta = json.loads(meta_path.read_text())
    if meta.get("use_instance") != config.model.use_instance:
        raise DataError(f"{meta_path}: prepared with use_instance={meta.get('use_instance')}, "
                        f"the config has model.use_instance={config.model.use_instance}")
    files = [str(root / f) for f in meta["files"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise DataError(f"{meta_path}: shard file(s) missing: {', '.join(missing)}")

    def parse(serialized):
        ex = tf.io.parse_single_example(serialized, _FEATURES)
        return tf.stack([ex["image"], ex["label"], ex["instance"], ex["stem"]])

    def stream(seed: int, shuffle: bool):
        ds = tf.data.Dataset.from_tensor_slices(files)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shuffle:
            ds = ds.shuffle(min(meta["count"], 2048), seed=seed, reshuffle_each_iteration=True)
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return Source(meta["count"], bytes_loader(config, training), stream=stream)
