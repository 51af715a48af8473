"""The studio's HTTP server: the page, the model's description, and predictions in TensorFlow
Serving's REST format, from a model loaded here (``LocalBackend``) or forwarded to a running
TensorFlow Serving (``ServingBackend``).

Endpoints:

- ``GET /``, ``GET /static/<file>``: the page, from the package's ``static`` folder only;
- ``GET /studio/info``: size, classes and colours, instance and VAE use, the examples;
- ``GET /studio/example[?index=K]``: a label map (and instance map) of the validation split;
- ``POST /studio/decode-label``: an uploaded label file (PNG of ids, palette PNG, or a map
  colourised in the model's palette) as ids, checked with the export's messages;
- ``POST /v1/models/<name>:predict``: exactly Serving's REST predict (row format; signatures
  ``png``, ``style`` and ``serving_default``); errors as ``{"error": ...}`` with HTTP 400.
  One extension, for OASIS models: a ``png`` row may carry ``"class_seeds": {"<class id>":
  seed}``, which re-draws the noise of those classes' pixels only (``noise_map_from_seeds``;
  the page's "re-roll"). With ``--serving-url`` such rows go to Serving's ``noise_map``
  signature with the map built here.

The standard library's ``ThreadingHTTPServer`` serves each request on its own thread; a local
model runs one request at a time behind a lock (a TFLite interpreter is not thread-safe, and two
concurrent calls would only share the same cores). Request bodies above ``max_body`` bytes are
refused with 413 before they are read.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from spade_tf.config import Config, Family
from spade_tf.data.io import DataError, open_image, png_dimensions, read_index_map
from spade_tf.data.labels import palette
from spade_tf.serving_client import PNG_MAGIC, not_png_message
from spade_tf.studio.web import ISOLATION_HEADERS, litertjs_status, model_info, sidecar
from spade_tf.synthesize import Synthesizer, load_model_config, load_synthesizer

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 16 * 2**20  # a 1024x1024 style image as a JSON list is about 12 MB
MAX_PNG_PIXELS = 4096 * 4096  # any PNG the studio decodes (its header is checked first)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".png": "image/png",
                  ".svg": "image/svg+xml", ".ico": "image/x-icon",
                  # WebAssembly.instantiateStreaming insists on this type
                  ".wasm": "application/wasm", ".json": "application/json"}
_SERVING_URL = re.compile(r"^(https?://[^/]+)/v1/models/([^/:]+)(/versions/\d+|/labels/[^/:]+)?$")
log = logging.getLogger("spade_tf.studio")


class StudioError(ValueError):
    """A request the studio cannot serve: HTTP ``status``, and a message saying what to fix."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- what the page needs

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def ids_payload(label, instance=None) -> dict:
    """A label map (uint8 ids) and instance map (uint16, little-endian) as base64 bytes: the
    form in which the studio's own endpoints hand maps to the page."""
    label = np.asarray(label)
    out = {"height": int(label.shape[0]), "width": int(label.shape[1]),
           "label_b64": _b64(label.astype(np.uint8).tobytes()), "instance_b64": None}
    if instance is not None:
        out["instance_b64"] = _b64(np.asarray(instance).astype("<u2").tobytes())
    return out


