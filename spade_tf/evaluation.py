"""Evaluation: FID / KID and the paper's segmentation scores, as code (``spade-tf evaluate``).

Protocol (what the official repository never published as code):

- **Images.** The validation split through the evaluation preprocessing (centred crop at the
  model's size, no flip). Generated images come from the generator in inference mode (running
  BN statistics, stored u/v); VAE models take z = mu of the real image's encoding.
- **Reference set.** The real images of the same validation examples, preprocessed the same way.
- **FID / KID features.** InceptionV3 (the Keras architecture) with ImageNet weights read from a
  local file, 2048-d global-average-pool features. Images go from [-1, 1] float32 to 299 x 299 by
  bilinear resizing (``tf.image.resize``, antialias off), and stay in [-1, 1], the range Keras'
  InceptionV3 expects. Statistics in float64. FID's matrix square root uses the eigenvalues of
  the symmetric S1^(1/2) S2 S1^(1/2) (``spade_tf.metrics``), so no imaginary parts arise. KID is
  the unbiased polynomial-kernel MMD^2, mean and standard deviation over random subsets.
- **Dataset-specific extractor.** Without Inception weights, a stand-in can be named (for
  synthscapes: the built-in segmenter's pooled context features). The report always names the
  extractor; numbers from different extractors are not comparable.
- **Segmentation.** A segmenter trained on real images predicts classes on the generated
  images; pixel accuracy, mean class accuracy, per-class IoU and mIoU against the *input* label
  map, dontcare (255 and ids outside [0, num_classes)) ignored. The same segmenter on the real
  images gives the ceiling.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from spade_tf.config import Config
from spade_tf.fileio import atomic_write_text

INCEPTION_SIZE = 299
INCEPTION_FILE_HINT = (
    "FID/KID with InceptionV3 need its ImageNet weights as a local file, and nothing is downloaded "
    "here. On a machine with internet access, run\n"
    "  python -c \"import keras; keras.applications.InceptionV3(include_top=False, weights='imagenet')\"\n"
    "which stores ~/.keras/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5; copy "
    "that file here and pass --inception-weights PATH. Without it, use a dataset-specific "
    "extractor (--extractor segmenter, the built-in one for synthscapes).")


# --------------------------------------------------------------------------- feature extractors


@dataclass
class FeatureExtractor:
    """A named function from float32 NHWC images in [-1, 1] to [N, D] features."""

    name: str
    fn: Callable

    def __call__(self, images) -> np.ndarray:
        return np.asarray(self.fn(tf.convert_to_tensor(images, tf.float32)), np.float64)


def inception_extractor(weights: Optional[str], *, random_init: bool = False,
                        seed: int = 0) -> FeatureExtractor:
    """InceptionV3 pool features (2048-d). ``weights`` is a local Keras weights file (the
    ``..._notop.h5`` Keras distributes, or a ``.weights.h5``). ``random_init`` builds it with
    random weights instead (tests only: the numbers mean nothing and the name says so)."""
    import keras

    if weights is None and not random_init:
        raise FileNotFoundError(INCEPTION_FILE_HINT)
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"--inception-weights {weights}: no such file.\n{INCEPTION_FILE_HINT}")
    if random_init:
        keras.utils.set_random_seed(seed)
    net = keras.applications.InceptionV3(include_top=False, weights=None, pooling="avg",
                                         input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    if weights is not None:
        try:
            net.load_weights(weights)
        except (ValueError, OSError, KeyError) as e:
            raise ValueError(f"--inception-weights {weights}: not InceptionV3 (no top) weights: "
                             f"{type(e).__name__}: {e}") from None
        name = f"InceptionV3 pool 2048-d ({Path(weights).name})"
    else:
        name = "InceptionV3 pool 2048-d, RANDOM weights (test only, not comparable)"

    def fn(images):
        x = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE), method="bilinear",
                            antialias=False)
        return net(x, training=False)

    return FeatureExtractor(name, fn)


def savedmodel_extractor(path: str) -> FeatureExtractor:
    """A user's SavedModel whose ``serving_default`` takes float32 NHWC images in [-1, 1] (one
    input) and returns [N, D] features (the first output)."""
    fn = _savedmodel_fn(path, "extractor")
    return FeatureExtractor(f"SavedModel {path}", lambda x: _first(fn(x)))


# --------------------------------------------------------------------------- segmenters


@dataclass
class Segmenter:
    """A named function from float32 NHWC images in [-1, 1] to [N, H', W', C] logits."""

    name: str
    fn: Callable
    num_classes: int
    info: dict

    def predict(self, images) -> np.ndarray:
        """Class ids [N, H, W], logits resized (bilinear) to the images' size if needed."""
        images = tf.convert_to_tensor(images, tf.float32)
        logits = self.fn(images)
        if tuple(logits.shape[1:3]) != tuple(images.shape[1:3]):
            logits = tf.image.resize(logits, images.shape[1:3], method="bilinear")
        if logits.shape[-1] != self.num_classes:
            raise ValueError(f"segmenter {self.name}: {logits.shape[-1]} logit channels, but the "
                             f"model has {self.num_classes} classes")
        return np.argmax(logits.numpy(), axis=-1)


