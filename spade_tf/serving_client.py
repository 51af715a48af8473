"""Requests for a spade-tf model on TensorFlow Serving, and decoding of its answers.

REST (``POST /v1/models/NAME[/versions/V]:predict``) uses the ``png`` signature in Serving's
row format: each instance is an object of named inputs; bytes go as ``{"b64": ...}``. The answer
is ``{"predictions": [...]}``; the output name ends in ``_bytes``, so Serving base64-encodes it.

gRPC uses ``tensorflow_serving.apis.predict_pb2.PredictRequest`` with ``TensorProto`` inputs
(``tf.make_tensor_proto``), answered by a ``PredictResponse`` (``tf.make_ndarray``).

Label maps travel as single-channel 8-bit PNGs of class ids, instance maps as 16-bit PNGs; the
helpers here re-encode any label file that ``spade_tf.data.io.read_index_map`` reads (palette,
grayscale, 16-bit) into that form.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

PNG_SIGNATURE = "png"
OUTPUT = "image_png_bytes"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"  # the first bytes of every PNG file


def not_png_message(name: str) -> str:
    """What the ``png`` signature answers for an input that is not a PNG (the export's graph
    and the studio both say it)."""
    return (f"{name}: not a PNG image (the bytes do not start with the PNG signature); send the "
            f"PNG file's bytes, base64-encoded in REST JSON as {{\"b64\": ...}}")


def encode_label_png(label) -> bytes:
    """int [H, W] class ids (0..255) -> 8-bit grayscale PNG bytes."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {label.shape}")
    if label.min() < 0 or label.max() > 255:
        raise ValueError(f"label ids must be 0..255 for an 8-bit PNG, got {label.min()}..{label.max()}")
    buf = io.BytesIO()
    Image.fromarray(label.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def encode_instance_png(instance) -> bytes:
    """int [H, W] instance ids (0..65535) -> 16-bit grayscale PNG bytes."""
    instance = np.asarray(instance)
    if instance.min() < 0 or instance.max() > 65535:
        raise ValueError(f"instance ids must be 0..65535, got {instance.min()}..{instance.max()}")
    buf = io.BytesIO()
    Image.fromarray(instance.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def rest_body(label_pngs, instance_pngs=None, seeds=None, signature=PNG_SIGNATURE) -> dict:
    """The JSON body of a REST predict request (row format)."""
    instances = []
    for i, label in enumerate(label_pngs):
        row = {"label_png": {"b64": base64.b64encode(label).decode("ascii")}}
        if instance_pngs is not None:
            row["instance_png"] = {"b64": base64.b64encode(instance_pngs[i]).decode("ascii")}
        if seeds is not None:
            row["seed"] = int(seeds[i])
        instances.append(row)
    return {"signature_name": signature, "instances": instances}


def decode_rest_response(body: dict) -> list[bytes]:
    """PNG bytes from a REST predict answer (``predictions`` of ``{"b64": ...}``)."""
    if "error" in body:
        raise RuntimeError(f"the model server answered with an error: {body['error']}")
    out = []
    for p in body.get("predictions", body.get("outputs", [])):
        if isinstance(p, dict) and OUTPUT in p:  # several outputs: named
            p = p[OUTPUT]
        if not (isinstance(p, dict) and "b64" in p):
            raise ValueError(f"unexpected prediction entry {str(p)[:80]!r}: expected {{'b64': ...}}")
        out.append(base64.b64decode(p["b64"]))
    return out


def grpc_request(model_name, label_pngs, instance_pngs=None, seeds=None, version=None,
                 signature=PNG_SIGNATURE):
    """A ``PredictRequest`` for ``PredictionService.Predict``."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model_name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = int(version)
    req.inputs["label_png"].CopyFrom(tf.make_tensor_proto(list(label_pngs), dtype=tf.string))
    if instance_pngs is not None:
        req.inputs["instance_png"].CopyFrom(tf.make_tensor_proto(list(instance_pngs), dtype=tf.string))
    if seeds is not None:
        req.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.asarray(seeds, np.int64)))
    return req


def decode_grpc_response(response) -> list[bytes]:
    import tensorflow as tf

    return [bytes(b) for b in tf.make_ndarray(response.outputs[OUTPUT]).ravel()]
