"""``train``: the main job, ``model.fit`` with exact resume (library function behind ``spade-tf train``).

A run folder holds ``config.yaml`` and ``command.txt`` (written before the first step),
``checkpoints/`` (``tf.train.CheckpointManager``: G, D, E, G's moving average, both optimizers,
the step, the epoch and the noise generators' states), ``tensorboard/``, ``samples/`` and ``steps.log``.

Restarting the same command resumes at the next step: the data stream is deterministic and is
skipped forward to the exact example (``build_dataset(start_epoch=, skip_examples=)``), the
learning rates follow from the epoch, and the noise generators continue from their saved states.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

import keras
import tensorflow as tf

from spade_tf import callbacks as cb
from spade_tf.config import Config, Precision, config_to_dict, load_config, save_config
from spade_tf.perf import describe_perf
from spade_tf.data.pipeline import build_dataset, steps_per_epoch
from spade_tf.fileio import atomic_write_text
from spade_tf.gan import GauGAN, make_optimizers

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint could not be restored; the message names the file."""


@dataclasses.dataclass
class TrainResult:
    steps: int  # steps done in all (this run and earlier ones)
    epochs_done: int
    interrupted: Optional[str]  # the signal's name when a stop signal ended the run
    checkpoint: Optional[str]  # the latest checkpoint
    history: dict


def _check_same_run(workdir: Path, config: Config) -> None:
    """A run folder may be resumed with other train.* settings (limits, cadence), not with a
    different model, data or loss."""
    path = workdir / "config.yaml"
    if not path.is_file():
        return
    old = config_to_dict(load_config(path))
    new = config_to_dict(config)
    diffs = [f"{sec}.{k}: {old[sec][k]!r} -> {new[sec][k]!r}" for sec in ("model", "data", "loss")
             for k in new[sec] if old[sec].get(k) != new[sec][k]]
    if diffs:
        raise ValueError(f"{workdir} holds a run with a different config ({'; '.join(diffs)}); "
                         f"use another --workdir")


def make_checkpoint(gan: GauGAN, epoch_var: tf.Variable) -> tf.train.Checkpoint:
    """Everything a resume needs. Network names match ``spade_tf.networks`` checkpoints."""
    objects = dict(generator=gan.generator, discriminator=gan.discriminator,
                   g_optimizer=gan.g_optimizer, d_optimizer=gan.d_optimizer,
                   step=gan.iterations_done, epoch=epoch_var,
                   noise_state=gan.noise.state,
                   generator_noise_state=gan.generator.seed_generator.state)
    if gan.encoder is not None:
        objects["encoder"] = gan.encoder
    if gan.ema_generator is not None:
        objects["ema_generator"] = gan.ema_generator
    return tf.train.Checkpoint(**objects)


def restore(checkpoint: tf.train.Checkpoint, path: str) -> None:
    """Restores ``path`` or raises ``CheckpointError`` naming it (a truncated file otherwise
    surfaces as a bare IndexError from TensorFlow)."""
    try:
        checkpoint.restore(path).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, KeyError) as e:
        raise CheckpointError(
            f"cannot restore checkpoint {path}: {type(e).__name__}: {str(e)[:300]}. It may be "
            f"corrupt or truncated; the earlier ones in {Path(path).parent} are untouched: pass "
            f"one of them with --resume-from (or delete this one).") from None


def _sample_batch(config: Config):
    for split in ("val", "train"):
        try:
            ds = build_dataset(config, split, batch_size=min(4, config.train.batch_size * 2),
                               training=False)
            return next(iter(ds))
        except (ValueError, FileNotFoundError, StopIteration):
            continue
    return None


