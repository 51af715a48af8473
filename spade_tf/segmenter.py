"""A small built-in semantic segmenter for the paper's segmentation-accuracy metric.

The paper scores generated images by running an off-the-shelf segmenter trained on *real*
images (DRN, UperNet, DeepLab) and comparing its prediction with the input label map. Those
models and their weights cannot be downloaded here, and none exists for synthscapes, so this
module trains a compact fully convolutional network on the real images of a dataset
(``spade-tf train-segmenter``). Its mIoU on real validation images is the ceiling that a
perfect generator could reach.

Users with their own exported segmenter pass a SavedModel instead (see
``spade_tf.evaluation.load_segmenter``).

Saved as a folder: ``segmenter.keras`` (the model), ``segmenter.json`` (classes, input size,
the training summary and its ceiling on real validation images) and ``config.yaml``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from spade_tf.config import Config, save_config
from spade_tf.fileio import atomic_dir

MODEL_FILE = "segmenter.keras"
INFO_FILE = "segmenter.json"


def build_segmenter(num_classes: int, width: int = 16, name: str = "segmenter") -> keras.Model:
    """A small encoder-decoder: 3 resolutions (1, 1/2, 1/4), a dilated context block at 1/4,
    bilinear upsampling with skip connections, per-pixel logits. Input: NHWC RGB in [-1, 1] of
    any size divisible by 4. The second output is the global-average-pooled context features
    (4 * width channels), used as a dataset-specific feature extractor for KID/FID.

    Args:
        num_classes: logit channels.
        width: channels at full resolution (x2, x4 at the lower ones).
        name: the model's name.
    """
    def block(x, filters, strides=1, dilation=1, tag=""):
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", dilation_rate=dilation,
                                use_bias=False, name=f"{tag}_conv")(x)
        # momentum 0.9: the running statistics must settle within a short training run.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"{tag}_bn")(x)
        return keras.layers.ReLU(name=f"{tag}_relu")(x)

    inp = keras.Input((None, None, 3), name="image")
    s1 = block(block(inp, width, tag="s1a"), width, tag="s1b")
    s2 = block(block(s1, 2 * width, 2, tag="s2a"), 2 * width, tag="s2b")
    s4 = block(s2, 4 * width, 2, tag="s4a")
    for i, d in enumerate((2, 4, 8)):
        s4 = keras.layers.Add(name=f"ctx{i}_add")([s4, block(s4, 4 * width, dilation=d, tag=f"ctx{i}")])
    features = keras.layers.GlobalAveragePooling2D(name="features")(s4)
    up2 = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up2")(s4)
    x = block(keras.layers.Concatenate(name="cat2")([up2, s2]), 2 * width, tag="d2")
    up1 = keras.layers.UpSampling2D(2, interpolation="bilinear", name="up1")(x)
    x = block(keras.layers.Concatenate(name="cat1")([up1, s1]), width, tag="d1")
    logits = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    return keras.Model(inp, [logits, features], name=name)


def _labels_for_loss(label, num_classes):
    """Labels outside [0, num_classes) (dontcare 255) get weight 0 in the loss."""
    valid = tf.logical_and(label >= 0, label < num_classes)
    return tf.where(valid, label, 0), tf.cast(valid, tf.float32)


def confusion_on(model, dataset, num_classes: int, limit: int | None = None) -> np.ndarray:
    """Confusion matrix of ``model`` on the real images of ``dataset`` (batches of the pipeline)."""
    from spade_tf.metrics import confusion_matrix

    conf = np.zeros((num_classes, num_classes), np.int64)
    seen = 0
    for batch in dataset:
        logits = model(batch["image"], training=False)[0]
        conf += confusion_matrix(np.argmax(logits, -1), batch["label"].numpy(), num_classes)
        seen += int(batch["label"].shape[0])
        if limit is not None and seen >= limit:
            break
    return conf


def train_segmenter(config: Config, out: str | os.PathLike, *, steps: int = 1500,
                    batch_size: int = 8, width: int = 16, lr: float = 2e-3, seed: int = 0,
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Trains the built-in segmenter on the *real* training images of ``config``'s dataset and
    writes it to the folder ``out`` (atomically). Returns its info dict, with the ceiling: the
    segmenter's own pixel accuracy and mIoU on the real validation images.

    Training uses the same pipeline as GAN training (crop, flip), Adam with a cosine decay, and
    a per-pixel cross-entropy that ignores dontcare pixels.
    """
    from spade_tf.progress import progress as progress_bar

    from spade_tf.data import build_dataset
    from spade_tf.metrics import segmentation_scores

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    keras.utils.set_random_seed(seed)
    num_classes = config.model.num_classes
    model = build_segmenter(num_classes, width)
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps)
    optimizer = keras.optimizers.Adam(schedule)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(image, label):
        target, weight = _labels_for_loss(label, num_classes)
        with tf.GradientTape() as tape:
            logits = model(image, training=True)[0]
            loss = loss_fn(target, logits, sample_weight=weight)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    train = build_dataset(config, "train", batch_size=batch_size, repeat=True)
    start, losses = time.time(), []
    bar = progress_bar(train.take(steps), total=steps, desc="segmenter", unit="step",
                       enabled=progress)
    for batch in bar:
        losses.append(float(step(batch["image"], batch["label"])))
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    val = build_dataset(config, "val", batch_size=batch_size, training=False)
    scores = segmentation_scores(confusion_on(model, val, num_classes))
    info = {
        "classes": num_classes, "width": width, "steps": steps, "batch_size": batch_size, "lr": lr,
        "seed": seed, "crop_size": config.model.crop_size, "dataset": config.data.dataset.value,
        "final_loss": float(np.mean(losses[-50:])), "train_seconds": round(time.time() - start, 1),
        "ceiling_on_real_val": scores,
    }
    with atomic_dir(out, overwrite) as tmp:
        model.save(tmp / MODEL_FILE)
        save_config(config, tmp / "config.yaml")
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def load_builtin_segmenter(path: str | os.PathLike) -> tuple[keras.Model, dict]:
    """(model, info) from a folder written by ``train_segmenter``."""
    path = Path(path)
    if not (path / MODEL_FILE).is_file() or not (path / INFO_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a built-in segmenter folder (expected {MODEL_FILE} "
                                f"and {INFO_FILE}; make one with `spade-tf train-segmenter`)")
    info = json.loads((path / INFO_FILE).read_text())
    return keras.saving.load_model(path / MODEL_FILE, compile=False), info
