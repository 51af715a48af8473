#!/usr/bin/env python3
"""The model in the browser against native LiteRT, in one run; and a try of WebGPU.

For the light preset (the packaged model) and the phone preset (``mobile``, CLADE ngf 32 at
256 px, initial weights with statistics run in: spade_tf.benchmarking.prepared_generator), the
int8 file (CPU graph) and the fp16 file (the GPU delegate's graph), as ``spade-tf export``
writes them: medians of ``--repeats`` runs after a warm-up, batch 1,

- native: LiteRT (ai-edge-litert, XNNPACK) on 1 and 2 threads;
- browser: LiteRT.js (WebAssembly, XNNPACK) in headless Chromium on 1 and 2 threads (the
  threaded build, on a cross-origin-isolated page), one fresh page per configuration;

and whether the browser's image equals the native one (max difference in levels).
``--webgpu`` also runs each fp16 file with LiteRT.js' WebGPU accelerator (the JSPI build;
SwiftShader where there is no GPU) and records what happens, verbatim.

    .venv/bin/python scripts/bench_browser.py --markdown docs/benchmarks/browser.md \\
        --json docs/benchmarks/browser.json --webgpu
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from spade_tf.benchmarking import (command_line, inputs_for, machine_info,  # noqa: E402
                                   median_seconds, prepared_generator, write_results)
from spade_tf.config import load_config  # noqa: E402
from spade_tf.export import TFLiteRunner, convert_generator  # noqa: E402
from spade_tf.studio.web import ISOLATION_HEADERS, LITERTJS_DIR, export_web  # noqa: E402

JSPI_BUILD = "litert_wasm_jspi_internal"

MODELS = {"light (synthscapes_light; trained)": ("synthscapes_light", "pretrained"),
          "phone (mobile; CLADE ngf 32)": ("mobile", None)}
VARIANTS = ("int8", "fp16")
WEBGPU_REPEATS = 3

# A blank page beside the --web folder's files: the runtime is loaded by the benchmark itself.
BENCH_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script type="importmap">{"imports": {"@litertjs/wasm-utils": "./vendor/litertjs/wasm-utils/index.js"}}</script>
</head><body></body></html>"""
BENCH_SCRIPT = """
const [threads, repeats, accelerator, feedData] = arguments;
const done = (r) => { window.benchResult = r; };
window.benchResult = null;
(async () => {
  try {
    const here = await import("./here.js");
    const info = await (await fetch("./model.json")).json();
    const runner = await here.loadModel(info, "./model.tflite", {threads, accelerator});
    const labels = Int32Array.from(feedData.label), inst = feedData.instance ? Int32Array.from(feedData.instance) : null;
    // warm-up: at least 3 runs and 2 s, for Chromium's optimizing tier to replace the
    // baseline code of the wasm module (it compiles hot functions in the background)
    let out;
    for (let i = 0, t0 = performance.now(); i < 3 || performance.now() - t0 < 2000; i++) {
      out = await runner.run(labels, inst);
    }
    const times = [];
    for (let i = 0; i < repeats; i++) { out = await runner.run(labels, inst); times.push(out.ms); }
    times.sort((a, b) => a - b);
    const rgb = [];
    for (let p = 0; p < out.rgba.length; p += 4) rgb.push(out.rgba[p], out.rgba[p + 1], out.rgba[p + 2]);
    done({ok: true, median_ms: times[(times.length - 1) >> 1], times_ms: times, repeats, where: runner.where,
          isolated: self.crossOriginIsolated, rgb});
  } catch (e) {
    // a runtime file that failed to load rejects with the script element's error Event
    done({ok: false, error: (e instanceof Event)
      ? `${e.type} event on ${e.target && (e.target.src || e.target.tagName)}` : String(e && e.stack || e)});
  }
})();
"""


