"""The model in the browser: LiteRT.js, the sidecar JSON, and the static page for phones.

LiteRT.js (npm ``@litertjs/core``, Apache-2.0) runs a ``.tflite`` in the browser with XNNPACK
compiled to WebAssembly. ``scripts/setup_venv.sh`` unpacks a pinned version into
``static/vendor/litertjs`` (``LITERTJS_DIR``); nothing is fetched at run time. It cannot read
the file's metadata, so the page reads the model's description from a sidecar JSON
(``sidecar``). ``export_web`` writes a self-contained folder that any static host serves, and
that works offline after the first visit (a service worker).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from spade_tf.config import Config, Family
from spade_tf.data.labels import class_names as preset_names
from spade_tf.data.labels import palette


STATIC = Path(__file__).resolve().parent / "static"
LITERTJS_DIR = STATIC / "vendor" / "litertjs"
# the relaxed-SIMD builds: one thread, and threads (cross-origin-isolated pages); the compat
# build serves browsers without relaxed SIMD (export_web(compat=True))
WASM_BUILDS = ("litert_wasm_internal", "litert_wasm_threaded_internal")
COMPAT_BUILD = "litert_wasm_compat_internal"
# The headers that make a page cross-origin isolated, which the threaded build needs
# (SharedArrayBuffer). The studio sends them; the --web folder's service worker adds them.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
                     "Cross-Origin-Embedder-Policy": "require-corp"}
# the page's own files, copied into the --web folder beside the runtime
PAGE_FILES = ("index.html", "studio.css", "studio.js", "here.js", "favicon.svg")


def model_info(config: Config, *, name: str, backend: str, has_style: bool,
               class_names: list[str] | None = None) -> dict:
    """The page's description of a model: size, classes (id, name, colour), dontcare, and
    whether it takes instance maps and a latent (seed or style image)."""
    m = config.model
    h, w = m.output_hw
    names = class_names or preset_names(config.data.dataset, m.num_classes)
    colors = ["#%02x%02x%02x" % tuple(int(v) for v in c)
              for c in palette(config.data.dataset, m.num_classes)]  # the last: dontcare
    classes = [{"id": i, "name": names[i], "color": colors[i]} for i in range(m.num_classes)]
    if m.contain_dontcare:
        classes.append({"id": 255, "name": "dontcare", "color": colors[m.num_classes]})
    return {"name": name, "backend": backend, "height": int(h), "width": int(w),
            "dataset": str(config.data.dataset), "classes": classes,
            "use_instance": bool(m.use_instance), "use_vae": bool(m.use_vae),
            # a seed per request ("new look"): a VAE's latent or OASIS' noise
            "has_latent": bool(m.has_latent), "family": str(m.family),
            # OASIS' noise is per pixel: one class's noise can be re-drawn ("re-roll")
            "regional_noise": bool(m.has_latent and m.family is Family.OASIS),
            "has_style": bool(has_style),
            "vae_note": "" if m.has_latent else
            "this model has no style latent (model.use_vae: false): a label map has one image, "
            "so there is no style upload and no new look"}


def litertjs_status() -> dict:
    """``{"available": bool, "version" or "reason": str}``: whether this install has LiteRT.js."""
    version = LITERTJS_DIR / "VERSION"
    missing = [p for p in ([LITERTJS_DIR / "core" / "index.js",
                            LITERTJS_DIR / "wasm-utils" / "index.js"]
                           + [LITERTJS_DIR / "wasm" / f"{b}.{ext}" for b in WASM_BUILDS
                              for ext in ("js", "wasm")]) if not p.is_file()]
    if missing or not version.is_file():
        return {"available": False,
                "reason": f"LiteRT.js is not installed ({LITERTJS_DIR} lacks "
                          f"{missing[0].name if missing else 'VERSION'}): run "
                          f"scripts/setup_venv.sh, which fetches it with npm"}
    return {"available": True, "version": version.read_text().strip()}


def sidecar(metadata: dict, info: dict) -> dict:
    """What the page needs to run a ``.tflite`` itself: the studio's model description
    (``info``: size, classes, colours) and, from the file's metadata, its inputs, its graph
    (``cpu``: uint8 image; ``gpu``: float32 levels) and the numbers the inputs depend on."""
    m = metadata["config"]["model"]
    return {**info, "format": "spade-tf sidecar", "graph": metadata.get("graph", "cpu"),
            "inputs": metadata["inputs"], "outputs": metadata["outputs"],
            "num_classes": int(m["num_classes"]), "contain_dontcare": bool(m["contain_dontcare"]),
            "z_dim": int(m.get("z_dim", 0))}


def _page(static_mode: bool) -> str:
    """index.html with its import map (LiteRT.js imports ``@litertjs/wasm-utils`` by name)
    and, for the --web folder, relative paths and the static-mode flag."""
    html = (STATIC / "index.html").read_text()
    if static_mode:
        html = html.replace('href="/static/', 'href="./').replace('src="/static/', 'src="./')
        html = html.replace('"/static/vendor/', '"./vendor/')
        html = html.replace("<head>", "<head>\n<script>window.SPADE_STATIC = true;</script>", 1)
    return html


SERVICE_WORKER = """// spade-tf --web: caches the page, the runtime and the model at the first visit, so that
// the page works offline; and adds the cross-origin-isolation headers to what it serves,
// so that the threaded runtime can run even where the static host sends no such headers.
const CACHE = "spade-tf-web-%(stamp)s";
const FILES = %(files)s;
self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});
self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys().then((keys) => Promise.all(
    keys.filter((k) => k.startsWith("spade-tf-web-") && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});
function isolated(response) {
  if (!response || response.status === 0) return response;
  const headers = new Headers(response.headers);
  headers.set("Cross-Origin-Opener-Policy", "same-origin");
  headers.set("Cross-Origin-Embedder-Policy", "require-corp");
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}
self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  event.respondWith(caches.match(event.request, { ignoreSearch: true }).then(
    (hit) => hit || fetch(event.request)).then(isolated));
});
"""

HOSTING_NOTE = """spade-tf: {name}, runs in the browser (LiteRT.js {version}, WebAssembly), offline after
the first visit.