def train(config: Config, workdir, *, strategy: Optional[tf.distribute.Strategy] = None,
          resume_from: Optional[str] = None, extra_callbacks: Sequence = (),
          command: Optional[Sequence[str]] = None, verbose=1, chief: bool = True) -> TrainResult:
    """Trains (or resumes) the run in ``workdir``.

    Args:
        config: the resolved config.
        workdir: the run folder (created; resumed when it holds checkpoints).
        strategy: a ``tf.distribute`` strategy (default: the current one).
        resume_from: a specific checkpoint prefix instead of the latest.
        extra_callbacks: more Keras callbacks (after ours).
        command: the command line to record (default: ``sys.argv``).
        verbose: 1: Keras' progress bar (a terminal); 2: a plain line every 30 s and per
            epoch (``callbacks.LineProgress``: logs, CI); 0: silent.
        chief: whether this process writes checkpoints, logs and samples (multi-worker: worker 0).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if chief:
        _check_same_run(workdir, config)
        save_config(config, workdir / "config.yaml", footer=describe_perf(config))
        atomic_write_text(workdir / "command.txt",
                          " ".join(shlex.quote(a) for a in (command or sys.argv)) + "\n")
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(config.train.precision.value)
    strategy = strategy or tf.distribute.get_strategy()

    # Data first: a missing or empty dataset fails before any model is built.
    spe = steps_per_epoch(config, "train")
    with strategy.scope():
        gan = GauGAN(config)
        g_opt, d_opt = make_optimizers(config)
        if config.train.precision is Precision.MIXED_FLOAT16:
            g_opt = keras.optimizers.LossScaleOptimizer(g_opt)
            d_opt = keras.optimizers.LossScaleOptimizer(d_opt)
        gan.compile(g_optimizer=g_opt, d_optimizer=d_opt, jit_compile=config.train.jit_compile)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = make_checkpoint(gan, epoch_var)
    # Non-chief workers must save too (saving is collective under MultiWorkerMirroredStrategy),
    # into a folder of their own that is removed at the end.
    worker_tmp = workdir / f".worker_tmp_{os.getpid()}"
    manager = tf.train.CheckpointManager(checkpoint, str(workdir / "checkpoints" if chief
                                                         else worker_tmp),
                                         max_to_keep=config.train.keep_checkpoints)
    start = resume_from or manager.latest_checkpoint
    if start:
        restore(checkpoint, start)
        print(f"resumed from {start} at step {int(gan.iterations_done.numpy())}", flush=True)

    step0 = int(gan.iterations_done.numpy())
    epoch0, in_epoch = divmod(step0, spe)
    total_epochs = config.train.niter + config.train.niter_decay
    limit = total_epochs * spe
    if config.train.max_steps is not None:
        limit = min(limit, config.train.max_steps)
    history: dict = {}
    interrupted = None
    if step0 >= limit:
        print(f"nothing to do: step {step0} >= {limit} (train.max_steps or all epochs done)")
        return TrainResult(step0, epoch0, None, manager.latest_checkpoint, history)

    with cb.StopSignals() as signals:
        callbacks = [cb.LearningRateSchedule(config), cb.NaNGuard(manager),
                     cb.Limits(limit, config.train.max_minutes)]
        if verbose == 2:
            callbacks.append(cb.LineProgress(limit))
        if chief:
            callbacks += [cb.StepLog(workdir / "steps.log"),
                          cb.TrainingMonitor(config, workdir, _sample_batch(config))]
        callbacks += [cb.Checkpointer(manager, epoch_var, config.train.checkpoint_every, signals),
                      *extra_callbacks]
        batch = config.train.batch_size
        phases = []
        if in_epoch:  # finish the interrupted epoch: its remaining steps, exact examples
            phases.append((build_dataset(config, "train", start_epoch=epoch0,
                                         skip_examples=in_epoch * batch), epoch0, epoch0 + 1,
                           spe - in_epoch))
            first_full = epoch0 + 1
        else:
            first_full = epoch0
        if first_full < total_epochs:
            phases.append((build_dataset(config, "train", start_epoch=first_full, repeat=True),
                           first_full, total_epochs, spe))
        for ds, initial, epochs, steps in phases:
            h = gan.fit(ds, initial_epoch=initial, epochs=epochs, steps_per_epoch=steps,
                        callbacks=callbacks, verbose=1 if verbose == 1 else 0, shuffle=False)  # order: the pipeline's
            for k, v in h.history.items():
                history.setdefault(k, []).extend(v)
            if gan.stop_training or int(gan.iterations_done.numpy()) >= limit:
                break
        if signals.received is not None:
            interrupted = signal.Signals(signals.received).name
    steps = int(gan.iterations_done.numpy())
    if chief:
        atomic_write_text(workdir / "history.json", json.dumps(history))
    else:
        shutil.rmtree(worker_tmp, ignore_errors=True)
    why = (f"signal {interrupted}" if interrupted else "all steps done" if steps >= limit
           else "time limit (train.max_minutes)")
    print(f"stopped at step {steps} ({why}); latest checkpoint: {manager.latest_checkpoint}",
          flush=True)
    return TrainResult(steps, steps // spe, interrupted, manager.latest_checkpoint, history)
