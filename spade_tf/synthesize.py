"""``spade-tf synthesize``: label maps in, images out, from a checkpoint, a SavedModel or a
``.tflite`` file, with the same input checks for all three.

Writes one PNG per label map and sample (``<stem>.png`` or ``<stem>_s<k>.png``) and a sheet
(``sheet.png``): colourised label | sample 1 | sample 2 | ...
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spade_tf.config import Config, Family
from spade_tf.data.io import DataError, read_index_map, read_photo
from spade_tf.semantics import invalid_label_ids


class Synthesizer:
    """A loaded model of any of the three kinds. ``kind`` is checkpoint, saved_model or tflite.

    Call it with int label maps [N, H, W] (and instance maps, latents); it returns uint8
    [N, H, W, 3]. Inputs are checked here, before any backend sees them.
    """

    def __init__(self, kind: str, config: Config, height: int, width: int, source: str):
        self.kind, self.config, self.height, self.width, self.source = kind, config, height, width, source

    @property
    def use_vae(self) -> bool:
        return self.config.model.use_vae

    @property
    def has_latent(self) -> bool:
        """Whether a label map has many images: a VAE's latent or OASIS' noise (``z``)."""
        return self.config.model.has_latent

    @property
    def oasis(self) -> bool:
        return self.config.model.family is Family.OASIS

    @property
    def has_style(self) -> bool:
        """Whether ``style`` works: a VAE model's encoder is here."""
        return False

    @classmethod
    def for_config(cls, config: Config, source: str = "config") -> "Synthesizer":
        """The input checks of a model with ``config``, without the model (``check`` only)."""
        h, w = config.model.output_hw
        return cls("config", config, h, w, source)

    def check_label(self, label, name="label") -> np.ndarray:
        """int32 [N, H, W] label maps, checked (dtype, shape, this model's size, ids)."""
        label = np.asarray(label)
        if not np.issubdtype(label.dtype, np.integer):
            raise DataError(f"{name}: label maps must hold integer class ids, got dtype {label.dtype}")
        if label.ndim != 3 or label.shape[0] == 0:
            raise DataError(f"{name}: expected a non-empty batch [N, H, W] of label maps, got shape "
                            f"{label.shape}")
        if label.shape[1:] != (self.height, self.width):
            raise DataError(f"{name}: label map is {label.shape[1]}x{label.shape[2]} (HxW), this "
                            f"model takes {self.height}x{self.width}; resize it with nearest "
                            f"neighbour first")
        bad = invalid_label_ids(label, self.config.model)
        if bad.size:
            m = self.config.model
            raise DataError(f"{name}: label id(s) out of range: {bad[:10].tolist()}; allowed 0.."
                            f"{m.num_classes - 1}" + (f", {m.num_classes} or 255 (dontcare)"
                                                      if m.contain_dontcare else ""))
        return label.astype(np.int32)

    def check(self, label, instance=None, name="label"):
        """(label, instance) batches, checked; the instance maps where the model takes them."""
        label = self.check_label(label, name)
        if self.config.model.use_instance:
            if instance is None:
                raise DataError(f"{name}: this model uses instance maps; give --instance")
            instance = np.asarray(instance)
            if instance.shape != label.shape:
                raise DataError(f"{name}: instance map shape {instance.shape} differs from the "
                                f"label map's {label.shape}")
        return label, (None if instance is None else np.asarray(instance, np.int32))

    def z(self, n: int, seed: int) -> np.ndarray | None:
        """n latents (VAE) or noise vectors (OASIS) for ``seed``: what the export's ``seed``
        and ``png`` signatures make of seeds seed, seed + 1, ... (``latent_from_seed``), so a
        seed gives the same image from a checkpoint, a SavedModel and a ``.tflite``."""
        if not self.has_latent:
            return None
        from spade_tf.latents import latent_from_seed

        return np.stack([latent_from_seed(seed + i, self.config.model.z_dim).numpy()
                         for i in range(n)]).astype(np.float32)

    def __call__(self, label, instance=None, z=None, name="label") -> np.ndarray:
        """``z``: the VAE's latents [N, Z], or OASIS' noise: vectors [N, Z] or maps
        [N, H, W, Z] (different noise per region); default: seed 0's."""
        label, instance = self.check(label, instance, name)
        if self.has_latent and z is None:
            z = self.z(len(label), 0) if not self.oasis else np.repeat(self.z(1, 0), len(label), 0)
        if z is not None:
            z = np.asarray(z, np.float32)
            zd = self.config.model.z_dim
            ok = (z.shape == (len(label), zd) or (self.oasis and z.shape == (
                len(label), self.height, self.width, zd)))
            if not ok:
                raise DataError(f"{name}: z/noise has shape {z.shape}; this model takes "
                                f"[{len(label)}, {zd}]" + (f" or [{len(label)}, {self.height}, "
                                                           f"{self.width}, {zd}]" if self.oasis else ""))
        return self._run(label, instance, z)

    def style(self, label, instance, style_image, name="label") -> np.ndarray:
        raise ValueError(f"{self.source}: style-guided synthesis needs the VAE encoder (a "
                         f"checkpoint or SavedModel of a use_vae model); this {self.kind} has none")