def decode_label_file(data: bytes, config: Config, name: str = "uploaded label map") -> np.ndarray:
    """An uploaded label file as int32 ids [H, W], checked (size, ids) with the export's messages.

    Accepts what ``spade_tf.data.io.read_index_map`` reads (8- or 16-bit grayscale PNGs of ids,
    palette PNGs, RGB with R = G = B), and maps colourised in the model's own palette
    (``spade_tf.data.labels.colorize``): each colour becomes its class, and an unknown colour is
    an error that names the pixel.
    """
    img = open_image(data, name, MAX_PNG_PIXELS)
    m = config.model
    rgb = np.asarray(img.convert("RGB")) if img.mode in ("RGB", "RGBA") else None
    gray = rgb is None or (np.array_equal(rgb[..., 0], rgb[..., 1])
                           and np.array_equal(rgb[..., 0], rgb[..., 2]))
    if not gray:  # colourised: each colour of the palette is its class
        colors = palette(config.data.dataset, m.num_classes).astype(np.int64)
        ids = list(range(m.num_classes)) + ([255] if m.contain_dontcare else [])
        keys = colors[:len(ids)] @ np.array([65536, 256, 1])
        lookup = dict(zip(keys.tolist(), ids))
        flat = rgb.reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1])
        uniq, inverse = np.unique(flat, return_inverse=True)
        mapped = np.array([lookup.get(int(k), -1) for k in uniq])
        label = mapped[inverse].reshape(rgb.shape[:2])
        if (label < 0).any():
            y, x = (int(v[0]) for v in np.nonzero(label < 0))
            r, g, b = (int(v) for v in rgb[y, x])
            raise DataError(f"{name}: pixel (x={x}, y={y}) has colour #{r:02x}{g:02x}{b:02x}, "
                            f"which is not a class colour of this model's palette "
                            f"({config.data.dataset}); upload a PNG of class ids or a map "
                            f"colourised with this palette")
    else:
        label = read_index_map(io.BytesIO(data), name)
    # a --serving-url studio has no model here, but checks uploads as the export does
    return Synthesizer.for_config(config).check_label(label[None], name)[0]


class Examples:
    """Label maps of the validation split of the model's dataset, where it is readable."""

    def __init__(self, config: Config):
        self.config, self.count, self.note, self._source = config, 0, "", None
        try:
            from spade_tf.data.pipeline import make_source

            self._source = make_source(config, "val", training=False)
            self.count = int(self._source.count)
            if not self.count:
                self.note = f"the {config.data.dataset} validation split is empty"
        except (OSError, ValueError, ImportError) as e:
            self.note = f"the validation split is not readable here: {str(e)[:300]}"

    def get(self, index: int) -> dict:
        if not self.count:
            raise StudioError(f"no examples: {self.note}", 404)
        if not 0 <= index < self.count:
            raise StudioError(f"example index {index} out of range: 0..{self.count - 1}", 404)
        _, label, instance = self._source.load(index, np.random.default_rng(index))
        use_inst = self.config.model.use_instance
        return {**ids_payload(label, instance if use_inst else None), "index": index,
                "count": self.count}


# --------------------------------------------------------------------------- backends

def _json_rows(rows, key, dtype, shape_tail, k):
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise StudioError(f"instances[{k}].{key}: not a rectangular array of numbers") from None
    if arr.ndim != 2 + len(shape_tail) or tuple(arr.shape[2:]) != shape_tail:
        raise StudioError(f"instances[{k}].{key}: expected shape [H, W{''.join(f', {d}' for d in shape_tail)}], "
                          f"got {list(arr.shape)}")
    return arr.astype(dtype)


def load_json(body: bytes, what: str = "request body"):
    """``json.loads`` for bodies from the network: malformed JSON, and JSON nested too deeply
    for Python's parser (a ``RecursionError``, which is no ``ValueError``), are 400s."""
    try:
        return json.loads(body)
    except RecursionError:
        raise StudioError(f"{what}: JSON nested too deeply to parse") from None
    except ValueError as e:
        raise StudioError(f"{what} is not JSON: {e}") from None


def check_png_size(data: bytes, key: str, hw: tuple[int, int] | None) -> None:
    """Refuses a PNG by the size its header states, before a pixel is decoded: a label map
    must have the model's size (``hw``), and nothing may exceed ``MAX_PNG_PIXELS``. A 20,000 x
    20,000 PNG of zeros is 388 KB on the wire and took 5 s of CPU to decode before its size
    was refused."""
    size = png_dimensions(data)
    if size is None:
        return
    w, h = size
    if hw is not None and (h, w) != tuple(hw):
        raise StudioError(f"{key}: the PNG is {w} x {h} pixels (from its header); this model "
                          f"takes {hw[1]} x {hw[0]} (width x height); resize it with nearest "
                          f"neighbour first")
    if w * h > MAX_PNG_PIXELS:
        raise StudioError(f"{key}: the PNG is {w} x {h} = {w * h:,} pixels (from its header), "
                          f"more than the studio's limit of {MAX_PNG_PIXELS:,}")


