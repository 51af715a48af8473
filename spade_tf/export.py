"""Export a trained generator: a TF Serving SavedModel and TFLite files.

Layout (what TensorFlow Serving reads; it only looks at integer folder names)::

    BASE/NAME/VERSION/                  SavedModel: saved_model.pb, variables/,
                                        assets.extra/tf_serving_warmup_requests
    BASE/NAME/VERSION-tflite/           NAME_{fp32,fp16,dynamic_int8[,int8]}.tflite
    BASE/NAME/VERSION-export.json       what was exported, sizes, parity numbers

Everything is built in a hidden temporary folder inside ``BASE/NAME`` and renamed into place at
the end (the SavedModel folder last), so Serving never sees a half-written version.

Signatures of the SavedModel (built by ``_signatures``; ``_signatures_names`` lists them):

- ``serving_default``: ``label`` int32 [N,H,W] (+ ``instance`` int32 [N,H,W] when the model
  uses instance maps, + ``z`` float32 [N,Z] for VAE models) -> ``image`` uint8 [N,H,W,3];
- ``png``: ``label_png`` string [N] (+ ``instance_png``; + ``seed`` int64 [N] for VAE models)
  -> ``image_png_bytes`` string [N] (REST clients get it base64-encoded, thanks to ``_bytes``);
- ``style`` (VAE models): ``label`` (+ ``instance``) + ``style_image`` uint8 [N,H,W,3] -> ``image``.

OASIS models (3D noise) take their noise in one of four ways, one signature each (Serving
signatures have no optional inputs): ``serving_default`` draws it from seed 0 (the same image
for the same label map), ``seed`` takes ``seed`` int64 [N], ``noise`` a vector per image
float32 [N,Z], ``noise_map`` a 3D map float32 [N,H,W,Z] (different noise per region: the OASIS
paper's local editing); ``png`` takes ``seed`` [N] as for VAE models. Seeds become noise through
``latent_from_seed``, as VAE latents do.

Every signature validates its inputs in the graph: an empty batch, a wrong H x W, a label id out
of range, a wrong instance or z shape, or a non-PNG string is an ``InvalidArgumentError`` whose
message says what was wrong and what is allowed. Nothing is ever synthesized from bad input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from spade_tf.config import (CladeLookup, Config, Family, LabelConv, Toggle, config_to_dict,
                             merge_into, save_config)
from spade_tf.kernels.delegate_forms import float_levels
from spade_tf.latents import latent_from_seed  # noqa: F401 (the signatures' seeds; public here too)
from spade_tf.perf import PLAIN, perf_scope
from spade_tf.precision import FrozenGenerator
from spade_tf.semantics import intra_class_offsets, to_semantics
from spade_tf.serving_client import PNG_MAGIC, not_png_message
from spade_tf.tf_internals import tflite_schema
from spade_tf.tflite_compat import delegate_summary

TFLITE_VARIANTS = ("fp32", "fp16", "dynamic_int8", "int8")
DEFAULT_TFLITE = ("fp32", "fp16", "dynamic_int8")
# The file for the GPU delegate (float16 weights, the delegate's usual input) is traced from the
# GPU graph (kernels/delegate_forms.py): every op within the delegate's rules. The others keep
# the CPU graph: on XNNPACK the GPU graph's dense one-hot products are 13-24% slower at 256 px
# than the gathers they replace (docs/mobile.md, "The GPU graph on the CPU").
GPU_GRAPH_VARIANTS = ("fp16",)
# The GPU graph's perf forms: the plain ones, CLADE's lookups as a 1x1 conv (no ARG_MAX and
# 2-D GATHER), the upsampling as resize ops (no rank-5 tensors), the norm as multiply-adds
GPU_TFLITE_PERF = dataclasses.replace(PLAIN, affine_inference_norm=Toggle.ON,
                                      clade_lookup=CladeLookup.ONEHOT_CONV,
                                      resize_upsampling=Toggle.ON)
WARMUP_FILE = "tf_serving_warmup_requests"
# Full int8 is offered only when it is this close to fp32 on the representative label maps
# (the same bar as dynamic-range int8 in the export issue).
INT8_MIN_PSNR_DB = 30.0
# The SavedModel's arithmetic (``--precision``; bf16: spade_tf.precision)
# auto: bf16 on a CPU with AMX (where it was measured faster: spade_tf.precision.auto_bf16) when
# the model's images keep BF16_MIN_PSNR_DB there, else fp32 (docs/performance.md, "Precision")
SAVED_MODEL_PRECISIONS = ("auto", "fp32", "bf16")


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why and what to change."""


def to_uint8(image):
    """[-1, 1] float image -> uint8, rounded to the nearest level."""
    x = tf.cast(image, tf.float32)
    # x * 127.5 + 127.5, not (x + 1) * 127.5: in a full-integer TFLite graph the converter gave
    # the intermediate x + 1 the range of the product, [0, 255], and it lost 78% of the signal.
    return tf.cast(tf.clip_by_value(tf.round(x * 127.5 + 127.5), 0.0, 255.0), tf.uint8)


# --------------------------------------------------------------------------- the served module


class _Untracked:
    """A plain holder: tf.Module does not look inside it."""

    def __init__(self, **objects):
        self.__dict__.update(objects)


