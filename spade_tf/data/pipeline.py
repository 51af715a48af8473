"""``build_dataset``: the tf.data input pipeline (folders, prepared TFRecords, TFDS, synthscapes).

Every element is a dict of ``label`` int32 [B, H, W], ``instance`` int32 [B, H, W] (when the
config uses instance maps) and ``image`` float32 [B, H, W, 3] in [-1, 1]. The one-hot happens in
the model step, not here: integer maps are up to 150x less host-to-device traffic.

Determinism: the order of each epoch is a permutation seeded by (train.seed, epoch), and each
example's random crop / flip is seeded by (train.seed, its position in the stream), so the stream
is the same on every run and ``skip(n)`` resumes it exactly.
"""

from __future__ import annotations

import logging
import threading
from typing import Optional

import numpy as np
import tensorflow as tf

from spade_tf.config import Config, DatasetPreset
from spade_tf.data import synthscapes
from spade_tf.data.folders import SPLITS, list_examples
from spade_tf.data.io import DataError
from spade_tf.data.preprocess import output_size, preprocess_example
from spade_tf.data.source import Source, load_example

log = logging.getLogger(__name__)


class SkipCounter:
    """Counts files skipped with ``data.skip_bad_files`` and reports them after each pass."""

    def __init__(self):
        self._lock = threading.Lock()
        self.skipped: list[str] = []

    def add(self, message: str) -> None:
        with self._lock:
            self.skipped.append(message)
        log.warning("skipping bad example: %s", message)

    def report(self) -> str:
        with self._lock:
            n, first = len(self.skipped), self.skipped[:5]
        text = f"data: skipped {n} bad example(s)" + (": " + "; ".join(first) if n else "")
        print(text, flush=True)
        return text


def _folder_source(config: Config, split: str, training: bool) -> Source:
    examples = list_examples(config, split)

    def load(i, rng):
        ex = examples[i]
        names = (str(ex.image), str(ex.label), str(ex.instance))
        return load_example(config, ex.image, ex.label, ex.instance, names, rng, training)

    return Source(len(examples), load)


def _synthscapes_source(config: Config, split: str, training: bool) -> Source:
    from PIL import Image

    count = config.data.synth_train_size if split == "train" else config.data.synth_val_size
    w = config.data.load_size
    h = round(w / config.model.aspect_ratio)

    def load(i, rng):
        photo, label, instance = synthscapes.render(synthscapes.example_seed(split, i), h, w)
        return preprocess_example(Image.fromarray(photo), label.astype(np.int32),
                                  instance if config.model.use_instance else None, config, rng,
                                  training)

    return Source(count, load)


def _check_config(config: Config) -> None:
    if config.data.dataset is DatasetPreset.SYNTHSCAPES and \
            config.model.num_classes != synthscapes.NUM_CLASSES:
        raise ValueError(f"synthscapes has {synthscapes.NUM_CLASSES} classes "
                         f"({', '.join(synthscapes.CLASS_NAMES)}); set model.num_classes="
                         f"{synthscapes.NUM_CLASSES} (got {config.model.num_classes})")