class _CheckpointSynth(Synthesizer):
    def __init__(self, path):
        from spade_tf.export import GeneratorModule
        from spade_tf.networks import load_networks

        from spade_tf.ema import inference_generator

        nets, config = load_networks(path, generator=True, discriminator=False)
        generator, self.weights = inference_generator(nets, config)  # the moving average if any
        self.module = GeneratorModule(config, generator, nets.encoder)
        super().__init__("checkpoint", config, self.module.height, self.module.width, str(path))

    @property
    def has_style(self) -> bool:
        return self.module.encoder is not None

    def _run(self, label, instance, z):
        return self.module.synthesize(label, instance, z).numpy()

    def style(self, label, instance, style_image, name="label"):
        if self.module.encoder is None:
            return super().style(label, instance, style_image, name)
        label, instance = self.check(label, instance, name)
        return self.module.synthesize(label, instance, self.module.style_z(style_image)).numpy()


class _SavedModelSynth(Synthesizer):
    def __init__(self, path):
        import tensorflow as tf

        from spade_tf.export import load_config_from_export

        config = load_config_from_export(path)
        self.loaded = tf.saved_model.load(str(path))
        h, w = config.model.output_hw
        super().__init__("saved_model", config, h, w, str(path))

    @property
    def has_style(self) -> bool:
        return "style" in self.loaded.signatures

    def _feed(self, label, instance, z):
        import tensorflow as tf

        feed = {"label": tf.constant(label)}
        if instance is not None:
            feed["instance"] = tf.constant(instance)
        if z is not None:
            feed["z"] = tf.constant(z)
        return feed

    def _run(self, label, instance, z):
        if self.oasis and z is not None:  # the noise signatures (see spade_tf.export)
            feed = self._feed(label, instance, None)
            sig = "noise" if z.ndim == 2 else "noise_map"
            feed[sig] = tf_constant(z)
            return self.loaded.signatures[sig](**feed)["image"].numpy()
        return self.loaded.signatures["serving_default"](**self._feed(label, instance, z))["image"].numpy()

    def style(self, label, instance, style_image, name="label"):
        import tensorflow as tf

        if "style" not in self.loaded.signatures:
            return super().style(label, instance, style_image, name)
        label, instance = self.check(label, instance, name)
        feed = self._feed(label, instance, None)
        feed["style_image"] = tf.constant(style_image)
        return self.loaded.signatures["style"](**feed)["image"].numpy()


class _TFLiteSynth(Synthesizer):
    def __init__(self, path):
        from spade_tf.export import TFLiteRunner, config_from_tflite_metadata

        self.runner = TFLiteRunner(path)
        if self.runner.metadata is None:
            raise ValueError(f"{path}: no spade-tf metadata in this .tflite (export it with "
                             f"spade-tf export)")
        config = config_from_tflite_metadata(self.runner.metadata)
        h, w = config.model.output_hw
        super().__init__("tflite", config, h, w, str(path))

    def _run(self, label, instance, z):
        feed = {"label": label}
        if instance is not None:
            feed["instance"] = instance
        if z is not None and self.oasis:  # the TFLite graph takes OASIS' noise as a map
            h, w = self.height, self.width
            feed["noise"] = (np.broadcast_to(z[:, None, None, :], (len(z), h, w, z.shape[-1]))
                             if z.ndim == 2 else z)
        elif z is not None:
            feed["z"] = z
        if self.config.model.clade_positional:
            # the TFLite graph takes the ICPE map as an input (its labelling loop and float64
            # centroids are not TFLite builtins): computed here, from the same label map
            from spade_tf.semantics import intra_class_offsets

            feed["positional"] = intra_class_offsets(np.asarray(label)).numpy()
        return self.runner(**feed)


def tf_constant(x):
    import tensorflow as tf

    return tf.constant(x)


