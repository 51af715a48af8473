"""The GPU delegate check (``spade_tf.tflite_compat``) and the GPU TFLite graph it checks.

TensorFlow's ``Analyzer(gpu_compatibility=True)`` called every file compatible, so the check is
our own; these tests feed it graphs with ops the delegate refuses, so that it cannot pass by
saying nothing, and show that the ``fp16`` file of the light and phone presets has no such op.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config
from spade_tf.tflite_compat import inspect_tflite

pytestmark = pytest.mark.xdist_group("tflite_compat")


def _tflite(fn, *specs) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(fn, input_signature=list(specs)).get_concrete_function()])
    return conv.convert()


def test_ops_outside_the_gpu_delegates_rules_are_flagged():
    """TOPK_V2 and LOGICAL_OR (no rule), a 2-D-indexed GATHER and a rank-5 tensor fall back;
    CONV_2D (its bias add fused) and a 1-D-indexed GATHER do not."""
    kernel = tf.constant(np.ones((3, 3, 2, 4), np.float32))

    def fn(x):
        y = tf.nn.conv2d(x, kernel, 1, "SAME") + 1.0
        top = tf.math.top_k(tf.reshape(y, [1, -1]), k=3).values
        flag = tf.logical_or(y > 0.5, y < -0.5)
        picked = tf.gather(tf.reshape(y, [-1, 4]), tf.constant([[0, 1], [2, 3]]))
        five = tf.reshape(y, [1, 4, 4, 2, 2]) * 2.0
        rows = tf.gather(tf.reshape(y, [-1, 4]), tf.constant([0, 2]))
        return (top, tf.cast(flag, tf.float32), picked, five, rows)

    result = inspect_tflite(_tflite(fn, tf.TensorSpec([1, 4, 4, 2], tf.float32)))
    by_op = {}
    for o in result["ops"]:
        by_op.setdefault(o["op"], []).append(o["gpu"])
    assert "TOPK_V2" in result["summary"]["gpu_fallback"]
    assert "LOGICAL_OR" in result["summary"]["gpu_fallback"]
    assert any(r and "2-D indices" in r for r in by_op["GATHER"])
    assert any(r is None for r in by_op["GATHER"])  # the 1-D lookup stays on the GPU
    assert any(r and "rank-5" in r for rs in by_op.values() for r in rs)
    assert by_op["CONV_2D"] == [None]
    s = result["summary"]
    assert 0 < s["gpu_delegate_ops"] < s["ops"] and "gpu_compatibility.cc" in s["gpu_rules"]


def test_inspect_cli_lists_the_ops_and_fails_strictly(tmp_path, capsys):
    from spade_tf.cli import main

    path = tmp_path / "m.tflite"
    path.write_bytes(_tflite(lambda x: tf.math.top_k(x, k=2).values * 2.0,
                             tf.TensorSpec([1, 8], tf.float32)))
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TOPK_V2" in out and "not an op the GPU delegate supports" in out
    assert main(["inspect", str(path), "--strict"]) == 1
    capsys.readouterr()
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["ops"] >= 2
    bad = tmp_path / "not.tflite"
    bad.write_bytes(b"hello world, not a flatbuffer")
    assert main(["inspect", str(bad)]) == 2
    assert "not a TFLite file" in capsys.readouterr().err


@pytest.mark.parametrize("preset,overrides", [
    ("synthscapes_light", []),
    # the phone preset's graph (151 classes, 256 px, CLADE), narrower to keep the test short:
    # the width changes no op
    ("mobile", ["model.base_filters=8"]),
])
def test_the_fp16_file_is_taken_whole_by_the_gpu_delegate(tmp_path, preset, overrides):
    """The fp16 file is traced from the GPU graph: every op within the delegate's rules
    (instance edges included for the light preset), and within a level of Keras."""
    from spade_tf.export import _example_inputs, export_generator, read_tflite_metadata
    from spade_tf.networks import build_networks

    config = load_config(preset, overrides)
    nets = build_networks(config, discriminator=False, ema=False)
    h, w = (int(v) for v in nets.generator.output_hw)
    ex = _example_inputs(config, h, w, 3)
    inputs = [{k: v[i:i + 1] for k, v in ex.items() if k != "z"} for i in range(3)]
    res = export_generator((nets, config), tmp_path, tflite=("fp32", "fp16"),
                           parity_inputs=inputs, progress=lambda s: None)
    fp16, fp32 = res.report["tflite"]["fp16"], res.report["tflite"]["fp32"]
    print(preset, {k: fp16[k] for k in ("ops", "gpu_delegate_ops", "xnnpack_ops",
                                        "psnr_db_vs_keras")}, "cpu graph:", fp32["gpu_fallback"])
    assert fp16["graph"] == "gpu" and fp16["gpu_delegate_ops"] == fp16["ops"] > 100
    assert not fp16["gpu_fallback"]
    assert inspect_tflite(res.tflite["fp16"], xnnpack=False)["summary"]["gpu_fallback"] == {}
    assert fp16["max_abs_levels_vs_keras"] <= 1 and (fp16["psnr_db_vs_keras"] or np.inf) >= 65
    # the CPU graph keeps its gathers: the check is not blind to them
    assert fp32["graph"] == "cpu" and fp32["gpu_delegate_ops"] < fp32["ops"]
    meta = read_tflite_metadata(res.tflite["fp16"])
    assert meta["graph"] == "gpu" and meta["outputs"][0]["dtype"] == "float32"
    assert [i["name"] for i in meta["inputs"]][:2] == (
        ["label", "instance"] if config.model.use_instance else ["label"])[:2]
