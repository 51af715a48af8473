"""The three networks together: building them from a config, and our checkpoint format.

A spade-tf checkpoint is a folder holding ``config.yaml`` (the resolved config) and a
``tf.train.Checkpoint`` whose top-level objects are ``generator``, ``discriminator`` and
``encoder`` (the training checkpoints add the optimizers and counters beside them).

A *packed* checkpoint (``write_packed_generator``, through ``spade-tf pack``) holds ``config.yaml`` and ``generator.npz``
instead: the one generator that inference runs (a run's moving average, statistics refreshed)
as float16, half the size of float32, for shipping a model in the package
(``spade_tf.pretrained``). It loads as float32 wherever a checkpoint folder is accepted.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import keras
import tensorflow as tf

from spade_tf.config import Config, Family, ModelConfig, PerfConfig, load_config, save_config
from spade_tf.models.spade.discriminator import discriminator_from_config
from spade_tf.models.spade.encoder import ConvEncoder, encoder_from_config
from spade_tf.fileio import atomic_dir
from spade_tf.models.spade.generator import generator_from_config
from spade_tf.layers import count_params
from spade_tf.models.oasis.discriminator import oasis_discriminator_from_config
from spade_tf.models.oasis.generator import oasis_generator_from_config
from spade_tf.perf import perf_for, resolve_perf

CONFIG_FILE = "config.yaml"
CHECKPOINT_PREFIX = "networks"
PACKED_WEIGHTS = "generator.npz"


NETWORK_NAMES = ("generator", "discriminator", "encoder", "ema_generator")


@dataclasses.dataclass
class SPADENetworks:
    """Generator, discriminator, encoder and the generator's moving average (``None`` where
    absent), of any family: SPADE / CLADE (``SPADEGenerator``, ``MultiscaleDiscriminator``,
    ``ConvEncoder``) or OASIS (``OASISGenerator``, ``OASISDiscriminator``, no encoder)."""

    generator: Optional[keras.Model]
    discriminator: Optional[keras.Model]
    encoder: Optional[ConvEncoder]
    # the exponential moving average of the generator's weights (train.ema_decay > 0): the
    # same architecture, what OASIS' test script and our export use
    ema_generator: Optional[keras.Model] = None
    # what ``generator`` is when it is not a training run's G (a packed checkpoint says)
    generator_note: Optional[str] = None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in NETWORK_NAMES if getattr(self, k) is not None}

    @property
    def inference_generator(self):
        """The generator to sample and export: the averaged one when there is one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def param_counts(self) -> dict[str, int]:
        """Trainable scalars per network: what the reference counts (nn.Parameters)."""
        return {k: count_params(v.trainable_weights) for k, v in self.as_dict().items()}


def build_generator(model: ModelConfig, seed=None, perf: PerfConfig | None = None):
    """The generator of ``model``'s family (``perf`` resolved already)."""
    if model.family is Family.OASIS:
        return oasis_generator_from_config(model, seed=seed, perf=perf)
    return generator_from_config(model, seed=seed, perf=perf)


def build_discriminator(model: ModelConfig, feature_matching=True,
                        perf: PerfConfig | None = None):
    """The discriminator of ``model``'s family."""
    if model.family is Family.OASIS:
        return oasis_discriminator_from_config(model, perf=perf)
    return discriminator_from_config(model, feature_matching, perf=perf)


def build_networks(config: Config | ModelConfig, *, generator=True, discriminator=True,
                   encoder=None, ema=None, feature_matching=None, seed=None,
                   perf: PerfConfig | None = None) -> SPADENetworks:
    """Builds the networks a config describes (weights initialised as in the reference).

    Args:
        config: a ``Config`` (or its ``ModelConfig``).
        generator / discriminator: whether to build them.
        encoder: build the encoder; default: iff the config uses the VAE.
        ema: build the averaged generator (``ema_generator``, starting as a copy of the
            generator's weights); default: iff ``train.ema_decay > 0``.
        feature_matching: whether D returns intermediate features; default from ``loss``.
        seed: seed of the generator's noise.
        perf: how the networks compute (default: the config's ``perf`` section, or all
            ``auto`` for a bare ``ModelConfig``), resolved for this device (XLA when the
            config's ``train.jit_compile`` is on) by ``spade_tf.perf``.
    """
    model = config.model if isinstance(config, Config) else config
    if feature_matching is None:
        feature_matching = config.loss.feature_matching if isinstance(config, Config) else True
    if encoder is None:
        encoder = model.use_vae
    if ema is None:
        ema = isinstance(config, Config) and config.train.ema_decay > 0
    if isinstance(config, Config):
        perf = perf_for(config if perf is None else dataclasses.replace(config, perf=perf))
    else:
        perf = resolve_perf(perf)
    g = build_generator(model, seed=seed, perf=perf) if generator else None
    ema_g = None
    if ema:
        ema_g = build_generator(model, seed=seed, perf=perf)
        if g is not None:  # OASIS: netEMA = deepcopy(netG)
            for target, source in zip(ema_g.weights, g.weights):
                target.assign(source)
    return SPADENetworks(
        generator=g,
        discriminator=build_discriminator(model, feature_matching, perf) if discriminator else None,
        encoder=encoder_from_config(model, perf=perf) if encoder else None,
        ema_generator=ema_g)


