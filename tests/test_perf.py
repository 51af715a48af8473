"""The perf choice: one object, resolved per device at run time, and never part of a model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest

from spade_tf.config import CladeLookup, FilterGradient, LabelConv, PerfConfig, Toggle, config_to_dict, load_config
from spade_tf.layers import SPADE
from spade_tf.networks import build_networks, load_networks
from spade_tf.perf import (ALL_ON, PLAIN, Device, LegacyPerfConfigWarning, current_device,
                           perf_scope, resolve_perf, set_perf)
from spade_tf.semantics import to_semantics
from spade_tf.tf_internals import sublayers

LEGACY = Path(__file__).parent / "data" / "legacy_tiny"
PERF_KEYS = {f.name for f in dataclasses.fields(PerfConfig)} | {"closed_form_gradient"}


def test_auto_resolves_to_the_cpu_forms_on_a_cpu_and_the_plain_forms_on_a_gpu():
    assert current_device(["CPU"]) is Device.CPU
    assert current_device(["CPU", "GPU"]) is Device.GPU
    assert current_device(["CPU", "GPU"], jit_compile=True) is Device.XLA
    cpu = resolve_perf(PerfConfig(), current_device(["CPU"]), onednn=False)
    # every form measured faster on CPU, swapped gradients without oneDNN; the TFLite-only
    # affine inference norm stays off, and CLADE gathers (its 1x1 conv form lost on this CPU
    # with many classes: docs/benchmarks/clade_lookup.md)
    # the forms measured slower on a CPU stay off there too (docs/performance.md)
    assert cpu == dataclasses.replace(ALL_ON, affine_inference_norm=Toggle.OFF,
                                      clade_lookup=CladeLookup.GATHER,
                                      broadcast_noise=Toggle.OFF,
                                      resize_upsampling=Toggle.OFF)
    assert resolve_perf(PerfConfig(), Device.CPU, onednn=True).filter_gradient is FilterGradient.NATIVE
    gpu = resolve_perf(PerfConfig(), current_device(["CPU", "GPU"]))
    assert gpu == PLAIN
    assert resolve_perf(PerfConfig(), Device.XLA) == PLAIN
    for perf in (cpu, gpu):
        assert perf.resolved() and resolve_perf(perf, Device.CPU, onednn=True) == perf


def test_explicit_choices_are_kept_and_xla_replaces_what_it_cannot_compile():
    mine = PerfConfig(label_conv="segment_sum", uniform_regions=True, fuse_gamma_beta=False)
    gpu = resolve_perf(mine, Device.GPU)
    assert gpu.label_conv is LabelConv.SEGMENT_SUM and gpu.uniform_regions
    assert not gpu.fuse_gamma_beta and not gpu.closed_form_gradients  # auto -> plain
    xla = resolve_perf(mine, Device.XLA)
    assert xla.label_conv is LabelConv.GATHER and not xla.uniform_regions


def test_unresolved_auto_has_no_truth_value():
    with pytest.raises(ValueError, match="resolve_perf"):
        bool(PerfConfig().fuse_gamma_beta)


def test_perf_section_is_validated_and_accepts_booleans():
    config = load_config("tiny", ["perf.fuse_gamma_beta=false", "perf.uniform_regions=true"])
    assert config.perf.fuse_gamma_beta is Toggle.OFF and config.perf.uniform_regions is Toggle.ON
    assert config.perf.label_conv is LabelConv.AUTO
    assert config_to_dict(config)["perf"]["fuse_gamma_beta"] is False  # YAML as before
    with pytest.raises(ValueError, match="perf.label_conv.*'auto', 'dense', 'gather', 'segment_sum'"):
        load_config("tiny", ["perf.label_conv=im2col"])
    with pytest.raises(ValueError, match="filter_gradient"):
        PerfConfig(filter_gradient="fast")
    with pytest.raises(ValueError, match="perf.closed_form_gradients"):
        load_config("tiny", ["perf.closed_form_gradients=maybe"])


def test_build_networks_resolves_the_config_for_this_device_and_xla():
    g = build_networks(load_config("tiny"), discriminator=False).generator
    assert g.perf == resolve_perf(PerfConfig())  # this process's device
    xla = build_networks(load_config("tiny", ["train.jit_compile=true"]), discriminator=False)
    assert xla.generator.perf == PLAIN
    # every layer inside holds the same resolved object
    perfs = {id(layer.perf) for layer in sublayers(g) if hasattr(layer, "perf")}
    assert len(perfs) == 1


def test_no_layer_config_holds_a_perf_key():
    nets = build_networks(load_config("tiny", ["model.use_vae=true"]))
    for net in nets.as_dict().values():
        for layer in sublayers(net):
            keys = set(layer.get_config())
            assert not keys & PERF_KEYS, (layer.name, keys & PERF_KEYS)
    spade = SPADE(perf=ALL_ON)
    assert "perf" not in spade.get_config() and not set(spade.get_config()) & PERF_KEYS


def test_a_reloaded_model_computes_as_this_machine_prefers():
    g = build_networks(load_config("tiny"), discriminator=False, perf=PLAIN).generator
    clone = g.__class__.from_config(g.get_config())
    assert g.perf == PLAIN and clone.perf == resolve_perf(None)


def test_set_perf_and_perf_scope_reach_every_layer():
    g = build_networks(load_config("tiny"), discriminator=False, perf=ALL_ON).generator
    with perf_scope(g, PLAIN):
        assert {layer.perf for layer in sublayers(g) if hasattr(layer, "perf")} == {PLAIN}
    assert g.up_0.norm_0.mlp_shared.perf == ALL_ON
    set_perf(g, PLAIN)
    assert g.up_0.norm_0.param_free_norm.perf == PLAIN


def _legacy():
    if not LEGACY.is_dir():
        pytest.skip(f"{LEGACY} is absent")
    return np.load(LEGACY / "expected.npz")


def test_a_checkpoint_saved_before_the_perf_refactor_gives_bit_identical_outputs():
    """tests/data/legacy_tiny was written by the code of 3bb776a (perf keys in every layer's
    config). Today's code restores it and computes the same image, bit for bit, through the
    checkpoint folder and through the Keras file (whose stale keys warn and are ignored)."""
    d = _legacy()
    nets, config = load_networks(LEGACY / "checkpoint")
    sem = to_semantics(d["label"], d["instance"], config=config)
    from_checkpoint = nets.generator(sem, training=False).numpy()
    with pytest.warns(LegacyPerfConfigWarning, match="fuse_gamma_beta.*ignored"):
        g = keras.saving.load_model(LEGACY / "generator.keras", compile=False)
    from_keras = g(sem, training=False).numpy()
    np.testing.assert_array_equal(from_keras, from_checkpoint)
    assert not set(g.get_config()) & PERF_KEYS
    same_machine = (bool(d["onednn"]) == bool(_onednn())
                    and str(d["cpu_flags"]) == _cpu_flags())
    if same_machine:  # the same kernels as the code that wrote it: bit for bit
        np.testing.assert_array_equal(from_checkpoint, d["image"])
    else:  # another CPU's conv kernels sum in another order
        np.testing.assert_allclose(from_checkpoint, d["image"], rtol=0, atol=1e-5)


def _onednn():
    from spade_tf.tf_internals import onednn_enabled
    return onednn_enabled()


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    flags = text.split("flags", 1)[1].split("\n", 1)[0].split() if "flags" in text else []
    return " ".join(sorted(f for f in flags if f.startswith("avx")))


def test_run_config_yaml_prints_the_resolved_choice(tmp_path):
    from spade_tf.cli import main

    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["config", "--config", "tiny"]) == 0
    text = buf.getvalue()
    assert "label_conv: auto" in text
    resolved = resolve_perf(None)
    assert f"#   label_conv: {resolved.label_conv.value}" in text
    assert f"#   fuse_gamma_beta: {str(bool(resolved.fuse_gamma_beta)).lower()}" in text
