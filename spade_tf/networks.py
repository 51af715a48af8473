"""The three networks together: building them from a config, and our checkpoint format.

A spade-tf checkpoint is a folder holding ``config.yaml`` (the resolved config) and a
``tf.train.Checkpoint`` whose top-level objects are ``generator``, ``discriminator`` and
``encoder`` (the training checkpoints add the optimizers and counters beside them).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import tensorflow as tf

from spade_tf.config import Config, ModelConfig, PerfConfig, load_config, save_config
from spade_tf.discriminator import MultiscaleDiscriminator, discriminator_from_config
from spade_tf.encoder import ConvEncoder, encoder_from_config
from spade_tf.fileio import atomic_dir
from spade_tf.generator import SPADEGenerator, generator_from_config
from spade_tf.layers import count_params
from spade_tf.perf import perf_for, resolve_perf

CONFIG_FILE = "config.yaml"
CHECKPOINT_PREFIX = "networks"


@dataclasses.dataclass
class SPADENetworks:
    """Generator, discriminator and encoder (``None`` where absent)."""

    generator: Optional[SPADEGenerator]
    discriminator: Optional[MultiscaleDiscriminator]
    encoder: Optional[ConvEncoder]

    def as_dict(self) -> dict:
        return {k: v for k, v in (("generator", self.generator),
                                  ("discriminator", self.discriminator),
                                  ("encoder", self.encoder)) if v is not None}

    def param_counts(self) -> dict[str, int]:
        """Trainable scalars per network: what the reference counts (nn.Parameters)."""
        return {k: count_params(v.trainable_weights) for k, v in self.as_dict().items()}


def build_networks(config: Config | ModelConfig, *, generator=True, discriminator=True,
                   encoder=None, feature_matching=None, seed=None,
                   perf: PerfConfig | None = None) -> SPADENetworks:
    """Builds the networks a config describes (weights initialised as in the reference).

    Args:
        config: a ``Config`` (or its ``ModelConfig``).
        generator / discriminator: whether to build them.
        encoder: build the encoder; default: iff the config uses the VAE.
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
    if isinstance(config, Config):
        perf = perf_for(config if perf is None else dataclasses.replace(config, perf=perf))
    else:
        perf = resolve_perf(perf)
    return SPADENetworks(
        generator=generator_from_config(model, seed=seed, perf=perf) if generator else None,
        discriminator=(discriminator_from_config(model, feature_matching, perf=perf)
                       if discriminator else None),
        encoder=encoder_from_config(model, perf=perf) if encoder else None)


def save_networks(networks: SPADENetworks, config: Config, out_dir: str | os.PathLike,
                  overwrite: bool = False) -> Path:
    """Writes a checkpoint folder atomically: built beside ``out_dir``, then renamed into place."""
    with atomic_dir(out_dir, overwrite) as tmp:
        save_config(config, tmp / CONFIG_FILE)
        tf.train.Checkpoint(**networks.as_dict()).write(str(tmp / CHECKPOINT_PREFIX))
    return Path(out_dir)


def load_networks(path: str | os.PathLike, *, generator=None, discriminator=None,
                  encoder=None) -> tuple[SPADENetworks, Config]:
    """Loads a checkpoint folder written by ``save_networks`` (or a training run's folder).

    Each of ``generator`` / ``discriminator`` / ``encoder``: ``None`` loads it iff the checkpoint
    holds it, ``True`` requires it, ``False`` skips it.
    """
    path = Path(path)
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: not a spade-tf checkpoint folder (no {CONFIG_FILE})")
    config = load_config(cfg_file)
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
                       ("encoder", encoder)):
        if want and name not in stored:
            raise ValueError(f"{prefix}: holds no {name} (it has: {', '.join(sorted(stored))})")
        wanted[name] = name in stored if want is None else bool(want)
    nets = build_networks(config, **wanted)
    try:
        status = tf.train.Checkpoint(**nets.as_dict()).read(str(prefix))
        status.expect_partial()  # training checkpoints also hold optimizers and counters
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError) as e:
        raise ValueError(f"{prefix}: cannot restore the networks: {type(e).__name__}: {e}") from None
    return nets, config