def _png_input(row: dict, key: str, k: int, sixteen_bit: bool,
               hw: tuple[int, int] | None = None) -> np.ndarray:
    """One ``{"b64": ...}`` PNG input of the ``png`` signature, decoded as the export does,
    its size checked from its header first (``check_png_size``)."""
    value = row.get(key)
    if not (isinstance(value, dict) and isinstance(value.get("b64"), str)):
        raise StudioError(f"instances[{k}].{key}: expected {{\"b64\": \"<base64 PNG bytes>\"}}")
    try:
        data = base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise StudioError(f"instances[{k}].{key}: invalid base64 ({e})") from None
    if not data.startswith(PNG_MAGIC):
        raise StudioError(not_png_message(key))
    check_png_size(data, key, hw)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:
        raise StudioError(f"{key}: the PNG cannot be decoded ({type(e).__name__}: {e})") from None
    modes = ("L", "I;16", "I;16B", "I;16L", "I") if sixteen_bit else ("L",)
    if img.mode not in modes:
        raise StudioError(f"{key}: must be a single-channel (grayscale) PNG of ids; got mode "
                          f"{img.mode} (palette and RGB PNGs are not id maps; `spade-tf request` "
                          f"converts them)")
    return np.asarray(img).astype(np.int32)


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def class_seeds(row: dict, k: int, config: Config) -> dict | None:
    """The studio's ``class_seeds`` of a ``png`` row ({class id: seed}), checked; None when the
    row has none."""
    value = row.get("class_seeds")
    if value is None:
        return None
    m = config.model
    if not (m.has_latent and m.family is Family.OASIS):
        raise StudioError(f"instances[{k}].class_seeds: only OASIS models with 3D noise draw "
                          f"noise per class; this model is {m.family} "
                          f"{'with' if m.has_latent else 'without'} a latent")
    if not isinstance(value, dict):
        raise StudioError(f"instances[{k}].class_seeds: expected {{\"<class id>\": seed, ...}}")
    valid = set(range(m.num_classes)) | ({255} if m.contain_dontcare else set())
    out = {}
    for key, seed in value.items():
        try:
            c = int(key)
        except ValueError:
            c = None
        if c not in valid:
            raise StudioError(f"instances[{k}].class_seeds: {key!r} is not a class id of this "
                              f"model (0..{m.num_classes - 1}{', 255' if 255 in valid else ''})")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise StudioError(f"instances[{k}].class_seeds[{key!r}]: the seed must be an "
                              f"integer, got {seed!r}")
        out[c] = seed
    return out


def parse_predict(body: bytes) -> tuple[str, list]:
    """Serving's REST predict body (row format) -> (signature name, instances)."""
    req = load_json(body)
    if not isinstance(req, dict):
        raise StudioError("request body must be a JSON object: {\"signature_name\": ..., "
                          "\"instances\": [...]}")
    if "inputs" in req and "instances" not in req:
        raise StudioError("the studio takes Serving's row format (\"instances\"), not the "
                          "columnar \"inputs\"")
    rows = req.get("instances")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise StudioError("\"instances\" must be a non-empty list of objects, one per label map, "
                          "e.g. [{\"label_png\": {\"b64\": ...}}]")
    return str(req.get("signature_name", "serving_default")), rows


