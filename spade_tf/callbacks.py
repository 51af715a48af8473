"""Keras callbacks for GauGAN training: schedule, checkpoints, preemption, NaN guard, logging."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from spade_tf.config import Config
from spade_tf.gan import learning_rates


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or Inf; the last good checkpoint is kept."""


def _step(model) -> int:
    return int(model.iterations_done.numpy())


class LearningRateSchedule(keras.callbacks.Callback):
    """Sets both optimizers' rates at each epoch start from the epoch index alone, so the linear
    decay after ``niter`` continues exactly after a resume (the reference loses it)."""

    def __init__(self, config: Config):
        super().__init__()
        self.config = config

    def on_epoch_begin(self, epoch, logs=None):
        g_lr, d_lr = learning_rates(self.config, epoch)
        self.model.g_optimizer.learning_rate = g_lr
        self.model.d_optimizer.learning_rate = d_lr


class NaNGuard(keras.callbacks.Callback):
    """Stops training with ``TrainingDiverged`` when a logged loss is NaN or Inf. It runs before
    the checkpoint callback, so nothing after the last good step is saved."""

    def __init__(self, manager: tf.train.CheckpointManager | None = None):
        super().__init__()
        self.manager = manager

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: float(v) for k, v in (logs or {}).items() if not math.isfinite(float(v))}
        if bad:
            last = self.manager.latest_checkpoint if self.manager else None
            raise TrainingDiverged(
                f"step {_step(self.model)}: non-finite loss {bad}; training stopped. The last "
                f"good checkpoint is {last or '(none saved yet)'}; lower train.lr or check the data.")


class StopSignals:
    """Turns SIGTERM / SIGINT (preemption, Ctrl-C) into a flag checked after each step."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.received = signum
        print(f"\nsignal {signal.Signals(signum).name}: saving a checkpoint after this step",
              flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


class Checkpointer(keras.callbacks.Callback):
    """Saves every ``every`` steps, at each epoch end, when training stops (limits) and when a
    stop signal arrived (then it also stops training)."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch_var: tf.Variable, every: int,
                 signals: StopSignals | None = None):
        super().__init__()
        self.manager = manager
        self.epoch_var = epoch_var
        self.every = every
        self.signals = signals
        self.last_saved = None

    def save(self, force=False):
        step = _step(self.model)
        if force or self.last_saved != step:
            self.manager.save(checkpoint_number=step)
            self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if self.signals is not None and self.signals.received is not None:
            self.model.stop_training = True
        if step % self.every == 0 or self.model.stop_training:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_var.assign(epoch + 1)
        self.save(force=True)  # again if this step was just saved: the epoch counter moved


