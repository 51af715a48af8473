"""Resolves ``PerfConfig``'s ``auto`` choices for the device the networks run on.

How the networks compute is a property of the machine, not of the model: the layers take one
resolved ``PerfConfig`` (their ``perf`` argument), leave it out of ``get_config``, and a model
reloaded elsewhere resolves ``auto`` for its new machine.

Where each CPU form was measured faster is in docs/performance.md. None of them has been
measured on a GPU, where cuDNN convolutions with tensor cores may well beat gathers and segment
sums, so on a GPU, and under XLA, ``auto`` means the plain forms: the reference's dense convs,
standard gradients, TensorFlow's own scheduling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import warnings
from typing import Iterable, Optional

from spade_tf.config import CladeLookup, FilterGradient, LabelConv, PerfConfig, Toggle
from spade_tf.tf_internals import onednn_enabled, sublayers


class Device(str, enum.Enum):
    """What ``auto`` is resolved for."""

    CPU = "cpu"  # TensorFlow's CPU kernels (Eigen, or oneDNN where TensorFlow enables it)
    GPU = "gpu"  # at least one visible GPU: TensorFlow places the networks there
    XLA = "xla"  # compiled with XLA (train.jit_compile), on any device


# auto on a CPU: every option measured faster there (docs/performance.md), except the kernel
# gradient form, which depends on oneDNN (resolve_perf)
_CPU_FORMS = dict(label_conv=LabelConv.SEGMENT_SUM, fuse_gamma_beta=Toggle.ON,
                  share_label_features=Toggle.ON, closed_form_gradients=Toggle.ON,
                  split_discriminator_input=Toggle.ON, sequential_inference=Toggle.ON,
                  uniform_regions=Toggle.ON, affine_inference_norm=Toggle.OFF,
                  clade_lookup=CladeLookup.GATHER,
                  # measured slower on the light OASIS model (0.419 against 0.392 s a step,
                  # docs/benchmarks/train_step.md): the dense conv of cat(noise, one-hot) wins
                  broadcast_noise=Toggle.OFF, resize_upsampling=Toggle.OFF)
# auto on a GPU or under XLA: the plain forms
_PLAIN_FORMS = dict(label_conv=LabelConv.DENSE, fuse_gamma_beta=Toggle.OFF,
                    share_label_features=Toggle.OFF, filter_gradient=FilterGradient.NATIVE,
                    closed_form_gradients=Toggle.OFF, split_discriminator_input=Toggle.OFF,
                    sequential_inference=Toggle.OFF, uniform_regions=Toggle.OFF,
                    affine_inference_norm=Toggle.OFF, clade_lookup=CladeLookup.GATHER,
                    broadcast_noise=Toggle.OFF, resize_upsampling=Toggle.OFF)

# The every-option-plain and every-option-on configs (tests and benchmarks compare them).
PLAIN = PerfConfig(**_PLAIN_FORMS)
ALL_ON = PerfConfig(**{**_CPU_FORMS, "filter_gradient": FilterGradient.SWAPPED,
                       "affine_inference_norm": Toggle.ON, "broadcast_noise": Toggle.ON,
                       "resize_upsampling": Toggle.ON,
                       "clade_lookup": CladeLookup.ONEHOT_CONV})


def current_device(device_types: Optional[Iterable[str]] = None, jit_compile: bool = False
                   ) -> Device:
    """The ``Device`` that ``auto`` is resolved for.

    Args:
        device_types: the logical device types TensorFlow sees (``"CPU"``, ``"GPU"``, ...);
            default: ``tf.config.list_logical_devices()``. Tests pass a faked list.
        jit_compile: the networks run under XLA (``train.jit_compile``).
    """
    if jit_compile:
        return Device.XLA
    if device_types is None:
        import tensorflow as tf

        device_types = [d.device_type for d in tf.config.list_logical_devices()]
    return Device.GPU if any(str(t).upper() == "GPU" for t in device_types) else Device.CPU


def resolve_perf(perf: Optional[PerfConfig] = None, device: Optional[Device] = None, *,
                 onednn: Optional[bool] = None) -> PerfConfig:
    """``perf`` (default: all ``auto``) with every ``auto`` replaced by the form for ``device``
    (default: ``current_device()``), and the forms XLA cannot compile replaced under XLA.

    Idempotent: a resolved config comes back unchanged (except under XLA's constraints).

    Args:
        perf: the choices; explicit ones are kept.
        device: what to resolve for.
        onednn: whether TensorFlow runs oneDNN (default: ``tf_internals.onednn_enabled()``).
            On a CPU with oneDNN, its backward conv kernels are the fast ones: at ade20k's
            shapes they ran 1.5-5x faster than the swapped forms, which ran 1.3-2.5x faster
            than TensorFlow's own (Eigen) backward kernels without oneDNN
            (docs/benchmarks/conv_gradients.md).
    """
    perf = perf if perf is not None else PerfConfig()
    device = Device(device) if device is not None else current_device()
    if device is Device.CPU:
        forms = dict(_CPU_FORMS)
        if perf.filter_gradient is FilterGradient.AUTO:
            forms["filter_gradient"] = (FilterGradient.NATIVE if (
                onednn_enabled() if onednn is None else onednn) else FilterGradient.SWAPPED)
    else:
        forms = dict(_PLAIN_FORMS)
    changes = {f.name: forms[f.name] for f in dataclasses.fields(perf)
               if getattr(perf, f.name).value == "auto"}
    out = dataclasses.replace(perf, **changes) if changes else perf  # the same object when resolved
    if device is Device.XLA:
        # XLA compiles neither SparseSegmentSum nor the regions' data-dependent shapes.
        if out.label_conv is LabelConv.SEGMENT_SUM:
            out = dataclasses.replace(out, label_conv=LabelConv.GATHER)
        if out.uniform_regions:
            out = dataclasses.replace(out, uniform_regions=Toggle.OFF)
    return out


def perf_for(config) -> PerfConfig:
    """A whole run's ``perf`` section resolved for this process's device (XLA when the run
    compiles its steps: ``train.jit_compile``)."""
    return resolve_perf(config.perf, current_device(jit_compile=config.train.jit_compile))


def describe_perf(config) -> str:
    """YAML comment lines that say how ``config.perf`` resolves on this machine (for
    ``spade-tf config`` and a run folder's ``config.yaml``)."""
    device = current_device(jit_compile=config.train.jit_compile)
    resolved = resolve_perf(config.perf, device)
    where = device.value + (f", oneDNN {'on' if onednn_enabled() else 'off'}"
                            if device is Device.CPU else "")
    lines = [f"# perf as resolved on this machine ({where}):"]
    for f in dataclasses.fields(resolved):
        v = getattr(resolved, f.name)
        lines.append(f"#   {f.name}: {str(bool(v)).lower() if isinstance(v, Toggle) else v.value}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- on built models

# Constructor arguments that layers took (and wrote into their configs) before the perf choices
# became one ``perf`` object outside the model. Configs saved then still load: the keys are
# dropped with a warning, and the current machine's choice is used.
LEGACY_PERF_KEYS = ("label_conv", "fuse_gamma_beta", "share_label_features", "filter_gradient",
                    "closed_form_gradients", "closed_form_gradient", "sequential_inference",
                    "uniform_regions")


class LegacyPerfConfigWarning(FutureWarning):
    """A saved layer config still carries the ``perf`` keys (saved before spade-tf 0.2)."""


def pop_legacy_perf_keys(kwargs: dict, layer_name: str) -> None:
    """Removes ``LEGACY_PERF_KEYS`` from a layer's constructor ``kwargs``, warning once."""
    old = sorted(k for k in LEGACY_PERF_KEYS if k in kwargs)
    for k in old:
        del kwargs[k]
    if old:
        warnings.warn(
            f"{layer_name}: the saved config carries perf options ({', '.join(old)}), which are "
            "no longer part of a model; they are ignored, and this machine's choice "
            "(spade_tf.perf.resolve_perf) is used. Save the model again to drop them.",
            LegacyPerfConfigWarning, stacklevel=3)


def set_perf(model, perf: PerfConfig | None) -> PerfConfig:
    """Makes every layer inside ``model`` compute as ``perf`` says (resolved for this device;
    None: all ``auto``). Variables are unchanged; traces made afterwards use the new forms.
    Returns the resolved config."""
    perf = resolve_perf(perf)
    for layer in sublayers(model):
        if isinstance(getattr(layer, "perf", None), PerfConfig):
            layer.perf = perf
    return perf


@contextlib.contextmanager
def perf_scope(model, perf: PerfConfig | None):
    """``set_perf`` for the duration of a ``with`` block (e.g. the dense, gather-only forms
    while tracing a TFLite graph), then every layer's own choice again."""
    saved = [(layer, layer.perf) for layer in sublayers(model)
             if isinstance(getattr(layer, "perf", None), PerfConfig)]
    try:
        yield set_perf(model, perf)
    finally:
        for layer, old in saved:
            layer.perf = old