class _Isolated(http.server.SimpleHTTPRequestHandler):
    """A static server that sends the cross-origin-isolation headers (two threads)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def end_headers(self):
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        super().end_headers()

    def log_message(self, *args):
        pass


def bench_folder(tflite: Path, web: Path) -> Path:
    """The --web folder of ``tflite``, with the bench page and LiteRT.js' JSPI build (which
    WebGPU needs; the --web page does not ship it)."""
    export_web(tflite, web)
    (web / "bench.html").write_text(BENCH_PAGE)
    for ext in ("js", "wasm"):
        shutil.copy2(LITERTJS_DIR / "wasm" / f"{JSPI_BUILD}.{ext}", web / "vendor" / "litertjs" / "wasm")
    return web


def serve(folder: Path):
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Isolated, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/bench.html"


def in_browser(url, threads, repeats, feed, accelerator="wasm"):
    """The bench script's result on a fresh page, with the distinct WebGPU validation
    messages the page logged (``gpu_messages``; Chromium reports them as "rendering" logs)."""
    from spade_tf.studio.browser import headless_chromium

    gpu = accelerator == "webgpu"
    driver = headless_chromium(webgpu=gpu)
    try:
        driver.get(url)
        # started, then polled: one WebDriver call may not outlast Selenium's 120 s read timeout
        driver.execute_script(BENCH_SCRIPT, threads, repeats, accelerator,
                              {k: np.asarray(v).ravel().tolist() for k, v in feed.items()})
        deadline = time.monotonic() + 3600
        while (got := driver.execute_script("return window.benchResult;")) is None:
            if time.monotonic() > deadline:
                got = {"ok": False, "error": "no result within an hour"}
                break
            time.sleep(1.0)
        if gpu:
            messages = [e["message"].split(" - ", 1)[-1] for e in driver.get_log("browser")
                        if e.get("source") == "rendering"]
            got["gpu_messages"] = list(dict.fromkeys(messages))
        return got
    finally:
        driver.quit()


def bench(name, repeats, webgpu, log):
    preset, checkpoint = MODELS[name]
    rng = np.random.default_rng(0)
    g, config, weights = prepared_generator(load_config(preset), rng, checkpoint)
    calib, test = inputs_for(config, rng, 8), inputs_for(config, rng, 1)[0]
    h, w = (int(v) for v in config.model.output_hw)
    rows, later = [], []
    for variant in VARIANTS:
        blob = convert_generator(g, config, variant,
                                 (lambda: iter(dict(x) for x in calib)) if variant == "int8" else None)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{variant}.tflite"
            path.write_bytes(blob)
            web = bench_folder(path, Path(tmp) / "web")
            row = {"model": name, "variant": variant, "size": f"{h}x{w}", "weights": weights,
                   "bytes": len(blob)}
            native = {}
            for threads in (1, 2):
                runner = TFLiteRunner(blob, num_threads=threads)
                feed = {k: v.astype(runner.input_details[k]["dtype"]) for k, v in test.items()}
                row[f"native_{threads}t_ms"] = round(1e3 * median_seconds(
                    lambda: runner.runner(**feed), repeats)[0], 2)
                native[threads] = runner(**test)[0]
            httpd, url = serve(web)
            try:
                for threads in (1, 2):
                    got = in_browser(url, threads, repeats, test)
                    if not got["ok"]:
                        row[f"browser_{threads}t_error"] = got["error"][:500]
                        log(f"{name} {variant} browser {threads} thread(s): {got['error'][:300]}")
                        continue
                    row[f"browser_{threads}t_ms"] = round(got["median_ms"], 2)
                    row[f"browser_{threads}t_times_ms"] = [round(t, 1) for t in got["times_ms"]]
                    image = np.asarray(got["rgb"], np.int32).reshape(h, w, 3)
                    row[f"browser_{threads}t_max_levels_vs_native"] = int(
                        np.abs(image - native[1].astype(np.int32)).max())
            finally:
                httpd.shutdown()
                httpd.server_close()
        if webgpu and variant == "fp16":
            later.append((row, blob, test, native[1]))
        log(json.dumps(row))
        rows.append(row)
    return rows, later


def try_webgpu(later, repeats, log):
    """The fp16 files on LiteRT.js' WebGPU accelerator, after every timing above: SwiftShader
    keeps the CPU busy (seconds per image at 256 px, so at most WEBGPU_REPEATS runs)."""
    for row, blob, test, native in later:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fp16.tflite"
            path.write_bytes(blob)
            httpd, url = serve(bench_folder(path, Path(tmp) / "web"))
            try:
                got = in_browser(url, 1, min(repeats, WEBGPU_REPEATS), test, accelerator="webgpu")
            finally:
                httpd.shutdown()
                httpd.server_close()
        if got.get("ok"):
            diff = np.abs(np.asarray(got.pop("rgb"), np.int32).reshape(native.shape)
                          - native.astype(np.int32))
            got.update(median_ms=round(got["median_ms"], 2), max_levels_vs_native=int(diff.max()),
                       mean_levels_vs_native=round(float(diff.mean()), 2))
            got["times_ms"] = [round(t, 1) for t in got["times_ms"]]
        row["webgpu"] = got
        log(f"{row['model']} fp16 WebGPU: {json.dumps(got)}")


def markdown(result) -> str:
    info = result["machine"]
    out = [f"machine: {info['cpu']}, {info['isa']}, {info['cores']} cores; LiteRT "
           f"(ai-edge-litert) against LiteRT.js {result['litertjs']} in headless Chromium; "
           f"{info['date']}; batch 1, medians of {result['repeats']} runs after a warm-up (at least 3 runs and 2 s in the browser).", "",
           f"Reproduce: `.venv/bin/python {result['command']}`.", "",
           "| model | file | MB | native 1 thread ms | native 2 threads ms | browser 1 thread ms | "
           "browser 2 threads ms | browser vs native, max levels |",
           "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        def cell(key):
            return str(r[key]) if key in r else "failed" if key.replace("_ms", "_error") in r else ""
        diff = max((r[k] for k in r if k.endswith("max_levels_vs_native")), default="")
        out.append(f"| {r['model']} | {r['variant']} | {r['bytes'] / 1e6:.1f} | "
                   f"{cell('native_1t_ms')} | {cell('native_2t_ms')} | {cell('browser_1t_ms')} | "
                   f"{cell('browser_2t_ms')} | {diff} |")
    webgpu = [r for r in result["rows"] if "webgpu" in r]
    if webgpu:
        out += ["", "WebGPU: LiteRT.js `accelerator: 'webgpu'` (JSPI build) in headless Chromium on "
                "SwiftShader (Vulkan on the CPU: its times say nothing of a GPU), the fp16 files, "
                "after every timing above:", "",
                "| model | ran | median ms | runs | max levels vs native | mean levels vs native "
                "| WebGPU messages |", "|---|---|---|---|---|---|---|"]
        for r in webgpu:
            g = r["webgpu"]
            if g.get("ok"):
                msgs = "; ".join(m.splitlines()[0] for m in g["gpu_messages"]) or "none"
                out.append(f"| {r['model']} | yes | {g['median_ms']} | {g['repeats']} | "
                           f"{g['max_levels_vs_native']} | {g['mean_levels_vs_native']} | {msgs} |")
            else:
                out.append(f"| {r['model']} | no: `{g['error'][:300]}` | | | | | |")
    return "\n".join(out) + "\n"


def main() -> None:
    from spade_tf.studio.web import litertjs_status

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per latency (median)")
    p.add_argument("--webgpu", action="store_true", help="also try LiteRT.js' WebGPU accelerator")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--markdown", metavar="PATH")
    args = p.parse_args()
    status = litertjs_status()
    if not status["available"]:
        raise SystemExit(status["reason"])
    rows, later = [], []
    log = lambda m: print(m, flush=True)  # noqa: E731
    for name in args.models.split(","):
        got, pending = bench(name, args.repeats, args.webgpu, log)
        rows += got
        later += pending
    try_webgpu(later, args.repeats, log)
    result = {"machine": machine_info(), "repeats": args.repeats, "rows": rows,
              "litertjs": status["version"],
              "command": command_line("scripts/bench_browser.py", p, args)}
    write_results(result, markdown(result), args.json, args.markdown)


if __name__ == "__main__":
    main()