class GeneratorModule(tf.Module):
    """The generator (and encoder) with input checks, as served.

    Args:
        config: the run's ``Config``.
        generator: a built ``SPADEGenerator``.
        encoder: the ``ConvEncoder`` for the ``style`` signature (VAE models), or None.
    """

    def __init__(self, config: Config, generator, encoder=None):
        super().__init__(name="spade_generator")
        self.config = config
        # The Keras layers are kept out of tf.Module's tracking (behind _Untracked), and their
        # tf.Variables are listed instead, as keras.export.ExportArchive does. Tracking the layers
        # too would store every weight twice (Keras' own variable wrapper and the tf.Variable);
        # tracking only the layers reloads correctly but leaves the TFLite converter unable to
        # freeze the weights (READ_VARIABLE ops on uninitialized variables: constant output).
        self._nets = _Untracked(generator=generator, encoder=encoder)
        layers = [generator] + ([encoder] if encoder is not None else [])
        self.tf_variables = [v.value for layer in layers for v in layer.weights]
        self.height, self.width = (int(v) for v in generator.output_hw)

    @property
    def generator(self):
        return self._nets.generator

    @property
    def encoder(self):
        return self._nets.encoder

    # The checks: each one an InvalidArgumentError with a message for people.
    def _checks(self, label, instance=None, z=None, style=None):
        h, w = self.height, self.width
        n = tf.shape(label)[0]
        checks = [
            tf.debugging.assert_rank(label, 3, message="label must be [N, H, W] class ids"),
            tf.debugging.assert_positive(n, message="empty batch: label has N = 0 maps; send at "
                                                    "least one"),
            tf.debugging.assert_equal(
                tf.shape(label)[1:3], tf.constant([h, w]),
                message=f"label has the wrong H x W: this model takes [N, {h}, {w}] (height, "
                        f"width); resize the label map with nearest neighbour first"),
        ]
        if instance is not None:
            checks.append(tf.debugging.assert_equal(
                tf.shape(instance), tf.shape(label),
                message=f"instance must have the same shape as label: [N, {h}, {w}]"))
        if z is not None:
            checks.append(tf.debugging.assert_equal(
                tf.shape(z), tf.stack([n, self.generator.z_dim]),
                message=f"z must be [N, {self.generator.z_dim}] float32 (one latent per label map)"))
        if style is not None:
            checks.append(tf.debugging.assert_equal(
                tf.shape(style), tf.stack([n, h, w, 3]),
                message=f"style_image must be uint8 [N, {h}, {w}, 3], one per label map"))
        return checks

    @property
    def oasis(self) -> bool:
        return self.config.model.family is Family.OASIS

    def _noise_map_check(self, label, noise):
        h, w, zd = self.height, self.width, self.generator.z_dim
        return tf.debugging.assert_equal(
            tf.shape(noise), tf.stack([tf.shape(label)[0], h, w, zd]),
            message=f"noise_map must be float32 [N, {h}, {w}, {zd}]: one noise map per label map")

    def synthesize(self, label, instance=None, z=None, validate=True, positional=None,
                   noise=None, tflite_graph=None):
        """uint8 [N, H, W, 3] from int label (and instance, z) maps. CLADE with ICPE computes
        its positional map from the label map in the graph unless ``positional`` is given.
        OASIS: ``z`` (or ``noise``) is its noise, a vector [N, Z] per image or a map
        [N, H, W, Z]; without one, seed 0's noise.

        ``tflite_graph`` traces a TFLite graph instead (no checks: ``validate`` is ignored):
        ``cpu``, the one-hot by comparison (full int8); ``gpu``, the GPU delegate's forms
        (``kernels.delegate_forms``), whose image is float32 whole-number levels 0..255."""
        z = noise if noise is not None else z
        z = None if z is None else tf.convert_to_tensor(z, tf.float32)
        map_noise = z is not None and z.shape.rank == 4
        if tflite_graph not in (None, "cpu", "gpu"):
            raise ValueError(f"tflite_graph={tflite_graph!r}: None, 'cpu' or 'gpu'")
        validate = validate and tflite_graph is None
        onehot_form = {None: "one_hot", "cpu": "comparison", "gpu": "arithmetic"}[tflite_graph]
        checks = self._checks(label, instance, None if map_noise else z) if validate else []
        if validate and map_noise:
            checks.append(self._noise_map_check(label, z))
        with tf.control_dependencies(checks):
            sem = to_semantics(label, instance, config=self.config, validate=validate,
                               onehot_form=onehot_form)
        if self.oasis:
            if z is None and self.config.model.noise_3d:
                z = self.z_from_seeds(tf.zeros(tf.shape(label)[:1], tf.int64))
            image = self.generator(sem, noise=z, training=False)
        else:
            image = self.generator(sem, z=z, positional=positional, training=False)
        return float_levels(image) if tflite_graph == "gpu" else to_uint8(image)

    def style_z(self, style_image):
        """The encoder's mean latent of uint8 style images (deterministic; see the README)."""
        real = tf.cast(style_image, tf.float32) / 127.5 - 1.0
        mu, _ = self.encoder(real, training=False)
        return mu

    def z_from_seeds(self, seed):
        """One N(0, I) latent per int64 seed (stateless: the same seed, the same image)."""
        zdim = self.generator.z_dim
        return tf.map_fn(lambda s: latent_from_seed(s, zdim), tf.cast(seed, tf.int64),
                         fn_output_signature=tf.float32)