class StepLog(keras.callbacks.Callback):
    """Appends every finished step number to a text file (one per line)."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    def on_train_batch_end(self, batch, logs=None):
        with open(self.path, "a") as f:
            f.write(f"{_step(self.model)}\n")


class Limits(keras.callbacks.Callback):
    """Stops after ``max_steps`` steps in all, or after ``max_minutes`` of this process, and
    says so when that cuts an epoch short (Keras' bar would show the epoch as complete)."""

    def __init__(self, max_steps=None, max_minutes=None):
        super().__init__()
        self.max_steps = max_steps
        self.deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
        self.steps_in_epoch = 0
        self.reason = None

    def on_epoch_begin(self, epoch, logs=None):
        self.steps_in_epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_in_epoch = batch + 1
        if self.max_steps is not None and _step(self.model) >= self.max_steps:
            self.model.stop_training, self.reason = True, "train.max_steps"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.model.stop_training, self.reason = True, "train.max_minutes"

    def on_epoch_end(self, epoch, logs=None):
        planned = (self.params or {}).get("steps")
        if self.reason and planned and self.steps_in_epoch < planned:
            print(f"epoch {epoch + 1} cut short by {self.reason}: it ran {self.steps_in_epoch} of "
                  f"{planned} steps", flush=True)


class LineProgress(keras.callbacks.Callback):
    """Training progress as plain lines, for sinks that are not a terminal (CI logs, ``tee``):
    one line every ``every_seconds`` and at the end of each epoch, instead of Keras' bar."""

    def __init__(self, total_steps: int, every_seconds: float = 30.0):
        super().__init__()
        self.total_steps = int(total_steps)
        self.every = float(every_seconds)
        self.last = self.start = None
        self.step0 = 0

    def on_train_begin(self, logs=None):
        self.start = self.last = time.monotonic()
        self.step0 = _step(self.model)

    def _line(self, epoch_text, logs):
        step = _step(self.model)
        elapsed = time.monotonic() - self.start
        rate = (elapsed / (step - self.step0)) if step > self.step0 else float("nan")
        losses = " ".join(f"{k} {float(v):.3f}" for k, v in (logs or {}).items()
                          if np.ndim(v) == 0 or np.size(v) == 1)
        print(f"step {step}/{self.total_steps} ({epoch_text}): {losses}; {rate:.2f} s/step",
              flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(f"epoch {self.epoch + 1}", logs)

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.monotonic()
        self._line(f"end of epoch {epoch + 1}", logs)


class TrainingMonitor(keras.callbacks.Callback):
    """TensorBoard scalars (every loss, both learning rates) every ``log_every`` steps, and an
    image grid (colourised label | generated | real, and the moving average's image before the
    real one when the run keeps one) every ``sample_every`` steps, in TensorBoard and as
    ``samples/step_XXXXXXXX.png`` in the run folder."""

    # training batches that refresh the average's BN statistics for the grids (export and
    # evaluation use train.ema_stat_batches): a few seconds at 64 px, not minutes
    GRID_STAT_BATCHES = 10

    def __init__(self, config: Config, workdir: Path, sample_batch: dict | None):
        super().__init__()
        self.config = config
        self.workdir = Path(workdir)
        self.sample_batch = sample_batch
        self.writer = tf.summary.create_file_writer(str(self.workdir / "tensorboard"))
        self._scratch = None  # a generator for the average's refreshed copy, built once

    def _lr(self, opt):
        return float(keras.ops.convert_to_numpy(opt.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        t = self.config.train
        if step % t.log_every == 0:
            with self.writer.as_default(step=step):
                for k, v in (logs or {}).items():
                    tf.summary.scalar(f"loss/{k}", float(v))
                tf.summary.scalar("lr/G", self._lr(self.model.g_optimizer))
                tf.summary.scalar("lr/D", self._lr(self.model.d_optimizer))
        if step % t.sample_every == 0:
            self.write_samples(step)

    def on_train_end(self, logs=None):
        self.write_samples(_step(self.model))
        self.writer.flush()

    def write_samples(self, step: int):
        if self.sample_batch is None:
            return
        from PIL import Image

        from spade_tf.data.preview import save_png

        grid = sample_grid(self.model, self.sample_batch, self.config, self._averaged())
        save_png(Image.fromarray(grid), self.workdir / "samples" / f"step_{step:08d}.png")
        with self.writer.as_default(step=step):
            tf.summary.image("samples/label|generated|real", grid[None], step=step)


    def _averaged(self):
        """A copy of the moving average with its BN statistics refreshed (OASIS samples its EMA
        generator so), or None: no average, or a distribution strategy is active (new
        variables made by the chief alone could stall a multi-worker run: the grid then shows
        G only). The training state itself is never touched, so resume stays exact."""
        gan = self.model
        if gan.ema_generator is None or tf.distribute.has_strategy():
            return None
        from spade_tf.data.pipeline import build_dataset
        from spade_tf.ema import copy_weights, refresh_batch_statistics
        from spade_tf.networks import build_generator

        if self._scratch is None:
            self._scratch = build_generator(self.config.model, perf=gan.generator.perf)
        copy_weights(self._scratch, gan.ema_generator)
        try:
            batches = build_dataset(self.config, "train", training=False)
        except (ValueError, FileNotFoundError, OSError):
            return self._scratch
        refresh_batch_statistics(self._scratch, (b for _, b in zip(range(self.GRID_STAT_BATCHES),
                                                                    batches)), self.config)
        return self._scratch


def sample_grid(model, batch: dict, config: Config, averaged=None) -> np.ndarray:
    """uint8 grid, one row per example: colourised label | generated (eval mode) | real, with
    the ``averaged`` generator's image (the moving average of G) before the real one when
    given. VAE models take their style from the real image, as the reference's test.py; OASIS'
    noise is the same for G and the average."""
    from spade_tf.config import Family
    from spade_tf.data.labels import colorize
    from spade_tf.data.preview import rows_image, to_uint8

    semantics = model.semantics(batch)
    real = tf.convert_to_tensor(batch["image"])
    fake, _ = model.generate(semantics, real, training=False)
    columns = [fake.numpy()]
    if averaged is not None:
        if config.model.family is Family.OASIS and config.model.noise_3d:
            from spade_tf.latents import latent_from_seed

            # the grid's noise: seed i for row i, for both (G's own call above drew its own)
            noise = tf.stack([latent_from_seed(i, config.model.z_dim)
                              for i in range(int(semantics.shape[0]))])
            fake = model.generator(semantics, noise=noise, training=False)
            columns = [fake.numpy(), averaged(semantics, noise=noise, training=False).numpy()]
        elif model.encoder is not None:
            z, _ = model.encoder(real, training=False)  # the mean latent for both
            columns = [model.generator(semantics, z=z, training=False).numpy(),
                       averaged(semantics, z=z, training=False).numpy()]
        else:
            columns.append(averaged(semantics, training=False).numpy())
    rows = [[colorize(lab, config)] + [to_uint8(c[i]) for c in columns] + [to_uint8(r)]
            for i, (lab, r) in enumerate(zip(batch["label"].numpy(), real.numpy()))]
    return rows_image(rows)