Serve this folder with any static web server, e.g.  python3 -m http.server -d THIS_FOLDER 8000
and open http://localhost:8000/ (a service worker needs http://localhost or https).

Two threads need a cross-origin-isolated page. Send these two headers with every file:

    Cross-Origin-Opener-Policy: same-origin
    Cross-Origin-Embedder-Policy: require-corp

(`_headers` holds them for hosts that read it, such as Netlify and Cloudflare Pages.) Where
the host cannot send them, the page's service worker adds them from the second visit on;
until then the model runs on one thread.

Files: index.html and its scripts; model.tflite ({variant}) and model.json (its sidecar);
vendor/litertjs: LiteRT.js {version} from npm (@litertjs/core, @litertjs/wasm-utils), with
its licence.
"""


def export_web(tflite: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None,
               compat: bool = False, overwrite: bool = False) -> dict:
    """Writes the static page for ``tflite`` to ``out``: the painting page (touch included),
    LiteRT.js, the model, its sidecar and a service worker. Built in a temporary folder beside
    ``out`` and renamed into place.

    Args:
        tflite: a spade-tf ``.tflite`` (its metadata describes the model).
        out: the folder to write.
        name: the model's name on the page (default: the file's stem).
        compat: also ship LiteRT.js' build for browsers without relaxed SIMD (+9.6 MB).
        overwrite: replace an existing ``out``.

    Returns:
        a summary: files, bytes, the runtime's version.
    """
    from spade_tf.export import config_from_tflite_metadata, read_tflite_metadata

    status = litertjs_status()
    if not status["available"]:
        raise FileNotFoundError(status["reason"])
    tflite, out = Path(tflite), Path(out)
    metadata = read_tflite_metadata(tflite)
    if metadata is None:
        raise ValueError(f"{tflite}: no spade-tf metadata in this .tflite (export it with "
                         f"spade-tf export)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    config = config_from_tflite_metadata(metadata)
    name = name or tflite.stem
    info = model_info(config, name=name, backend=f"this device: {tflite.name}", has_style=False,
                      class_names=metadata.get("class_names"))
    info.update(examples=0, examples_note="this page has no examples: paint, or load a label map")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for f in PAGE_FILES:
            if f != "index.html":
                shutil.copy2(STATIC / f, tmp / f)
        (tmp / "index.html").write_text(_page(static_mode=True))
        shutil.copy2(tflite, tmp / "model.tflite")
        (tmp / "model.json").write_text(json.dumps(sidecar(metadata, info), indent=1) + "\n")
        vendor = tmp / "vendor" / "litertjs"
        for sub in ("core", "wasm-utils"):
            (vendor / sub).mkdir(parents=True)
            shutil.copy2(LITERTJS_DIR / sub / "index.js", vendor / sub / "index.js")
        (vendor / "wasm").mkdir()
        for build in WASM_BUILDS + ((COMPAT_BUILD,) if compat else ()):
            for ext in ("js", "wasm"):
                shutil.copy2(LITERTJS_DIR / "wasm" / f"{build}.{ext}", vendor / "wasm" / f"{build}.{ext}")
        for f in ("LICENSE", "VERSION"):
            if (LITERTJS_DIR / f).is_file():
                shutil.copy2(LITERTJS_DIR / f, vendor / f)
        files = sorted("./" + p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        stamp = f"{int(tflite.stat().st_mtime)}-{tflite.stat().st_size}"
        (tmp / "sw.js").write_text(SERVICE_WORKER % {"stamp": stamp,
                                                     "files": json.dumps(["./"] + files)})
        (tmp / "_headers").write_text("/*\n" + "".join(f"  {k}: {v}\n"
                                                       for k, v in ISOLATION_HEADERS.items()))
        (tmp / "README.txt").write_text(HOSTING_NOTE.format(
            name=name, version=status["version"], variant=tflite.name))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"out": str(out), "files": len(list(out.rglob("*"))), "bytes": total,
            "litertjs": status["version"], "model": tflite.name}


__all__ = ["LITERTJS_DIR", "ISOLATION_HEADERS", "export_web", "litertjs_status", "sidecar"]