def _decode_pngs(strings, name, dtype, height, width):
    """Decodes a [N] string batch of single-channel PNGs, checking each one."""
    n = tf.shape(strings)[0]
    checks = [tf.debugging.assert_positive(n, message=f"empty batch: {name} has no PNG")]
    magic = tf.strings.substr(strings, 0, len(PNG_MAGIC))
    checks.append(tf.debugging.Assert(
        tf.reduce_all(tf.equal(magic, PNG_MAGIC)),
        [not_png_message(name)]))
    with tf.control_dependencies(checks):
        def one(s):
            img = tf.io.decode_png(s, channels=0, dtype=dtype)
            ok = tf.equal(tf.shape(img)[2], 1)
            with tf.control_dependencies([tf.debugging.Assert(ok, [
                    f"{name}: must be a single-channel (grayscale) PNG of ids; got channels:",
                    tf.shape(img)[2], "(palette and RGB PNGs are not id maps; `spade-tf request` "
                    "converts them)"])]):
                img = img[:, :, 0]
            same = tf.reduce_all(tf.equal(tf.shape(img), [height, width]))
            with tf.control_dependencies([tf.debugging.Assert(same, [
                    f"{name}: wrong H x W; this model takes {height} x {width}, got", tf.shape(img)])]):
                return tf.cast(img, tf.int32)
        return tf.map_fn(one, strings, fn_output_signature=tf.TensorSpec([None, None], tf.int32))


def _named_function(specs: list, body):
    """A ``tf.function`` over ``specs`` (positional, as signatures are) whose ``body`` gets its
    inputs by name: the specs' names, which are also the signature's input names. One builder
    for every combination of optional inputs (instance maps, z, seeds, a style image)."""
    names = [spec.name for spec in specs]

    def fn(*args):
        return body(**dict(zip(names, args)))

    return tf.function(fn, input_signature=specs)


def _signatures(module: GeneratorModule) -> dict:
    """The tf.functions for ``tf.saved_model.save``'s ``signatures``."""
    m = module.config.model
    use_inst, use_vae = m.use_instance, m.use_vae
    h, w = module.height, module.width
    label_spec = tf.TensorSpec([None, None, None], tf.int32, name="label")
    inst_spec = tf.TensorSpec([None, None, None], tf.int32, name="instance")
    z_spec = tf.TensorSpec([None, module.generator.z_dim], tf.float32, name="z")

    inst = [inst_spec] if use_inst else []
    default = _named_function([label_spec, *inst] + ([z_spec] if use_vae else []),
                              lambda label, instance=None, z=None:
                              {"image": module.synthesize(label, instance, z)})

    def png_body(label_png, instance_png=None, seed=None):
        label = _decode_pngs(label_png, "label_png", tf.uint8, h, w)
        # 16-bit decoding keeps Cityscapes-style instance ids; an 8-bit PNG comes back scaled
        # by 257, which keeps every id distinct, and only id changes matter (edges).
        instance = (None if instance_png is None
                    else _decode_pngs(instance_png, "instance_png", tf.uint16, h, w))
        z = None
        if seed is not None:
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(seed), tf.shape(label_png), message="seed must be [N]: one per PNG")]):
                z = module.z_from_seeds(seed)
        image = module.synthesize(label, instance, z)
        return {"image_png_bytes": tf.map_fn(tf.io.encode_png, image,
                                             fn_output_signature=tf.string)}

    png_spec = tf.TensorSpec([None], tf.string, name="label_png")
    ipng_spec = tf.TensorSpec([None], tf.string, name="instance_png")
    seed_spec = tf.TensorSpec([None], tf.int64, name="seed")
    png = _named_function([png_spec] + ([ipng_spec] if use_inst else [])
                          + ([seed_spec] if m.has_latent else []), png_body)
    sigs = {"serving_default": default, "png": png}
    if module.oasis and m.noise_3d:
        zd = module.generator.z_dim

        def seeded(label, seed, instance=None):
            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.shape(seed), tf.shape(label)[:1], message="seed must be [N]: one per map")]):
                z = module.z_from_seeds(seed)
            return {"image": module.synthesize(label, instance, z)}
        sigs["seed"] = _named_function([label_spec, *inst, seed_spec], seeded)
        sigs["noise"] = _named_function(
            [label_spec, *inst, tf.TensorSpec([None, zd], tf.float32, name="noise")],
            lambda label, noise, instance=None: {"image": module.synthesize(label, instance, noise)})
        sigs["noise_map"] = _named_function(
            [label_spec, *inst, tf.TensorSpec([None, None, None, zd], tf.float32, name="noise_map")],
            lambda label, noise_map, instance=None:
            {"image": module.synthesize(label, instance, noise=noise_map)})

    if use_vae and module.encoder is not None:
        style_spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="style_image")

        def style_body(label, style_image, instance=None):
            with tf.control_dependencies(module._checks(label, instance, style=style_image)):
                z = module.style_z(style_image)
            return {"image": module.synthesize(label, instance, z)}
        style = _named_function([label_spec, *inst, style_spec], style_body)
        sigs["style"] = style
    return sigs


