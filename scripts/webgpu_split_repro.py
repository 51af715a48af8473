#!/usr/bin/env python3
"""The minimal reproducer of a LiteRT.js WebGPU bug: a split, then y * a + b, gives zeros.

Two tiny TFLite graphs compute ``y * a + b`` where ``a`` and ``b`` are the two halves of
``x @ w`` (the form of CLADE's gamma/beta lookup). One takes the halves with ``tf.split``
(``SPLIT``; ``SPLIT_V`` for unequal parts fails alike), the other with two slices (``STRIDED_SLICE``). LiteRT (ai-edge-litert) gives the
same numbers for both; LiteRT.js' WebGPU accelerator (headless Chromium, SwiftShader) gives
the sliced one right, and for the split one logs a WebGPU validation error ("usage
(TextureBinding|Storage(write-only)) includes writable usage and another usage in the same
synchronization scope": one texture bound as an op's input and its output) and returns zeros.
spade_tf/kernels/class_tables.py therefore slices. docs/mobile.md records the output.

    .venv/bin/python scripts/webgpu_split_repro.py [--size 2] [--channels 8]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

RUN = """
const [names, x, y, shapes, done] = arguments;
(async () => {
  const L = await import("./vendor/litertjs/core/index.js");
  await L.loadLiteRt("./vendor/litertjs/wasm/", {jspi: true});
  const out = {};
  for (const n of names) {
    try {
      const m = await L.loadAndCompile(`./${n}.tflite`, {accelerator: "webgpu"});
      const feed = {x: new L.Tensor(Float32Array.from(x), shapes.x),
                    y: new L.Tensor(Float32Array.from(y), shapes.y)};
      const r = await m.run(feed);
      out[n] = Array.from(await Object.values(r)[0].data());
    } catch (e) { out[n] = String(e && e.stack || e); }
  }
  done(out);
})();
"""
PAGE = """<!doctype html><meta charset="utf-8"><script type="importmap">
{"imports": {"@litertjs/wasm-utils": "./vendor/litertjs/wasm-utils/index.js"}}</script>"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def graph(size: int, channels: int, split: bool, w: np.ndarray) -> bytes:
    def f(x, y):
        h = tf.reshape(tf.matmul(tf.reshape(x, (-1, w.shape[0])), w), (1, size, size, 2 * channels))
        a, b = tf.split(h, 2, axis=-1) if split else (h[..., :channels], h[..., channels:])
        return {"out": y * a + b}

    fn = tf.function(f, input_signature=[tf.TensorSpec((1, size, size, w.shape[0]), name="x"),
                                          tf.TensorSpec((1, size, size, channels), name="y")])
    with tempfile.TemporaryDirectory() as tmp:
        module = tf.Module()
        module.f = fn
        tf.saved_model.save(module, tmp, signatures={"serving_default": fn})
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from spade_tf.studio.browser import headless_chromium
    from spade_tf.studio.web import LITERTJS_DIR, litertjs_status

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2, help="height and width of the maps")
    p.add_argument("--channels", type=int, default=8, help="channels of y, a and b")
    args = p.parse_args()
    status = litertjs_status()
    if not status["available"]:
        raise SystemExit(status["reason"])
    rng = np.random.default_rng(0)
    w = rng.normal(size=(9, 2 * args.channels)).astype(np.float32)
    x = rng.normal(size=(1, args.size, args.size, 9)).astype(np.float32)
    y = rng.normal(size=(1, args.size, args.size, args.channels)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(LITERTJS_DIR, root / "vendor" / "litertjs")
        (root / "index.html").write_text(PAGE)
        native = {}
        for name, split in (("split", True), ("slices", False)):
            blob = graph(args.size, args.channels, split, w)
            (root / f"{name}.tflite").write_bytes(blob)
            runner = Interpreter(model_content=blob).get_signature_runner()
            native[name] = runner(x=x, y=y)["out"]
            print(f"{name}: ops", [o["op_name"] for o in
                                   Interpreter(model_content=blob)._get_ops_details()])
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(
            _Quiet, directory=str(root)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        driver = headless_chromium(webgpu=True)
        try:
            driver.set_script_timeout(300)
            driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
            got = driver.execute_async_script(RUN, ["split", "slices"], x.ravel().tolist(),
                                              y.ravel().tolist(), {"x": list(x.shape),
                                                                   "y": list(y.shape)})
            log = [e["message"] for e in driver.get_log("browser") if e.get("source") == "rendering"]
        finally:
            driver.quit()
            httpd.shutdown()
    print(f"LiteRT.js {status['version']}, WebGPU, headless Chromium; LiteRT native for reference")
    for name in ("split", "slices"):
        if isinstance(got[name], str):
            print(f"{name}: error {got[name][:400]}")
            continue
        diff = np.abs(np.asarray(got[name], np.float32) - native[name].ravel()).max()
        print(f"{name}: max |WebGPU - native| = {diff:.3g} (max |native| = "
              f"{np.abs(native[name]).max():.3g}); first values {np.round(got[name][:4], 3).tolist()}")
    print("WebGPU messages:", *dict.fromkeys(m.split(" - ", 1)[-1].strip() for m in log) or ["none"],
          sep="\n  ")


if __name__ == "__main__":
    main()