class LocalBackend:
    """Predictions from a model loaded in this process: anything ``spade-tf synthesize``
    accepts (``spade_tf.synthesize.load_synthesizer``), run exactly as ``synthesize`` runs it.

    The ``png`` signature's seeds become latents as the export's graph makes them
    (``spade_tf.export.latent_from_seed``), so a seed gives the same image here as on Serving.
    """

    def __init__(self, synth, name: str | None = None):
        self.synth = synth
        self.config = synth.config
        self.name = name or self.config.export.name
        self._lock = threading.Lock()

    @property
    def kind(self) -> str:
        return self.synth.kind

    @property
    def has_style(self) -> bool:
        return self.synth.has_style

    @property
    def tflite_path(self) -> str | None:
        """The ``.tflite`` this studio runs (the page can run it too), or None."""
        return self.synth.source if self.kind == "tflite" else None

    def _metadata(self) -> dict | None:
        return getattr(getattr(self.synth, "runner", None), "metadata", None)

    def info(self) -> dict:
        names = None
        metadata = self._metadata()
        if metadata and metadata.get("class_names"):
            names = list(metadata["class_names"])  # the names stored in the .tflite
        info = model_info(self.config, name=self.name, backend=f"{self.kind}: {self.synth.source}",
                          has_style=self.has_style, class_names=names)
        if self.tflite_path:  # the page may run the same file itself (LiteRT.js)
            info["here"] = litertjs_status()
        return info

    def sidecar(self) -> dict:
        """The description the page's own runtime needs (``spade_tf.studio.web.sidecar``)."""
        return sidecar(self._metadata(), self.info())

    def _run(self, fn, *args):
        with self._lock:
            t0 = time.perf_counter()
            out = fn(*args)
            return out, time.perf_counter() - t0

    def predict(self, body: bytes) -> tuple[int, dict, dict]:
        """(HTTP status, JSON answer, extra headers) for a REST predict body."""
        from spade_tf.latents import latent_from_seed, noise_map_from_seeds

        sig, rows = parse_predict(body)
        m = self.config.model
        hw = (self.synth.height, self.synth.width)
        preds, model_s = [], 0.0
        for k, row in enumerate(rows):
            if sig == "png":
                label = _png_input(row, "label_png", k, sixteen_bit=False, hw=hw)
                inst = (_png_input(row, "instance_png", k, sixteen_bit=True, hw=hw)
                        if m.use_instance else None)
                z = None
                if m.has_latent:
                    seed = row.get("seed")
                    if not isinstance(seed, int) or isinstance(seed, bool):
                        raise StudioError(f"instances[{k}].seed: this model has a latent "
                                          f"(a VAE's or OASIS' noise); send an integer seed per "
                                          f"label map")
                    z = latent_from_seed(seed, m.z_dim)[None]
                regions = class_seeds(row, k, self.config)
                label, inst = self.synth.check(label[None], None if inst is None else inst[None],
                                               "label_png")
                if regions:  # OASIS: a noise map, re-drawn inside the classes named
                    z = noise_map_from_seeds(label[0], row["seed"], regions, m.z_dim)[None]
                image, dt = self._run(self.synth, label, inst, z, "label_png")
                preds.append({"image_png_bytes": {"b64": _b64(_png_bytes(image[0]))}})
            elif sig in ("style", "serving_default"):
                if sig == "style" and not self.has_style:
                    raise StudioError(f"signature \"style\": this {self.kind} has no style "
                                      f"encoder (it needs a use_vae model's checkpoint or "
                                      f"SavedModel)")
                label = _json_rows(row.get("label"), "label", np.int32, (), k)
                inst = (_json_rows(row.get("instance"), "instance", np.int32, (), k)
                        if m.use_instance else None)
                inst = None if inst is None else inst[None]
                if sig == "style":
                    style = _json_rows(row.get("style_image"), "style_image", np.uint8, (3,), k)
                    image, dt = self._run(self.synth.style, label[None], inst, style[None], "label")
                else:
                    z = row.get("z")
                    z = None if z is None else np.asarray(z, np.float32)[None]
                    image, dt = self._run(self.synth, label[None], inst, z, "label")
                preds.append({"image": image[0].tolist()})
            else:
                known = ["png", "serving_default"] + (["style"] if self.has_style else [])
                raise StudioError(f"signature_name {sig!r}: this model serves "
                                  f"{', '.join(map(repr, known))}")
            model_s += dt
        return 200, {"predictions": preds}, {"X-Studio-Model-Ms": f"{model_s * 1e3:.1f}"}