def _tflite_function(module: GeneratorModule, graph: str = "cpu"):
    """The TFLite graph: batch 1, no asserts, no image coding, no RNG (pitfalls: those need the
    Flex delegate). Inputs are checked in Python by whoever runs it (``synthesize`` does).
    ``graph``: ``cpu`` or ``gpu`` (``GeneratorModule.synthesize``'s ``tflite_graph``)."""
    m = module.config.model
    h, w = module.height, module.width
    specs = [tf.TensorSpec([1, h, w], tf.int32, name="label")]
    if m.use_instance:
        specs.append(tf.TensorSpec([1, h, w], tf.int32, name="instance"))
    if m.use_vae:
        specs.append(tf.TensorSpec([1, module.generator.z_dim], tf.float32, name="z"))
    if m.clade_positional:  # ICPE: an input here (spade_tf.semantics.intra_class_offsets)
        specs.append(tf.TensorSpec([1, h, w, 2], tf.float32, name="positional"))
    if module.oasis and m.noise_3d:
        # OASIS' noise as a 3D map (a vector broadcast, or different noise per region); the
        # stateless RNG of the seeds is not a TFLite builtin
        specs.append(tf.TensorSpec([1, h, w, module.generator.z_dim], tf.float32, name="noise"))
    return _named_function(specs, lambda label, instance=None, z=None, positional=None, noise=None: {
        "image": module.synthesize(label, instance, z, positional=positional, noise=noise,
                                   tflite_graph=graph)})


# --------------------------------------------------------------------------- warm-up records


def _example_inputs(config: Config, height: int, width: int, count: int = 1) -> dict:
    """Deterministic, valid example inputs for warm-up requests and docs."""
    m = config.model
    rng = np.random.default_rng(0)
    label = np.zeros((count, height, width), np.int32)
    for i in range(count):  # vertical bands of a few classes: valid ids, some structure
        classes = rng.integers(0, m.num_classes, size=4)
        for j, c in enumerate(classes):
            label[i, :, j * width // 4:(j + 1) * width // 4] = c
    inputs = {"label": label}
    if m.use_instance:
        inputs["instance"] = label.copy()
    if m.use_vae:
        inputs["z"] = rng.standard_normal((count, m.z_dim)).astype(np.float32)
    return inputs


def write_warmup(path: Path, model_name: str, config: Config, height: int, width: int) -> int:
    """assets.extra/tf_serving_warmup_requests: PredictionLog records Serving replays at load."""
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
    except ImportError:
        raise ExportError("writing warm-up requests needs the tensorflow-serving-api protos: "
                          "pip install --no-deps tensorflow-serving-api==2.21.0 (it pins the full "
                          "tensorflow package otherwise)") from None
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in (1,):
            req = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
                name=model_name, signature_name="serving_default"))
            for k, v in _example_inputs(config, height, width, batch).items():
                req.inputs[k].CopyFrom(tf.make_tensor_proto(v))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=req))
            writer.write(log.SerializeToString())
            count += 1
    return count


# --------------------------------------------------------------------------- TFLite


def _flex_ops_from_error(message: str) -> list[str]:
    ops = re.findall(r"tf\.([A-Za-z0-9_]+)", message)
    return sorted(set(ops))


def convert_tflite(saved_model_dir: str, variant: str, representative=None) -> bytes:
    """Converts the ``serving_default`` signature of a TFLite-graph SavedModel; builtin ops only.

    Raises ``ExportError`` listing the ops that would need the Flex delegate.
    """
    if variant not in TFLITE_VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; allowed: {', '.join(TFLITE_VARIANTS)}")
    conv = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative is None:
            raise ValueError("full int8 needs a representative dataset")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        # int8 kernels wherever they exist; the int32 label input, one-hot and the uint8 output
        # stay as they are (they are not float ops).
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return conv.convert()
    except Exception as e:  # the converter raises ConverterError and friends
        msg = str(e)
        flex = _flex_ops_from_error(msg) if "Flex" in msg or "select" in msg.lower() else []
        if flex:
            raise ExportError(f"TFLite {variant}: these ops are not TFLite builtins and would need "
                              f"the Flex delegate: {', '.join(flex)}") from None
        raise ExportError(f"TFLite {variant} conversion failed: {msg[-2000:]}") from None


def cpu_tflite_perf(perf):
    """The CPU TFLite graph's forms from the machine's ``perf``. SparseSegmentSum
    (perf.label_conv=segment_sum) is not a TFLite builtin: the graph reads the label map with
    K*K GATHERs instead (the same numbers). It is dense (no perf.uniform_regions): the TFLite
    graph keeps static shapes; the regions' data-dependent ones (WHERE, then gathers of that
    many rows) were not tried there. Its batch norms are multiply-adds
    (perf.affine_inference_norm), for full int8, and CLADE's tables are read with GATHER
    (int8-exact lookups; a one-hot matmul would quantize the tables' products and sums)."""
    return dataclasses.replace(
        perf, uniform_regions=Toggle.OFF, affine_inference_norm=Toggle.ON,
        clade_lookup=CladeLookup.GATHER,
        label_conv=LabelConv.GATHER if perf.label_conv is LabelConv.SEGMENT_SUM else perf.label_conv)


def convert_generator(generator, config: Config, variant: str, representative=None) -> bytes:
    """One TFLite file of ``generator`` as ``export_generator`` writes it: the GPU graph for
    ``GPU_GRAPH_VARIANTS``, the CPU graph otherwise, with its metadata; for benchmarks and
    tools that need a file without the Serving export around it. ``representative``: full
    int8's calibration (a callable yielding input dicts)."""
    graph = "gpu" if variant in GPU_GRAPH_VARIANTS else "cpu"
    module = GeneratorModule(config, generator)
    with tempfile.TemporaryDirectory() as tmp:
        with perf_scope(generator, GPU_TFLITE_PERF if graph == "gpu"
                        else cpu_tflite_perf(generator.perf)):
            tf.saved_model.save(module, tmp, signatures={
                "serving_default": _tflite_function(module, graph)})
        blob = convert_tflite(tmp, variant, representative)
    return add_tflite_metadata(blob, tflite_metadata(config, module.height, module.width, graph))