def make_source(config: Config, split: str, training: bool, source: Optional[str] = None) -> Source:
    """The example source: ``None`` (the config's dataset), a prepared TFRecord folder, or
    ``tfds:NAME`` (a TFDS dataset built from the same folders)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: allowed values: {', '.join(map(repr, SPLITS))}")
    _check_config(config)
    if source is None:
        if config.data.dataset is DatasetPreset.SYNTHSCAPES:
            return _synthscapes_source(config, split, training)
        return _folder_source(config, split, training)
    if source.startswith("tfds:"):
        from spade_tf.data.tfds_builder import tfds_source

        return tfds_source(config, split, training, source[len("tfds:"):])
    from spade_tf.data.records import records_source

    return records_source(config, split, training, source)


def steps_per_epoch(config: Config, split: str = "train", batch_size: Optional[int] = None,
                    source: Optional[str] = None) -> int:
    """Full batches per training epoch (the reference drops the last partial batch).

    Raises ``DataError`` when the split holds fewer examples than one (global) batch."""
    src = make_source(config, split, True, source)
    batch = batch_size or config.train.batch_size
    if src.count < batch:
        where = config.data.root or config.data.dataset.value
        raise DataError(f"{where}: the {split} split has {src.count} example(s), fewer than one "
                        f"batch of {batch} (train.batch_size={batch}); add data or lower "
                        f"train.batch_size")
    return src.count // batch


def build_dataset(config: Config, split: str = "train", *, batch_size: Optional[int] = None,
                  training: Optional[bool] = None, repeat: bool = False, start_epoch: int = 0,
                  skip_examples: int = 0, input_context: Optional[tf.distribute.InputContext] = None,
                  source: Optional[str] = None, skip_bad: Optional[bool] = None,
                  counter: Optional[SkipCounter] = None) -> tf.data.Dataset:
    """The input pipeline for ``split`` (``train`` or ``val``).

    Args:
        config: the run's config (``data`` section, plus model sizes and ``train.seed``).
        split: ``train`` or ``val``.
        batch_size: global batch size; default ``train.batch_size``. With ``input_context`` it is
            divided into the per-replica size, and each input pipeline reads its own shard.
        training: random crop and flip (default: split == "train"); otherwise a centred crop.
        repeat: cycle through epochs ``start_epoch, start_epoch + 1, ...`` forever.
        start_epoch: the first epoch's index (it seeds that epoch's order).
        skip_examples: examples of the stream to skip (exact mid-epoch resume).
        input_context: from ``strategy.distribute_datasets_from_function``.
        source: ``None`` (folders / synthscapes), a ``prepare-data`` folder, or ``tfds:NAME``.
        skip_bad: skip corrupt / inconsistent examples instead of failing (default:
            ``data.skip_bad_files``); a count is printed at the end of every pass.
        counter: collects the skipped examples (a new one by default).

    Errors about missing or empty folders and unpaired files are raised here, before any model
    is built; errors about a file's contents name the file when the example is read.
    """
    training = (split == "train") if training is None else training
    skip_bad = config.data.skip_bad_files if skip_bad is None else skip_bad
    counter = counter or SkipCounter()
    src = make_source(config, split, training, source)
    if src.count == 0:
        raise DataError(f"the {split} split of {config.data.dataset.value} is empty")
    batch = batch_size or config.train.batch_size
    if input_context is not None:
        batch = input_context.get_per_replica_batch_size(batch)
    hw = output_size(config, training)
    if hw is None and batch > 1:
        raise ValueError(f"data.preprocess={config.data.preprocess.value!r} keeps each image's own "
                         f"size, so examples cannot be batched (batch size {batch}); use a cropping "
                         f"or 'fixed' mode, or batch size 1")
    seed = int(config.train.seed)
    n = src.count

    def permutation(epoch):
        rng = np.random.default_rng([seed, 0x5EED, int(epoch)])
        return (rng.permutation(n) if training else np.arange(n)).astype(np.int64)

    n_epochs = None if repeat else 1
    # In training every epoch is exactly steps_per_epoch full batches (the remainder of each
    # epoch's permutation is dropped), so step s is always (epoch s // spe, batch s % spe).
    per_epoch = n - n % batch if training else n
    if per_epoch == 0:
        raise DataError(f"the {split} split has {n} example(s), fewer than one batch of {batch}")
    if src.stream is None:
        epochs = tf.data.Dataset.range(start_epoch, start_epoch + 1 if not repeat else 2**62)
        ds = epochs.flat_map(lambda e: tf.data.Dataset.from_tensor_slices(
            tf.numpy_function(permutation, [e], tf.int64, stateful=False)).take(per_epoch))
    else:
        # Streams reshuffle each epoch from one seed: the sequence of epochs is still fixed.
        ds = src.stream(seed + start_epoch, training).take(per_epoch).repeat(n_epochs)
    # (position in the stream since epoch 0, example index or encoded example): the position
    # seeds each example's augmentation, so it must not restart when a resume starts later.
    ds = ds.enumerate(start=start_epoch * per_epoch)
    if skip_examples:
        ds = ds.skip(skip_examples)
    if input_context is not None and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    use_inst = config.model.use_instance

    def load(position, payload):
        rng = np.random.default_rng([seed, int(position)])
        try:
            photo, label, inst = src.load(payload if src.stream else int(payload), rng)
            ok = True
        except DataError as e:
            if not skip_bad:
                raise
            counter.add(str(e))
            h, w = hw or (1, 1)
            photo, label, inst, ok = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.int32), None, False
        if inst is None:
            inst = np.zeros_like(label)
        return photo, label.astype(np.int32), inst.astype(np.int32), np.bool_(ok)

    def tf_load(position, index):
        photo, label, inst, ok = tf.numpy_function(
            load, [position, index], [tf.uint8, tf.int32, tf.int32, tf.bool], stateful=False)
        h, w = hw or (None, None)
        photo.set_shape([h, w, 3])
        label.set_shape([h, w])
        inst.set_shape([h, w])
        ok.set_shape([])
        out = {"label": label, "image": tf.cast(photo, tf.float32) / 127.5 - 1.0}
        if use_inst:
            out["instance"] = inst
        return out, ok

    ds = ds.map(tf_load, num_parallel_calls=config.data.parallel_calls, deterministic=True)
    if skip_bad:
        ds = ds.filter(lambda ex, ok: ok)
    ds = ds.map(lambda ex, ok: ex)
    if skip_bad and not repeat:
        # A sentinel after the pass prints how many examples were skipped, then is dropped.
        def report():
            counter.report()
            return np.bool_(False)
        sentinel = tf.data.Dataset.range(1).map(
            lambda _: tf.numpy_function(report, [], tf.bool, stateful=True))
        ds = ds.map(lambda ex: (ex, True)).concatenate(sentinel.map(lambda b: (
            _empty_example(hw, use_inst), b))).filter(lambda ex, keep: keep).map(lambda ex, k: ex)
    ds = ds.batch(batch, drop_remainder=training)
    options = tf.data.Options()
    # Data sharding under MultiWorkerMirroredStrategy: the stream is not made of files, so FILE
    # sharding cannot apply, and OFF would feed every worker the same data.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _empty_example(hw, use_inst):
    h, w = hw or (1, 1)
    out = {"label": tf.zeros([h, w], tf.int32), "image": tf.zeros([h, w, 3], tf.float32)}
    if use_inst:
        out["instance"] = tf.zeros([h, w], tf.int32)
    if hw is None:  # keep the element spec's unknown sizes
        out = {k: tf.reshape(v, tf.shape(v)) for k, v in out.items()}
    return out
