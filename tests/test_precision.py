"""bfloat16: the hardware check, and the bf16 SavedModel (``spade-tf export --precision bf16``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

pytestmark = pytest.mark.xdist_group("precision")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from spade_tf.precision import cpu_bf16, cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some Xeon\n"
                    "flags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    flags = cpu_flags(info)
    assert {"amx_bf16", "amx_tile", "avx512_bf16"} <= flags
    assert cpu_bf16(flags).native and "AMX" in cpu_bf16(flags).what
    only_avx = cpu_bf16({"avx512f", "avx512_bf16"})
    assert only_avx.native and "AVX512-BF16" in only_avx.what and "no AMX" in only_avx.what
    none = cpu_bf16({"avx2", "fma", "amx_tile"})  # AMX tiles without bf16: not native bf16
    assert not none.native and "emulates" in none.what
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.fixture(scope="session")
def bf16_export(tmp_path_factory):
    """The packaged model (the light preset, trained for an hour) exported in bf16."""
    from spade_tf.export import export_generator

    root = tmp_path_factory.mktemp("bf16")
    return export_generator("pretrained", root / "models", tflite=(), precision="bf16",
                            progress=lambda s: None)


def _val_maps(config, n=8):
    from spade_tf.data import build_dataset

    batches = list(build_dataset(config, "val", batch_size=1, training=False).take(n))
    return (np.concatenate([b["label"].numpy() for b in batches]),
            np.concatenate([b["instance"].numpy() for b in batches]))


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_auto_picks_bf16_only_where_it_was_measured():
    """``--precision auto``: bf16 on an AMX CPU; fp32 on a GPU and on an AVX512-BF16 CPU
    (native there, but not measured), and without native bf16."""
    from spade_tf.precision import Bf16Hardware, auto_bf16, cpu_bf16

    amx, avx = {"amx_bf16", "amx_tile", "avx512_bf16"}, {"avx512_bf16"}
    assert auto_bf16(cpu_bf16(amx), amx)[0] is True
    gpu = Bf16Hardware(True, "GPU with compute capability 8.0 (bf16 tensor cores)")
    use, why = auto_bf16(gpu, amx)
    assert use is False and "not measured on GPUs" in why
    use, why = auto_bf16(cpu_bf16(avx), avx)
    assert use is False and "only with AMX" in why
    assert auto_bf16(cpu_bf16(set()), set()) == (False, f"auto: {cpu_bf16(set()).what}: fp32")


def test_bf16_export_computes_in_bf16_serves_and_reports_its_psnr(bf16_export, tmp_path):
    """The bf16 SavedModel: its report gives the PSNR against float32 on held-out maps (at
    least 40 dB, else it would have been refused); its graph holds bfloat16 ops; its
    serving_default and png signatures answer, within 40 dB of the float32 model; synthesize
    runs it."""
    from spade_tf.ema import inference_generator
    from spade_tf.export import load_config_from_export, psnr, to_uint8
    from spade_tf.networks import load_networks
    from spade_tf.semantics import to_semantics
    from spade_tf.synthesize import synthesize

    rep = bf16_export.report
    assert rep["precision"] == "bf16" and rep["bf16_check_source"] == "validation split", rep
    assert rep["psnr_db_vs_fp32"] is None or rep["psnr_db_vs_fp32"] >= 40, rep
    assert rep["maps"] == 16 and "bf16_hardware" in rep
    loaded = tf.saved_model.load(str(bf16_export.version_dir))
    graph = loaded.signatures["serving_default"].graph
    # the functions the signature calls: any op computing in bfloat16 shows the precision
    bf16_ops = [n.op for f in graph.as_graph_def().library.function for n in f.node_def
                if "T" in n.attr and n.attr["T"].type == tf.bfloat16.as_datatype_enum]
    assert "Conv2D" in bf16_ops, sorted(set(bf16_ops))[:20]

    config = load_config_from_export(bf16_export.version_dir)
    label, inst = _val_maps(config)
    got = loaded.signatures["serving_default"](label=tf.constant(label),
                                              instance=tf.constant(inst))["image"].numpy()
    nets, _ = load_networks("pretrained", generator=True, discriminator=False)
    generator, _ = inference_generator(nets, config)
    want = to_uint8(generator(to_semantics(label, inst, config=config), training=False)).numpy()
    db = psnr(got, want)
    print(f"bf16 SavedModel vs float32 Keras on {len(label)} val maps: {db:.1f} dB, max "
          f"{np.abs(got.astype(int) - want.astype(int)).max()} levels")
    assert db >= 40 and want.std() > 10
    assert db < 200  # bf16 did change the arithmetic: not the float32 graph under another name

    png = loaded.signatures["png"](
        label_png=tf.constant([_png(x.astype(np.uint8), "L") for x in label[:2]]),
        instance_png=tf.constant([_png(x.astype(np.uint16)) for x in inst[:2]]))["image_png_bytes"]
    images = np.stack([np.array(Image.open(io.BytesIO(b))) for b in png.numpy()])
    np.testing.assert_array_equal(images, got[:2])

    Image.fromarray(label[0].astype(np.uint8), mode="L").save(tmp_path / "label.png")
    Image.fromarray(inst[0].astype(np.uint16)).save(tmp_path / "inst.png")
    res = synthesize(bf16_export.version_dir, tmp_path / "label.png", tmp_path / "out",
                     instances=tmp_path / "inst.png")
    np.testing.assert_array_equal(np.asarray(Image.open(res["images"][0]).convert("RGB")), got[0])


def test_bf16_export_is_refused_below_the_bar_and_writes_nothing(tmp_path, monkeypatch):
    """With the bar above what bf16 reaches, the export stops with the numbers and leaves no
    folder behind."""
    import spade_tf.precision
    from spade_tf.export import ExportError, export_generator

    monkeypatch.setattr(spade_tf.precision, "BF16_MIN_PSNR_DB", 300.0)
    out = tmp_path / "models"
    with pytest.raises(ExportError, match=r"--precision bf16: its images are [\d.]+ dB PSNR "
                                          r"from float32's .* the bar is 300 dB"):
        export_generator("pretrained", out, tflite=(), precision="bf16", progress=lambda s: None)
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))