def tflite_metadata(config: Config, height: int, width: int, graph: str = "cpu") -> dict:
    """The JSON a spade-tf ``.tflite`` carries: inputs, outputs, classes, the config; ``graph``
    is ``cpu`` (uint8 image) or ``gpu`` (the GPU delegate's graph: float32 levels)."""
    from spade_tf.data.labels import class_names

    m = config.model
    inputs = [{"name": "label", "dtype": "int32", "shape": [1, height, width],
               "description": f"class ids 0..{m.num_classes - 1}"
               + (f"; {m.num_classes} or 255 = dontcare" if m.contain_dontcare else "")}]
    if m.use_instance:
        inputs.append({"name": "instance", "dtype": "int32", "shape": [1, height, width],
                       "description": "instance ids (only changes between neighbours matter)"})
    if m.use_vae:
        inputs.append({"name": "z", "dtype": "float32", "shape": [1, m.z_dim],
                       "description": "style latent, N(0, I)"})
    if m.clade_positional:
        inputs.append({"name": "positional", "dtype": "float32", "shape": [1, height, width, 2],
                       "description": "CLADE's ICPE map of the label map: "
                                      "spade_tf.semantics.intra_class_offsets(label)"})
    if m.family is Family.OASIS and m.noise_3d:
        inputs.append({"name": "noise", "dtype": "float32", "shape": [1, height, width, m.z_dim],
                       "description": "OASIS' 3D noise, N(0, I): one z_dim vector repeated over "
                                      "the image, or different vectors per region"})
    return {
        "format": "spade-tf generator",
        "inputs": inputs,
        "graph": graph,
        "outputs": [{"name": "image", "dtype": "uint8" if graph == "cpu" else "float32",
                     "shape": [1, height, width, 3],
                     "description": "RGB image" if graph == "cpu" else
                     "RGB image as whole-number levels 0..255 (cast to uint8); the GPU "
                     "delegate takes no ROUND or CAST"}],
        "class_names": class_names(config.data.dataset, m.num_classes),
        "dataset": str(config.data.dataset),
        "config": config_to_dict(config),
    }


def add_tflite_metadata(model: bytes, metadata: dict, name: str = "spade_tf") -> bytes:
    """Embeds ``metadata`` (JSON) as a named metadata buffer in the flatbuffer. Interpreters
    ignore unknown metadata; ``read_tflite_metadata`` reads it back."""
    schema, flatbuffer_utils = tflite_schema()
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(metadata).encode(), np.uint8)
    obj.buffers.append(buf)
    md = schema.MetadataT()
    md.name = name
    md.buffer = len(obj.buffers) - 1
    obj.metadata = [m for m in (obj.metadata or []) if m.name != name.encode()] + [md]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


def read_tflite_metadata(model: bytes | str | os.PathLike, name: str = "spade_tf") -> dict | None:
    _, flatbuffer_utils = tflite_schema()
    if not isinstance(model, (bytes, bytearray)):
        model = Path(model).read_bytes()
    obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    for md in obj.metadata or []:
        if md.name in (name, name.encode()):
            return json.loads(bytes(obj.buffers[md.buffer].data).decode())
    return None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class TFLiteRunner:
    """Runs a spade-tf ``.tflite`` with ``ai-edge-litert``: named inputs in, uint8 image out.

    Args:
        model: the ``.tflite`` file, or its bytes.
        num_threads: interpreter threads; default every core this process may use. LiteRT's
            own default (``None``, i.e. -1) runs its XNNPACK delegate on ONE thread: the
            ade20k fp32 generator then took 4.17 s here against 2.24 s with both cores, and
            that default is what made TFLite look 1.8x slower than the SavedModel in the
            earlier benchmark runs (docs/performance.md, TFLite).
    """

    def __init__(self, model: bytes | str | os.PathLike, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        if not isinstance(model, (bytes, bytearray)):
            self.path = str(model)
            model = Path(model).read_bytes()
        else:
            self.path = "<bytes>"
        if num_threads is None:
            num_threads = available_cores()
        elif isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads={num_threads!r}: give a positive integer, or None "
                             f"for every available core ({available_cores()})")
        self.num_threads = num_threads
        self.metadata = read_tflite_metadata(model)
        self.interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        self.runner = self.interpreter.get_signature_runner("serving_default")
        self.input_details = self.runner.get_input_details()

    def __call__(self, **inputs) -> np.ndarray:
        out = []
        n = len(next(iter(inputs.values())))
        for i in range(n):  # the graph has batch 1
            feed = {k: np.asarray(v[i:i + 1]).astype(self.input_details[k]["dtype"]) for k, v in inputs.items()}
            if "instance" in feed:
                feed["instance"] = renumber_instances(feed["instance"])
            image = self.runner(**feed)["image"]
            # the GPU graph's float32 levels are whole numbers in [0, 255]: exact as uint8
            out.append(image if image.dtype == np.uint8 else image.astype(np.uint8))
        return np.concatenate(out, 0)


def renumber_instances(instance) -> np.ndarray:
    """Instance ids as 0..K-1 in order of value: the same edges (only changes between
    neighbours matter), and whole numbers that float16 holds exactly (the GPU graph computes
    its edges in floats, in half precision on a GPU, which holds ids up to 2048 exactly)."""
    _, dense = np.unique(np.asarray(instance), return_inverse=True)
    return dense.reshape(np.shape(instance)).astype(np.int32)


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 images (inf when identical)."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _db(x: float):
    """JSON-safe dB: None stands for identical (infinite PSNR)."""
    return None if x == float("inf") else round(x, 2)