def noise_map_request(body: bytes, config: Config) -> bytes:
    """A ``png`` body whose rows carry ``class_seeds`` (the studio's extension) as the same
    request to Serving's ``noise_map`` signature: ids, and the noise map built here. Other
    bodies are returned unchanged, to be forwarded as they are."""
    from spade_tf.latents import noise_map_from_seeds

    try:
        req = load_json(body)
    except StudioError:
        return body  # Serving answers it (a deep body is refused by parse_predict here first)
    rows = req.get("instances") if isinstance(req, dict) else None
    if (req.get("signature_name") != "png" or not isinstance(rows, list)
            or not any(isinstance(r, dict) and r.get("class_seeds") is not None for r in rows)):
        return body
    m = config.model
    out = []
    for k, row in enumerate(rows):
        regions = class_seeds(row, k, config) or {}
        seed = row.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise StudioError(f"instances[{k}].seed: class_seeds need the image's integer seed")
        label = _png_input(row, "label_png", k, sixteen_bit=False)
        new = {"label": label.tolist(),
               "noise_map": noise_map_from_seeds(label, seed, regions, m.z_dim).tolist()}
        if m.use_instance:
            new["instance"] = _png_input(row, "instance_png", k, sixteen_bit=True).tolist()
        out.append(new)
    return json.dumps({"signature_name": "noise_map", "instances": out}).encode()