def save_networks(networks: SPADENetworks, config: Config, out_dir: str | os.PathLike,
                  overwrite: bool = False) -> Path:
    """Writes a checkpoint folder atomically: built beside ``out_dir``, then renamed into place."""
    with atomic_dir(out_dir, overwrite) as tmp:
        save_config(config, tmp / CONFIG_FILE)
        tf.train.Checkpoint(**networks.as_dict()).write(str(tmp / CHECKPOINT_PREFIX))
    return Path(out_dir)


def write_packed_generator(folder: Path, generator: keras.Model, config: Config, note: str) -> None:
    """Writes a packed checkpoint's files into ``folder`` (an existing folder): ``config.yaml``
    (with no moving average: ``generator`` already is what inference runs) and
    ``generator.npz``, every weight of ``generator`` in its order, floats as float16, with the
    weights' names to check on load. ``note`` says what the generator is."""
    import numpy as np

    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, ema_decay=0.0, ema_warmup=False))
    arrays = {}
    for i, w in enumerate(generator.weights):
        value = w.numpy()
        arrays[f"w{i:04d}"] = value.astype(np.float16) if value.dtype.kind == "f" else value
    arrays["names"] = np.array([w.path for w in generator.weights])
    arrays["note"] = np.array(note)
    save_config(config, Path(folder) / CONFIG_FILE)
    with open(Path(folder) / PACKED_WEIGHTS, "wb") as f:
        np.savez_compressed(f, **arrays)


def _load_packed(path: Path, config: Config, wanted: dict) -> SPADENetworks:
    import numpy as np

    for name in ("discriminator", "encoder", "ema_generator"):
        if wanted.get(name):
            raise ValueError(f"{path}: a packed checkpoint holds the generator only, no {name}")
    nets = build_networks(config, discriminator=False, encoder=False, ema=False)
    try:
        with np.load(path / PACKED_WEIGHTS) as data:
            names = [str(n) for n in data["names"]]
            mine = [w.path for w in nets.generator.weights]
            if names != mine:
                raise ValueError(f"the weights' names differ from this version's generator "
                                 f"(first difference: {next((a, b) for a, b in zip(names + [None], mine + [None]) if a != b)})")
            for i, w in enumerate(nets.generator.weights):
                w.assign(data[f"w{i:04d}"].astype(w.dtype))
            nets.generator_note = str(data["note"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path / PACKED_WEIGHTS}: cannot load the packed generator: {e}") from None
    return nets


def load_networks(path: str | os.PathLike, *, generator=None, discriminator=None,
                  encoder=None, ema_generator=None) -> tuple[SPADENetworks, Config]:
    """Loads a checkpoint folder written by ``save_networks`` (or a training run's folder, or
    a packed checkpoint of ``write_packed_generator``; ``pretrained`` names the packaged model).

    Each of ``generator`` / ``discriminator`` / ``encoder`` / ``ema_generator``: ``None`` loads
    it iff the checkpoint holds it, ``True`` requires it, ``False`` skips it.
    """
    from spade_tf.pretrained import resolve

    path = resolve(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a spade-tf checkpoint folder (no {CONFIG_FILE})")
    config = load_config(cfg_file)
    if (path / PACKED_WEIGHTS).is_file():
        return _load_packed(path, config, {"discriminator": discriminator, "encoder": encoder,
                                           "ema_generator": ema_generator}), config
    prefix = path / CHECKPOINT_PREFIX
    if not Path(str(prefix) + ".index").is_file():
        # A training run's folder keeps its checkpoints in checkpoints/: take the latest.
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        latest = tf.train.latest_checkpoint(str(folder))
        if latest is None:
            raise FileNotFoundError(f"{path}: no checkpoint found (expected {prefix}.index)")
        prefix = Path(latest)
    try:
        stored = {k.split("/", 1)[0] for k in tf.train.load_checkpoint(str(prefix))
                  .get_variable_to_shape_map()}
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise ValueError(f"{prefix}: unreadable checkpoint: {type(e).__name__}: {e}") from None
    wanted = {}
    for name, want in (("generator", generator), ("discriminator", discriminator),
                       ("encoder", encoder), ("ema_generator", ema_generator)):
        if want and name not in stored:
            raise ValueError(f"{prefix}: holds no {name} (it has: {', '.join(sorted(stored))})")
        wanted[name] = name in stored if want is None else bool(want)
    wanted["ema"] = wanted.pop("ema_generator")
    nets = build_networks(config, **wanted)
    try:
        status = tf.train.Checkpoint(**nets.as_dict()).read(str(prefix))
        status.expect_partial()  # training checkpoints also hold optimizers and counters
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        raise ValueError(f"{prefix}: cannot restore the networks: {type(e).__name__}: {e}") from None
    return nets, config