# --------------------------------------------------------------------------- the whole export


@dataclasses.dataclass
class ExportResult:
    version_dir: Path
    tflite: dict  # variant -> path
    report: dict


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def representative_labels(config: Config, count: int = 16, split: str = "train"):
    """``count`` label (and instance) batches of 1 from ``split``: from the training split, the
    TFLite representative dataset and parity set; from ``val``, bf16's held-out check."""
    from spade_tf.data import build_dataset

    ds = build_dataset(config, split, batch_size=1, training=False)
    return [{k: v.numpy() for k, v in b.items() if k in ("label", "instance")} for b in ds.take(count)]


def _label_maps(config: Config, given, split: str, progress, count: int = 16):
    """(label maps as input dicts of batch 1, where they come from): ``given``, else ``count``
    maps of ``split``, else (data unreadable) synthetic maps, and the reason."""
    if given is not None:
        return given, "given"
    what = {"train": "training", "val": "validation"}.get(split, split)
    try:
        return representative_labels(config, count, split), f"{what} split"
    except (OSError, ValueError) as e:  # DataError is a ValueError
        # e.g. an imported official checkpoint on a machine without its dataset: still
        # export, checked on synthetic maps, and say so.
        progress(f"export: {what} data unreadable ({str(e)[:200]}); checking on {count} "
                 f"synthetic label maps instead")
        h, w = (int(v) for v in config.model.output_hw)
        synthetic = _example_inputs(config, h, w, count)
        return ([{k: v[i:i + 1] for k, v in synthetic.items() if k != "z"} for i in range(count)],
                f"synthetic ({what} data unreadable: {str(e)[:200]})")


def check_bf16(module: GeneratorModule, module_bf16: GeneratorModule, inputs) -> dict:
    """How far the bf16 module's images are from the float32 module's on ``inputs`` (input
    dicts of batch 1; a VAE gets one fixed latent per map): PSNR and levels."""
    rng = np.random.default_rng(1)
    ref, got = [], []
    for x in inputs:
        feed = {k: tf.constant(v) for k, v in x.items() if k in ("label", "instance")}
        if module.config.model.use_vae:
            feed["z"] = tf.constant(rng.standard_normal((1, module.config.model.z_dim)), tf.float32)
        ref.append(module.synthesize(**feed).numpy())
        got.append(module_bf16.synthesize(**feed).numpy())
    ref, got = np.concatenate(ref), np.concatenate(got)
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    return {"psnr_db_vs_fp32": _db(psnr(got, ref)), "max_abs_levels_vs_fp32": int(diff.max()),
            "mean_abs_levels_vs_fp32": round(float(diff.mean()), 3), "maps": len(inputs)}


