"""bfloat16 inference: which hardware computes it natively, and a generator that computes in it.

bfloat16 keeps float32's exponent and 8 bits of mantissa. Where the hardware multiplies it
natively (Intel AMX and AVX512-BF16 CPUs, NVIDIA GPUs from Ampere on), convs and matmuls in
bf16 run several times faster than in float32 (docs/performance.md has the measurements);
elsewhere TensorFlow emulates it, slower than float32. So the hardware is read from the CPU's
flags (``/proc/cpuinfo``), never from the machine's name, and from the GPU's compute capability.

``bf16_generator`` builds the same generator under Keras' ``mixed_bfloat16`` policy and copies
the float32 weights in: variables stay float32, the convs and matmuls compute in bf16, and the
layers that must not (the norms' statistics, spectral norm's power iteration, the final tanh)
cast to float32 themselves (``spade_tf.layers.at_least_float32``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

# bf16 in a SavedModel is offered only when its images stay this close to float32's, on
# held-out label maps (as full int8 has its own bar in spade_tf.export).
BF16_MIN_PSNR_DB = 40.0
# The CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic
AMX_FLAGS = ("amx_bf16", "amx_tile")
AVX512_BF16_FLAG = "avx512_bf16"


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not readable: not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


@dataclasses.dataclass(frozen=True)
class Bf16Hardware:
    """Where bf16 runs natively here: ``native`` (bool) and ``what`` (for people)."""

    native: bool
    what: str


def cpu_bf16(flags: set[str] | None = None) -> Bf16Hardware:
    """Whether this CPU multiplies bf16 natively, from its flags alone (no TensorFlow: cheap
    enough for ``--help``): AMX (``amx_bf16`` and ``amx_tile``), else AVX512-BF16 (dot
    products only: faster than emulation, far from AMX)."""
    flags = cpu_flags() if flags is None else flags
    if all(f in flags for f in AMX_FLAGS):
        return Bf16Hardware(True, "CPU with AMX (amx_bf16, amx_tile)")
    if AVX512_BF16_FLAG in flags:
        return Bf16Hardware(True, "CPU with AVX512-BF16 (no AMX)")
    return Bf16Hardware(False, "no native bf16 on this CPU (no AMX or AVX512-BF16): "
                               "TensorFlow emulates it, slower than float32")


def bf16_hardware(flags: set[str] | None = None) -> Bf16Hardware:
    """Whether this machine multiplies bf16 natively: a GPU of compute capability 8.0 or more
    (the one TensorFlow uses), else the CPU (``cpu_bf16``)."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if cc and tuple(cc) >= (8, 0):
            return Bf16Hardware(True, f"GPU with compute capability {cc[0]}.{cc[1]} (bf16 tensor cores)")
    return cpu_bf16(flags)


def auto_bf16(hardware: Bf16Hardware | None = None, flags: set[str] | None = None
              ) -> tuple[bool, str]:
    """(whether ``spade-tf export --precision auto`` picks bf16 here, why). Only where it was
    measured faster: a CPU with AMX (docs/performance.md). Not on a GPU, nor on an AVX512-BF16
    CPU without AMX: bf16 may well be faster there, but nobody has measured it, so an explicit
    ``--precision bf16`` chooses it."""
    hardware = hardware or bf16_hardware(flags)
    flags = cpu_flags() if flags is None else flags
    if hardware.what.startswith("GPU"):
        return False, f"auto: {hardware.what}; bf16 is not measured on GPUs yet: fp32"
    if all(f in flags for f in AMX_FLAGS):
        return True, f"auto: {hardware.what}"
    if hardware.native:
        return False, f"auto: {hardware.what}; bf16 is measured faster only with AMX: fp32"
    return False, f"auto: {hardware.what}: fp32"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to ``name`` inside, restored after."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def bf16_generator(generator, config):
    """A copy of ``generator`` that computes in bfloat16 (Keras ``mixed_bfloat16``): the same
    architecture built under that policy, with ``generator``'s float32 weights (and spectral
    norm's vectors, and batch-norm statistics) copied in. ``config``: the generator's Config."""
    from spade_tf.ema import averaged_variables, copy_weights
    from spade_tf.networks import build_generator

    with dtype_policy("mixed_bfloat16"):
        copy = build_generator(config.model, seed=getattr(generator, "seed", None),
                               perf=generator.perf)
    if [v.shape for v in averaged_variables(copy)] != [v.shape for v in averaged_variables(generator)]:
        raise ValueError("bf16 generator: the rebuilt generator's weights do not match the "
                         "original's (shapes differ)")
    copy_weights(copy, generator)  # float32 variables into float32 variables (mixed policy)
    return copy


class FrozenGenerator:
    """A generator's inference forward with its weights as graph constants
    (``spade_tf.frozen_graph``), callable as the generator is in ``GeneratorModule.synthesize``.

    What the bf16 SavedModel serves: oneDNN keeps a reordered copy of a constant conv filter,
    and recomputes it from a variable at every call, which in bfloat16 cost about a third of
    the forward (docs/performance.md). Each call structure (with or without a latent, a noise
    vector or map) is traced and frozen once, on first use, outside any enclosing trace.

    Args:
        generator: a built generator (float32 or bf16); it is kept, not copied.
        perf: the ``perf`` forms to trace it with (``spade_tf.perf.perf_scope``); None: the
            generator's own.
    """

    def __init__(self, generator, perf=None):
        self.generator = generator
        self.perf = perf
        self.output_hw = generator.output_hw
        self.z_dim = generator.z_dim
        self.weights = []  # constants, not variables: GeneratorModule saves none
        self._frozen = {}

    def count_params(self) -> int:
        return self.generator.count_params()

    def __call__(self, semantics, training=False, **extra):
        import tensorflow as tf

        from spade_tf.frozen_graph import freeze
        from spade_tf.perf import perf_scope

        if training:
            raise ValueError("FrozenGenerator is for inference only")
        h, w = (int(v) for v in self.output_hw)
        semantics = tf.ensure_shape(semantics, [None, h, w, semantics.shape[-1]])
        extra = {k: tf.convert_to_tensor(v) for k, v in extra.items() if v is not None}
        names = sorted(extra)
        specs = [tf.TensorSpec([None, *semantics.shape[1:]], semantics.dtype)] + [
            tf.TensorSpec([None, *extra[k].shape[1:]], extra[k].dtype) for k in names]
        key = (tuple(names), tuple(str(s) for s in specs))
        if key not in self._frozen:
            # eager, also when called while a signature is traced
            with tf.init_scope(), perf_scope(self.generator, self.perf or self.generator.perf):
                fn = tf.function(lambda s, *args: self.generator(
                    s, training=False, **dict(zip(names, args))))
                self._frozen[key] = freeze(fn.get_concrete_function(*specs))
        out = self._frozen[key](semantics, *[extra[k] for k in names])
        return out[0] if isinstance(out, (list, tuple)) else out