def model_kind(path: str | os.PathLike) -> tuple[str, Path]:
    """(kind, path) of a model: ``tflite`` (a ``.tflite`` file), ``saved_model`` (a version
    folder with ``saved_model.pb``, or a Serving model folder ``BASE/NAME``: its highest
    version) or ``checkpoint`` (a folder with ``config.yaml``; ``pretrained`` names the
    packaged model, ``spade_tf.pretrained``)."""
    from spade_tf.pretrained import resolve

    path = resolve(path)
    if path.is_file() and path.suffix == ".tflite":
        return "tflite", path
    if (path / "saved_model.pb").is_file():
        return "saved_model", path
    if (path / "config.yaml").is_file():
        return "checkpoint", path
    versions = sorted((p for p in path.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                      key=lambda p: int(p.name)) if path.is_dir() else []
    if versions:
        return "saved_model", versions[-1]
    raise FileNotFoundError(f"{path}: not a model: expected a checkpoint folder (config.yaml), a "
                            f"SavedModel folder (saved_model.pb), a Serving model folder with "
                            f"integer versions, or a .tflite file")


def load_synthesizer(path: str | os.PathLike) -> Synthesizer:
    """Any model that ``model_kind`` recognises, loaded."""
    kind, path = model_kind(path)
    return {"tflite": _TFLiteSynth, "saved_model": _SavedModelSynth,
            "checkpoint": _CheckpointSynth}[kind](path)


def load_model_config(path: str | os.PathLike) -> Config:
    """The config of any model that ``model_kind`` recognises, without loading its weights."""
    from spade_tf.config import load_config
    from spade_tf.export import (config_from_tflite_metadata, load_config_from_export,
                                 read_tflite_metadata)

    kind, path = model_kind(path)
    if kind == "tflite":
        metadata = read_tflite_metadata(path)
        if metadata is None:
            raise ValueError(f"{path}: no spade-tf metadata in this .tflite (export it with "
                             f"spade-tf export)")
        return config_from_tflite_metadata(metadata)
    if kind == "saved_model":
        return load_config_from_export(path)
    return load_config(path / "config.yaml")


def _read_label_file(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the .npy file: {e}") from None
    return read_index_map(path, str(path))


def _inputs(labels, instances) -> list[tuple[Path, Path | None]]:
    labels = Path(labels)
    if labels.is_dir():
        files = sorted(p for p in labels.iterdir() if p.suffix in (".png", ".npy"))
        if not files:
            raise DataError(f"{labels}: no .png or .npy label maps in this folder")
    elif labels.is_file():
        files = [labels]
    else:
        raise FileNotFoundError(f"{labels}: no such label file or folder")
    pairs = []
    for f in files:
        inst = None
        if instances is not None:
            ip = Path(instances)
            inst = ip / f.name if ip.is_dir() else ip
            if not inst.is_file():
                raise DataError(f"{f}: no matching instance map {inst}")
        pairs.append((f, inst))
    return pairs


def synthesize(model, labels, out: str | os.PathLike, *, instances=None, style=None, seed: int = 0,
               num_samples: int = 1, columns: int | None = None, progress=None) -> dict:
    """Synthesizes images for a label PNG (or .npy) or a folder of them.

    Args:
        model: a ``Synthesizer`` or a path for ``load_synthesizer``.
        labels: a label map file or a folder of them.
        out: output folder (PNGs and ``sheet.png``).
        instances: the matching instance map file or folder (same file names).
        style: a style image (VAE models): every output takes its style.
        seed: seed of the latents (VAE models) or of OASIS' noise; sample k of every map uses
            seed + k.
        num_samples: outputs per label map (VAE and OASIS models: different latents).
        progress: a callable for one line per file.

    Returns:
        ``{"images": [paths], "sheet": path}``.
    """
    from PIL import Image

    from spade_tf.data.labels import colorize
    from spade_tf.data.preview import rows_image, save_png
    from spade_tf.fileio import atomic_path

    synth = model if isinstance(model, Synthesizer) else load_synthesizer(model)
    if num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {num_samples}")
    if num_samples > 1 and not synth.has_latent and style is None:
        raise ValueError(f"--num-samples {num_samples}: this model has no latent (no VAE, no "
                         f"OASIS noise), so every sample would be the same image")
    style_img = None
    if style is not None:
        img = read_photo(Path(style), str(style)).resize((synth.width, synth.height), Image.BICUBIC)
        style_img = np.asarray(img, np.uint8)[None]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for f, inst_path in _inputs(labels, instances):
        label = _read_label_file(f)
        inst = read_index_map(inst_path, str(inst_path)) if inst_path else None
        batch_label = label[None] if label.ndim == 2 else label
        batch_inst = None if inst is None else inst[None]
        row = [colorize(synth.check(batch_label, batch_inst, str(f))[0][0], synth.config)]
        for k in range(num_samples):
            if style_img is not None:
                image = synth.style(batch_label, batch_inst, style_img, str(f))[0]
            else:
                image = synth(batch_label, batch_inst, synth.z(1, seed + k), str(f))[0]
            name = f"{f.stem}.png" if num_samples == 1 else f"{f.stem}_s{k}.png"
            with atomic_path(out / name) as tmp:
                Image.fromarray(image).save(tmp, format="PNG")
            written.append(out / name)
            row.append(image)
        rows.append(row)
        if progress:
            progress(f"synthesize: {f.name} -> {num_samples} image(s)")
    cols = columns or (4 if num_samples == 1 else 1)
    if num_samples == 1 and cols > 1:  # pairs of [label | image] side by side
        cells = [np.concatenate(r, axis=1) for r in rows]
        rows = [cells[i:i + cols] for i in range(0, len(cells), cols)]
    sheet = save_png(Image.fromarray(rows_image(rows)), out / "sheet.png")
    return {"images": written, "sheet": sheet}