def export_generator(checkpoint, out: str | os.PathLike, *, name: str | None = None,
                     version: int | None = None, tflite=DEFAULT_TFLITE, parity_inputs=None,
                     progress=print, keep_perf: bool = False,
                     precision: str = "fp32") -> ExportResult:
    """Exports a checkpoint (a folder from ``save_networks`` or a training run) for Serving and
    TFLite. See the module docstring for the layout.

    Args:
        checkpoint: checkpoint folder, or a ``(networks, config)`` pair already in memory.
        out: BASE of the Serving layout.
        name: model name (default: the config's ``export.name``).
        version: integer version (default: one above the highest present); an existing version
            is never overwritten.
        tflite: variants to write, from ``TFLITE_VARIANTS``. ``int8`` is written only if its PSNR
            against fp32 on the representative labels is at least ``INT8_MIN_PSNR_DB``;
            otherwise it is refused with the numbers (in the report; nothing else fails).
        parity_inputs: list of input dicts (batch 1) for the TFLite checks; default 16 label
            maps of the training split.
        progress: a callable for one-line progress messages.
        keep_perf: trace the SavedModel with this machine's ``perf`` forms (``--perf``). By
            default it gets the plain forms: a SavedModel freezes the forms it was traced with,
            and this machine's CPU forms (segment sums, uniform regions) are the wrong ones
            for a GPU Serving. A bf16 SavedModel always gets the plain forms (the CPU forms
            are slower in bf16). The report's ``saved_model_perf`` says which.
        precision: the SavedModel's arithmetic, ``fp32``, ``bf16`` (convs and matmuls in
            bfloat16, the norms' statistics and the image in float32, weights frozen as
            constants; ``spade_tf.precision``) or ``auto`` (what ``spade-tf export`` does: bf16
            on a CPU with AMX, ``precision.auto_bf16``, else fp32). bf16 is checked against float32
            on held-out label maps (the validation split); below ``BF16_MIN_PSNR_DB`` an
            explicit bf16 is refused with the numbers (``ExportError``; nothing is written) and
            auto falls back to fp32 (the report's ``precision_reason`` says why). The TFLite
            files are float32-based either way.
    """
    from spade_tf.networks import load_networks

    t0 = time.time()
    if isinstance(checkpoint, tuple):
        nets, config = checkpoint
        source = "<memory>"
    else:
        nets, config = load_networks(checkpoint, generator=True, discriminator=False)
        source = str(checkpoint)
    if precision not in SAVED_MODEL_PRECISIONS:
        raise ValueError(f"--precision {precision!r}: one of {', '.join(SAVED_MODEL_PRECISIONS)}")
    tflite = tuple(tflite or ())
    bad = [v for v in tflite if v not in TFLITE_VARIANTS]
    if bad:
        raise ValueError(f"--tflite: unknown variant(s) {', '.join(bad)}; allowed: {', '.join(TFLITE_VARIANTS)}")
    name = name or config.export.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"--name {name!r}: use letters, digits, '_', '-', '.' (it is a folder name)")
    model_dir = Path(out) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    final = model_dir / str(version)
    final_tfl = model_dir / f"{version}-tflite"
    if final.exists() or final_tfl.exists():
        raise FileExistsError(f"{final}: version {version} exists already; Serving may be serving "
                              f"it, so it is never overwritten (choose another --version)")

    from spade_tf.ema import inference_generator

    generator, weights = inference_generator(nets, config)
    progress(f"export: weights: {weights}")
    module = GeneratorModule(config, generator, nets.encoder)
    h, w = module.height, module.width
    requested = precision
    served, precision_report = module, {"precision": "fp32", "precision_requested": requested}
    hardware = None
    if precision == "auto":
        from spade_tf.precision import auto_bf16, bf16_hardware

        hardware = bf16_hardware()
        use_bf16, precision_report["precision_reason"] = auto_bf16(hardware)
        precision = "bf16" if use_bf16 else "fp32"
    if precision == "bf16":
        from spade_tf.precision import BF16_MIN_PSNR_DB, bf16_generator, bf16_hardware

        hardware = hardware or bf16_hardware()
        progress(f"export: bf16, checked against float32 ({hardware.what})")
        # weights as constants, folded (spade_tf.frozen_graph): oneDNN's bf16 convs reorder a
        # variable filter at every call
        # Always the plain forms: in bf16 the CPU forms (tuned in float32) are slower (ade20k,
        # frozen: 0.58 s against 0.35 s; docs/performance.md), and --perf is ignored.
        served = GeneratorModule(config, FrozenGenerator(bf16_generator(generator, config), PLAIN),
                                 nets.encoder)
        maps, source = _label_maps(config, None, "val", progress)
        precision_report.update({"precision": "bf16", "bf16_hardware": hardware.what,
                                 "bf16_check_source": source, **check_bf16(module, served, maps)})
        db = precision_report["psnr_db_vs_fp32"]
        progress(f"export: bf16 is {db} dB from float32 (max "
                 f"{precision_report['max_abs_levels_vs_fp32']} levels) on {len(maps)} maps")
        too_far = db is not None and db < BF16_MIN_PSNR_DB  # (None: identical images, inf dB)
        if too_far and requested == "auto":  # the choice was ours: fall back, and say why
            served, precision = module, "fp32"
            precision_report["precision"] = "fp32"
            precision_report["precision_reason"] = (
                f"auto: {hardware.what}, but bf16's images are {db} dB from float32's (below "
                f"{BF16_MIN_PSNR_DB:.0f} dB): fp32")
            progress(f"export: {precision_report['precision_reason']}")
        elif too_far:
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # made above for the version number; only if still empty
            raise ExportError(
                f"--precision bf16: its images are {db} dB PSNR from float32's (max "
                f"{precision_report['max_abs_levels_vs_fp32']} levels, mean "
                f"{precision_report['mean_abs_levels_vs_fp32']}) on {len(maps)} label maps "
                f"({source}); the bar is {BF16_MIN_PSNR_DB:.0f} dB, so nothing is written. "
                f"Export in fp32 (--precision fp32)")
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".tmp-{version}-"))
    try:
        sm_dir = tmp / "saved_model"
        progress(f"export: SavedModel ({generator.count_params():,} generator parameters, "
                 f"{precision})")
        keep_perf = keep_perf and precision == "fp32"  # (bf16: the plain forms, see above)
        sm_perf = generator.perf if keep_perf else PLAIN
        with contextlib.ExitStack() as stack:
            for net in (served.generator, nets.encoder):
                if net is not None and not isinstance(net, FrozenGenerator):  # (traced already)
                    stack.enter_context(perf_scope(net, sm_perf))
            tf.saved_model.save(served, str(sm_dir), signatures=_signatures(served))
        (sm_dir / "assets").mkdir(exist_ok=True)
        save_config(config, sm_dir / "assets" / "config.yaml")  # for synthesize and people
        (sm_dir / "assets.extra").mkdir(exist_ok=True)
        warm = write_warmup(sm_dir / "assets.extra" / WARMUP_FILE, name, config, h, w)
        t_sm = time.time() - t0
        report = {
            "source": source, "name": name, "version": version, "height": h, "width": w,
            "weights": weights, **precision_report,
            "saved_model_perf": {"forms": "this machine's (--perf)" if keep_perf else "plain",
                                 **{k: str(v.value) for k, v in
                                    dataclasses.asdict(sm_perf).items()}},
            "signatures": sorted(_signatures_names(config, nets.encoder is not None)),
            "saved_model_bytes": _dir_size(sm_dir), "saved_model_seconds": round(t_sm, 1),
            "warmup_requests": warm, "tflite": {},
        }
        tfl_paths = {}
        if tflite:
            tfl_tmp = tmp / "tflite"
            tfl_tmp.mkdir()
            graph_dir = tmp / "tflite_graph"
            graphs = {"cpu": (graph_dir, cpu_tflite_perf(generator.perf))}
            if any(v in GPU_GRAPH_VARIANTS for v in tflite):
                # The GPU delegate's graph: the plain forms, CLADE's lookups as a 1x1 conv, the
                # upsampling as resize ops (kernels/delegate_forms.py; docs/mobile.md)
                graphs["gpu"] = (tmp / "tflite_graph_gpu", GPU_TFLITE_PERF)
            for graph, (folder, graph_perf) in graphs.items():
                with perf_scope(generator, graph_perf):
                    tf.saved_model.save(module, str(folder), signatures={
                        "serving_default": _tflite_function(module, graph)})
            inputs, report["tflite_parity_source"] = _label_maps(config, parity_inputs, "train",
                                                                 progress)
            if config.model.use_vae:
                rng = np.random.default_rng(1)
                inputs = [{**x, "z": rng.standard_normal((1, config.model.z_dim)).astype(np.float32)}
                          for x in inputs]
            if config.model.family is Family.OASIS and config.model.noise_3d:
                # OASIS' noise input: one N(0, I) vector per map, broadcast (the usual use)
                rng = np.random.default_rng(1)
                zd = config.model.z_dim
                inputs = [{**x, "noise": np.broadcast_to(
                    rng.standard_normal((1, 1, 1, zd)), (1, h, w, zd)).astype(np.float32)}
                          for x in inputs]
            if config.model.clade_positional:  # the TFLite graph's ICPE input
                inputs = [{**x, "positional": intra_class_offsets(x["label"]).numpy()}
                          for x in inputs]
            keras_ref = np.concatenate([module.synthesize(**{k: tf.constant(v) for k, v in x.items()})
                                        .numpy() for x in inputs])
            fp32_out = None
            for variant in (["fp32"] if "int8" in tflite and "fp32" not in tflite else []) + list(tflite):
                graph = "gpu" if variant in GPU_GRAPH_VARIANTS else "cpu"
                progress(f"export: TFLite {variant}" + (" (the GPU delegate's graph)"
                                                        if graph == "gpu" else ""))
                t1 = time.time()

                def rep():
                    for x in inputs:
                        yield {k: v.astype(np.float32 if k in ("z", "positional", "noise")
                                           else np.int32)
                               for k, v in x.items()}
                blob = convert_tflite(str(graphs[graph][0]), variant,
                                      rep if variant == "int8" else None)
                blob = add_tflite_metadata(blob, tflite_metadata(config, h, w, graph))
                got = TFLiteRunner(blob)(**{k: np.concatenate([x[k] for x in inputs]) for k in inputs[0]})
                diff = np.abs(got.astype(np.int32) - keras_ref.astype(np.int32))
                entry = {"bytes": len(blob), "seconds": round(time.time() - t1, 1), "graph": graph,
                         **delegate_summary(blob),
                         "max_abs_levels_vs_keras": int(diff.max()),
                         "mean_abs_levels_vs_keras": round(float(diff.mean()), 3),
                         "psnr_db_vs_keras": _db(psnr(got, keras_ref))}
                if variant == "fp32":
                    fp32_out = got
                if fp32_out is not None and variant != "fp32":
                    entry["psnr_db_vs_fp32"] = _db(psnr(got, fp32_out))
                if variant == "int8" and psnr(got, fp32_out) < INT8_MIN_PSNR_DB:
                    entry["refused"] = (f"full int8 reaches {psnr(got, fp32_out):.1f} dB PSNR "
                                        f"against fp32 (max {entry['max_abs_levels_vs_keras']} levels "
                                        f"off Keras) on {len(inputs)} training label maps; the bar "
                                        f"is {INT8_MIN_PSNR_DB:.0f} dB, so it is not written")
                    progress(f"export: int8 refused: {entry['refused']}")
                elif variant in tflite:
                    path = tfl_tmp / f"{name}_{variant}.tflite"
                    path.write_bytes(blob)
                    tfl_paths[variant] = final_tfl / path.name
                if variant in tflite or variant == "fp32":
                    report["tflite"][variant] = entry
            report["tflite_parity_maps"] = len(inputs)
            for folder, _ in graphs.values():
                shutil.rmtree(folder)
        report["total_seconds"] = round(time.time() - t0, 1)
        (tmp / "export.json").write_text(json.dumps(report, indent=2) + "\n")
        # Into place: the report and the TFLite folder first, the Serving version folder last.
        os.replace(tmp / "export.json", model_dir / f"{version}-export.json")
        if tflite:
            os.replace(tmp / "tflite", final_tfl)
        os.replace(sm_dir, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"export: wrote {final} ({report['saved_model_bytes'] / 1e6:.1f} MB)"
             + (f" and {len(tfl_paths)} TFLite file(s) in {final_tfl}" if tfl_paths else ""))
    return ExportResult(final, tfl_paths, report)


def _signatures_names(config: Config, has_encoder: bool) -> list[str]:
    names = ["serving_default", "png"]
    if config.model.use_vae and has_encoder:
        names.append("style")
    if config.model.family is Family.OASIS and config.model.noise_3d:
        names += ["seed", "noise", "noise_map"]
    return names


def config_from_tflite_metadata(metadata: dict) -> Config:
    return merge_into(Config(), metadata["config"], where="tflite metadata")


def load_config_from_export(saved_model_dir: str | os.PathLike) -> Config:
    """The config stored in an export (assets/config.yaml)."""
    from spade_tf.config import load_config

    path = Path(saved_model_dir) / "assets" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{saved_model_dir}: not a spade-tf export (no assets/config.yaml)")
    return load_config(path)