def _savedmodel_fn(path, what):
    path = Path(path)
    if not (path / "saved_model.pb").is_file():
        raise FileNotFoundError(f"--{what} {path}: not a SavedModel folder (no saved_model.pb)")
    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise ValueError(f"--{what} {path}: no serving_default signature "
                         f"(it has: {', '.join(loaded.signatures) or 'none'})")
    sig = loaded.signatures["serving_default"]
    inputs = list(sig.structured_input_signature[1])
    if len(inputs) != 1:
        raise ValueError(f"--{what} {path}: serving_default must take one image input, takes {inputs}")
    return lambda x: sig(**{inputs[0]: x})


def _first(outputs):
    return outputs[sorted(outputs)[0]] if isinstance(outputs, dict) else outputs


def load_segmenter(path: str, num_classes: int) -> Segmenter:
    """A built-in segmenter folder (``spade-tf train-segmenter``) or a SavedModel whose
    ``serving_default`` maps float32 NHWC images in [-1, 1] to per-class logits (first output,
    any resolution: resized bilinearly). DRN / UperNet / DeepLab exports need a wrapper that
    applies their own normalization inside the SavedModel."""
    from spade_tf.segmenter import INFO_FILE, load_builtin_segmenter

    if (Path(path) / INFO_FILE).is_file():
        model, info = load_builtin_segmenter(path)
        if info["classes"] != num_classes:
            raise ValueError(f"segmenter {path}: trained for {info['classes']} classes, the model "
                             f"has {num_classes}")
        return Segmenter(f"built-in ({path})", lambda x: model(x, training=False)[0], num_classes, info)
    fn = _savedmodel_fn(path, "segmenter")
    return Segmenter(f"SavedModel {path}", lambda x: _first(fn(x)), num_classes, {})


def segmenter_features(path: str) -> FeatureExtractor:
    """The built-in segmenter's pooled context features: the synthscapes stand-in extractor."""
    from spade_tf.segmenter import load_builtin_segmenter

    model, info = load_builtin_segmenter(path)
    width = 4 * info["width"]
    return FeatureExtractor(f"built-in segmenter context features {width}-d ({path})",
                            lambda x: model(x, training=False)[1])


# --------------------------------------------------------------------------- evaluate