class ServingBackend:
    """Forwards predictions to a running TensorFlow Serving (its REST API sends no CORS headers,
    so the page cannot call it directly). The model's description comes from ``config``, the
    export's own (``assets/config.yaml``); its weights are not loaded here.

    Args:
        url: ``http://HOST:8501/v1/models/NAME`` (optionally ``/versions/V`` or ``/labels/L``).
        config: the exported model's config.
        timeout: seconds to wait for Serving's answer.
    """

    tflite_path = None  # Serving runs SavedModels: the page cannot run them itself

    def __init__(self, url: str, config: Config, timeout: float = 120.0):
        url = url.rstrip("/")
        match = _SERVING_URL.match(url)
        if not match:
            raise ValueError(f"--serving-url {url!r}: expected http://HOST:8501/v1/models/NAME "
                             f"(optionally /versions/V), TensorFlow Serving's REST address")
        self.url, self.name, self.config, self.timeout = url, match.group(2), config, timeout
        self.kind = "serving"
        self.has_style = self._has_style()

    def _has_style(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/metadata", timeout=10) as r:
                meta = json.loads(r.read())
            sigs = meta["metadata"]["signature_def"]["signature_def"]
            return "style" in sigs
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("studio: cannot read %s/metadata; assuming the style signature is %s",
                        self.url, "there" if self.config.model.use_vae else "absent")
            return self.config.model.use_vae

    def info(self) -> dict:
        return model_info(self.config, name=self.name, backend=f"TensorFlow Serving: {self.url}",
                          has_style=self.has_style)

    def predict(self, body: bytes) -> tuple[int, dict, dict]:
        sig, rows = parse_predict(body)  # bad JSON stops here, not at Serving
        if sig == "png":  # PNG sizes from their headers (the first 24 bytes: 32 base64 chars)
            checker = Synthesizer.for_config(self.config)
            for row in rows:
                for key in ("label_png", "instance_png"):
                    value = row.get(key)
                    if isinstance(value, dict) and isinstance(value.get("b64"), str):
                        try:
                            head = base64.b64decode(value["b64"][:32])
                        except (binascii.Error, ValueError):
                            continue  # Serving names the bad base64
                        check_png_size(head, key, (checker.height, checker.width))
        sent = noise_map_request(body, self.config)
        req = urllib.request.Request(self.url + ":predict", data=sent, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                answer = json.loads(r.read())
            if sent is not body and isinstance(answer.get("predictions"), list):
                # Serving's row format names no output when a signature has one: the page
                # reads {"image": rows}
                answer["predictions"] = [p if isinstance(p, dict) else {"image": p}
                                         for p in answer["predictions"]]
            return r.status, answer, {}
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            try:
                answer = json.loads(text)
            except ValueError:
                answer = {"error": f"TensorFlow Serving answered HTTP {e.code}: {text[:500]}"}
            return e.code, answer, {}
        except (OSError, ValueError) as e:
            raise StudioError(f"cannot reach TensorFlow Serving at {self.url}: {e}", 502) from None


# --------------------------------------------------------------------------- the server

class _Handler(BaseHTTPRequestHandler):
    server: "StudioServer"
    protocol_version = "HTTP/1.1"
    server_version = "spade-tf-studio"
    # TCP_NODELAY: the headers and the body go out as two writes; with Nagle's algorithm the
    # second waits for the client's delayed ACK of the first, 40 ms on Linux (it was most of
    # the studio's own time per stroke before this line)
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # the CLI's -v shows requests
        log.info("%s %s", self.address_string(), fmt % args)

    # -- responses
    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        # cross-origin isolation: the browser runtime's threaded build needs SharedArrayBuffer
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _error(self, status: int, message: str):
        self._json(status, {"error": message})

    def _guard(self, fn):
        try:
            fn()
        except StudioError as e:
            self._error(e.status, str(e))
        except (DataError, ValueError) as e:
            self._error(400, str(e))
        except Exception as e:  # a bug: say so in the page, keep the traceback in the log
            log.error("studio: %s %s failed:\n%s", self.command, self.path, traceback.format_exc())
            self._error(500, f"internal error ({type(e).__name__}: {e}); the server's log has "
                             f"the traceback")

    # -- routes
    def do_GET(self):
        self._guard(self._get)

    def do_HEAD(self):
        self._guard(self._get)

    def do_POST(self):
        self._guard(self._post)

    def _path(self) -> tuple[str, dict]:
        parts = urllib.parse.urlsplit(self.path)
        return urllib.parse.unquote(parts.path), urllib.parse.parse_qs(parts.query)

    def _get(self):
        path, query = self._path()
        srv = self.server
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        if path == "/favicon.ico":  # what browsers ask for without a <link rel="icon">
            return self._static("favicon.svg")
        if path in ("/studio/model.tflite", "/studio/model.json"):
            tflite = srv.backend.tflite_path
            if tflite is None:
                raise StudioError("this studio serves no .tflite (run here needs spade-tf studio "
                                  "--model FILE.tflite)", 404)
            if path.endswith(".json"):
                return self._json(200, srv.backend.sidecar())
            return self._send(200, Path(tflite).read_bytes(), "application/octet-stream")
        if path == "/studio/info":
            return self._json(200, {**srv.info, "examples": srv.examples.count,
                                    "examples_note": srv.examples.note,
                                    "max_body_bytes": srv.max_body})
        if path == "/studio/example":
            raw = query.get("index", [None])[0]
            if raw is None:
                index = int(np.random.default_rng().integers(srv.examples.count or 1))
            else:
                try:
                    index = int(raw)
                except ValueError:
                    raise StudioError(f"example index {raw!r} is not an integer") from None
            return self._json(200, srv.examples.get(index))
        if path in (f"/v1/models/{srv.backend.name}", f"/v1/models/{srv.backend.name}/metadata"):
            # Serving's shape (the signatures' names; their tensors are not described), so that
            # a studio in front of this one reads it as it reads Serving's
            sigs = ["png", "serving_default"] + (["style"] if srv.info["has_style"] else [])
            return self._json(200, {"model_spec": {"name": srv.backend.name},
                                    "metadata": {"signature_def": {"signature_def": {
                                        s: {} for s in sigs}}},
                                    "studio": srv.info})
        raise StudioError(f"no such page: {path}", 404)

    def _static(self, rel: str):
        root = STATIC
        target = (root / rel).resolve()
        # only files inside the package's static folder: "..", absolute paths and symlinks
        # that lead elsewhere all resolve outside it
        if "\x00" in rel or root not in target.parents or not target.is_file():
            raise StudioError(f"no such page: /static/{rel}", 404)
        ctype = _CONTENT_TYPES.get(target.suffix, "application/octet-stream")
        self._send(200, target.read_bytes(), ctype)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise StudioError("chunked request bodies are not accepted; send Content-Length", 411)
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise StudioError("the request has no Content-Length", 411)
        try:
            n = int(raw)
        except ValueError:
            self.close_connection = True
            raise StudioError(f"Content-Length {raw!r} is not a number") from None
        if n < 0 or n > self.server.max_body:
            # not read: the connection is closed after the answer
            self.close_connection = True
            raise StudioError(f"request body of {n} bytes is larger than the studio's limit of "
                              f"{self.server.max_body} bytes (spade-tf studio --max-body-mb)", 413)
        return self.rfile.read(n)

    def _post(self):
        path, _ = self._path()
        srv = self.server
        body = self._body()
        if path == f"/v1/models/{srv.backend.name}:predict":
            status, answer, headers = srv.backend.predict(body)
            return self._json(status, answer, headers)
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            raise StudioError(f"no model {path[len('/v1/models/'):-len(':predict')]!r} here; "
                              f"this studio serves {srv.backend.name!r}", 404)
        if path == "/studio/decode-label":
            req = load_json(body)
            try:
                data = base64.b64decode(req["file"]["b64"], validate=True)
                filename = str(req.get("name", "uploaded label map"))
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise StudioError("expected {\"name\": ..., \"file\": {\"b64\": ...}}") from None
            check_png_size(data, filename, None)
            label = decode_label_file(data, srv.backend.config, filename)
            return self._json(200, ids_payload(label))
        raise StudioError(f"no such endpoint: POST {path}", 404)


class StudioServer(ThreadingHTTPServer):
    """The studio on ``address``: ``serve_forever()`` runs it; ``url`` is its address.

    Args:
        address: (host, port); port 0 picks a free one.
        backend: a ``LocalBackend`` or ``ServingBackend``.
        max_body: the largest request body accepted, in bytes (413 above).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, backend, max_body: int = MAX_BODY_BYTES):
        self.backend = backend
        self.max_body = int(max_body)
        self.info = backend.info()
        self.examples = Examples(backend.config)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


def start_studio(model=None, *, serving_url: str | None = None, host: str = "127.0.0.1",
                 port: int = 8000, max_body: int = MAX_BODY_BYTES) -> StudioServer:
    """A bound ``StudioServer`` (not yet serving) for ``model`` (anything ``spade-tf synthesize``
    accepts, or a loaded ``Synthesizer``), or, with ``serving_url``, for a TensorFlow Serving
    deployment of the export at ``model`` (only its config is read)."""
    if serving_url:
        if model is None:
            raise ValueError("--serving-url needs --model too: the export deployed there (a "
                             "SavedModel folder), for its size and classes; its weights are "
                             "not loaded")
        config = model.config if isinstance(model, Synthesizer) else load_model_config(model)
        backend = ServingBackend(serving_url, config)
    else:
        if model is None:
            raise ValueError("give --model PATH (a SavedModel folder, a .tflite file or a "
                             "training run folder) or --serving-url")
        backend = LocalBackend(model if isinstance(model, Synthesizer) else load_synthesizer(model))
    return StudioServer((host, port), backend, max_body)