def generate_split(networks, config: Config, *, split: str = "val", batch_size: int = 8,
                   max_images: Optional[int] = None, progress: bool = True):
    """Yields (label, generated, real) batches for ``split`` (inference mode, numpy), from
    the moving average of G when ``networks`` has one (``spade_tf.ema.inference_generator``).
    OASIS' noise for the i-th image is seed i's (``latent_from_seed``): reruns score the same
    images."""
    from spade_tf.progress import progress as progress_bar

    from spade_tf.config import Family
    from spade_tf.data import build_dataset
    from spade_tf.ema import inference_generator
    from spade_tf.latents import latent_from_seed
    from spade_tf.semantics import to_semantics

    generator, _ = inference_generator(networks, config)
    oasis = config.model.family is Family.OASIS and config.model.noise_3d
    index = 0

    ds = build_dataset(config, split, batch_size=batch_size, training=False)
    total = None
    if max_images is not None:
        ds = ds.unbatch().take(max_images).batch(batch_size)
        total = -(-max_images // batch_size)
    for batch in progress_bar(ds, total=total, desc=f"generating {split}", unit="batch", enabled=progress):
        sem = to_semantics(batch["label"], batch.get("instance"), config=config)
        n = int(batch["label"].shape[0])
        if oasis:
            noise = tf.stack([latent_from_seed(index + i, config.model.z_dim) for i in range(n)])
            fake = generator(sem, noise=noise, training=False)
        else:
            z = None
            if networks.encoder is not None:
                z, _ = networks.encoder(batch["image"], training=False)  # the mean latent
            fake = generator(sem, z=z, training=False)
        index += n
        yield batch["label"].numpy(), fake.numpy(), batch["image"].numpy()


def evaluate(checkpoint: str | os.PathLike, out: str | os.PathLike, *, segmenter: Optional[str] = None,
             extractor: Optional[str] = None, inception_weights: Optional[str] = None,
             overrides=(), split: str = "val", batch_size: int = 8, max_images: Optional[int] = None,
             kid_subsets: int = 100, kid_subset_size: int = 1000, grid_rows: int = 8,
             progress: bool = True, weights: str = "auto") -> dict:
    """Generates images for ``split`` from the checkpoint and writes ``metrics.json``,
    ``report.html`` and ``report.png`` (label | generated | real rows) to ``out``.

    Args:
        checkpoint: a training run folder or a checkpoint folder.
        out: output folder (created).
        segmenter: a built-in segmenter folder or a segmentation SavedModel; default: the
            ``segmenter/`` a packed model ships (``spade-tf pack``), else none, and the
            segmentation scores are left out (the report says why).
        extractor: ``inception`` (needs ``inception_weights``), ``segmenter`` (the built-in
            segmenter's features), a SavedModel path, or a ``FeatureExtractor``. Default: ``inception`` when
            ``inception_weights`` is given, else ``segmenter`` when a built-in segmenter is,
            else none (FID/KID left out, the report says why).
        inception_weights: local InceptionV3 weights file.
        overrides: ``key=value`` config overrides (e.g. ``data.root=...`` on another machine).
        split, batch_size, max_images: what to generate.
        kid_subsets, kid_subset_size: KID's subsets (the size is capped at half the images).
        grid_rows: examples in the picture grid.
        weights: ``auto`` (the moving average of G when the checkpoint has one, else G),
            ``generator`` or ``ema`` (to compare the two on one run).

    Returns the metrics dict (as written to metrics.json).
    """
    from spade_tf import metrics
    from spade_tf.config import apply_overrides, config_to_dict
    from spade_tf.data.labels import colorize
    from spade_tf.data.preview import rows_image, save_png, to_uint8
    from spade_tf.networks import load_networks
    from PIL import Image

    if weights not in ("auto", "generator", "ema"):
        raise ValueError(f"weights={weights!r}: choose auto, generator or ema")
    from spade_tf.pretrained import resolve

    if segmenter is None and (resolve(checkpoint) / "segmenter" / "segmenter.json").is_file():
        # a packed model (spade-tf pack) ships the segmenter that scored its card
        segmenter = str(resolve(checkpoint) / "segmenter")
    networks, config = load_networks(checkpoint, generator=True, discriminator=False,
                                     ema_generator=True if weights == "ema" else None)
    if weights == "generator":
        networks.ema_generator = None
    config = apply_overrides(config, overrides)
    n_cls = config.model.num_classes
    seg = load_segmenter(segmenter, n_cls) if segmenter else None
    if extractor is None:
        if inception_weights:
            extractor = "inception"
        elif seg is not None and seg.info:
            extractor = "segmenter"
    feat = extractor if isinstance(extractor, FeatureExtractor) else None
    if extractor == "inception":
        feat = inception_extractor(inception_weights)
    elif extractor == "segmenter":
        if seg is None or not seg.info:
            raise ValueError("--extractor segmenter needs --segmenter pointing at a built-in "
                             "segmenter folder (spade-tf train-segmenter)")
        feat = segmenter_features(segmenter)
    elif extractor is not None and feat is None:
        feat = savedmodel_extractor(extractor)

    conf_fake = np.zeros((n_cls, n_cls), np.int64)
    conf_real = np.zeros((n_cls, n_cls), np.int64)
    f_fake, f_real, grid = [], [], []
    count = 0
    for label, fake, real in generate_split(networks, config, split=split, batch_size=batch_size,
                                            max_images=max_images, progress=progress):
        count += len(label)
        if seg is not None:
            conf_fake += metrics.confusion_matrix(seg.predict(fake), label, n_cls)
            conf_real += metrics.confusion_matrix(seg.predict(real), label, n_cls)
        if feat is not None:
            f_fake.append(feat(fake))
            f_real.append(feat(real))
        for lab, f, r in zip(label, fake, real):
            if len(grid) < grid_rows:
                grid.append([colorize(lab, config), to_uint8(f), to_uint8(r)])
    if count == 0:
        raise ValueError(f"the {split} split is empty: nothing to evaluate")

    result = {"checkpoint": str(checkpoint), "split": split, "images": count,
              "generator": config.model.generator.value,
              "weights": ("ema_generator (the moving average)" if networks.ema_generator is not None
                          else "generator"), "notes": []}
    if seg is not None:
        gen_scores, real_scores = metrics.segmentation_scores(conf_fake), metrics.segmentation_scores(conf_real)
        result["segmenter"] = seg.name
        result["segmentation"] = {"generated": gen_scores, "real_ceiling": real_scores}
    else:
        result["notes"].append("no segmenter given (--segmenter): segmentation scores left out")
    if feat is not None:
        a, b = np.concatenate(f_fake), np.concatenate(f_real)
        # Subsets of at most half the images, so that they differ and the std means something
        # (the usual 1000 needs a few thousand images).
        size = max(2, min(kid_subset_size, len(a) // 2))
        kid_mean, kid_std = metrics.kid(a, b, subsets=kid_subsets, subset_size=size)
        result["extractor"] = feat.name
        result["kid"] = {"mean": kid_mean, "std": kid_std, "subsets": kid_subsets, "subset_size": size}
        result["fid"] = metrics.fid(a, b) if len(a) >= 2 else None
        if len(a) < a.shape[1]:
            result["notes"].append(f"FID from {len(a)} images with {a.shape[1]}-d features: the "
                                   "covariances are singular and FID is strongly biased at this "
                                   "size; prefer KID")
    else:
        result["notes"].append("no feature extractor (--inception-weights or --extractor): "
                               "FID/KID left out. " + INCEPTION_FILE_HINT.split("\n")[0])
    result["config"] = config_to_dict(config)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_png(Image.fromarray(rows_image(grid)), out / "report.png")
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "report.html", report_html(result, config))
    return result


def _class_names(config: Config) -> list[str]:
    from spade_tf.data.labels import class_names

    return list(class_names(config.data.dataset, config.model.num_classes))


def report_html(result: dict, config: Config) -> str:
    """A one-page report: the metric table, per-class IoU, and the picture grid."""
    e = html.escape
    rows = [("images", result["images"]), ("generator", result["generator"])]
    if "segmentation" in result:
        g, r = result["segmentation"]["generated"], result["segmentation"]["real_ceiling"]
        rows += [("segmenter", result["segmenter"]),
                 ("mIoU (generated / real ceiling)", f"{g['miou']:.4f} / {r['miou']:.4f}"),
                 ("pixel accuracy (generated / real)", f"{g['pixel_accuracy']:.4f} / {r['pixel_accuracy']:.4f}")]
    if "kid" in result:
        rows += [("feature extractor", result["extractor"]),
                 ("KID (mean ± std over subsets)", f"{result['kid']['mean']:.5f} ± {result['kid']['std']:.5f}"),
                 ("FID", "-" if result["fid"] is None else f"{result['fid']:.3f}")]
    table = "\n".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    per_class = ""
    if "segmentation" in result:
        names = _class_names(config)
        g = result["segmentation"]["generated"]["per_class_iou"]
        r = result["segmentation"]["real_ceiling"]["per_class_iou"]
        fmt = (lambda v: "-" if v is None or v != v else f"{v:.3f}")
        per_class = "<h2>Per-class IoU</h2><table><tr><th>class</th><th>generated</th><th>real</th></tr>" + "".join(
            f"<tr><td>{e(n)}</td><td>{fmt(a)}</td><td>{fmt(b)}</td></tr>" for n, a, b in zip(names, g, r)) + "</table>"
    notes = "".join(f"<li>{e(n)}</li>" for n in result["notes"])
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>spade-tf evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style>
</head><body><h1>spade-tf evaluation: {e(result['checkpoint'])} ({e(result['split'])})</h1>
<table>{table}</table>{per_class}
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
<h2>Samples: label | generated | real</h2><img src="report.png" alt="label, generated, real">
</body></html>
"""
