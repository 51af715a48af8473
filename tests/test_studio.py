"""The studio (``spade-tf studio``): its HTTP API, and its page in a real headless Chromium.

A tiny synthscapes model is trained for a few steps and exported by the fixture; the studio
serves its SavedModel. The browser tests drive the page with real pointer and key events
(Selenium's W3C actions) and skip, with the reason, where no Chromium can start.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import struct
import threading
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import train_tiny_synthscapes

pytestmark = pytest.mark.xdist_group("studio")
OVERRIDES = ["data.synth_train_size=16", "data.synth_val_size=8"]  # on TINY_SYNTHSCAPES
TRAIN_STEPS = 10


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A tiny synthscapes model (instance maps, no VAE), trained briefly and exported."""
    from spade_tf.export import export_generator

    root = tmp_path_factory.mktemp("studio")
    config, _, ckpt = train_tiny_synthscapes(root, TRAIN_STEPS, OVERRIDES)
    result = export_generator(ckpt, root / "models", tflite=("fp32",), progress=lambda s: None)
    return {"config": config, "version_dir": result.version_dir, "root": root, "ckpt": ckpt,
            "tflite": result.tflite["fp32"]}


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server


@pytest.fixture(scope="session")
def studio(exported):
    from spade_tf.studio import start_studio

    server = _serve(start_studio(exported["version_dir"], port=0, max_body=4 * 2**20))
    yield server
    server.shutdown()
    server.server_close()


def _label_png(label) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(label, np.uint8), mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _instance_png(inst) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(inst, np.uint16)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _post(server, path, body, raw=False):
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def _raw_get(server, path):
    """GET with the path sent exactly as written (no client-side normalisation)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def _example(config, index=0):
    from spade_tf.data.pipeline import make_source

    _, label, inst = make_source(config, "val", training=False).load(index, np.random.default_rng(index))
    return label, inst


def _synthesize_cli(model, label, inst, tmp_path) -> np.ndarray:
    """What ``spade-tf synthesize`` writes for this label (and instance) map."""
    from spade_tf.synthesize import synthesize

    Image.fromarray(np.asarray(label, np.uint8), mode="L").save(tmp_path / "label.png")
    Image.fromarray(np.asarray(inst, np.uint16)).save(tmp_path / "inst.png")
    res = synthesize(model, tmp_path / "label.png", tmp_path / "out", instances=tmp_path / "inst.png")
    return np.asarray(Image.open(res["images"][0]).convert("RGB"))


# ----------------------------------------------------------------------------- the API

def test_info_describes_the_model_classes_and_examples(studio, exported):
    from spade_tf.data.labels import class_names, palette

    with urllib.request.urlopen(studio.url + "studio/info", timeout=30) as r:
        info = json.loads(r.read())
    config = exported["config"]
    assert (info["height"], info["width"]) == tuple(config.model.output_hw)
    assert [c["name"] for c in info["classes"]] == class_names("synthscapes", 9)
    colors = palette("synthscapes", 9)
    assert info["classes"][2]["color"] == "#%02x%02x%02x" % tuple(colors[2])
    assert info["use_instance"] and not info["use_vae"] and not info["has_style"]
    assert "use_vae: false" in info["vae_note"]
    assert info["examples"] == 8 and info["name"] == config.export.name


def test_predict_speaks_servings_png_body_and_matches_synthesize(studio, exported, tmp_path):
    label, inst = _example(exported["config"])
    body = {"signature_name": "png",
            "instances": [{"label_png": {"b64": _label_png(label)}, "instance_png": {"b64": _instance_png(inst)}}]}
    status, answer, headers = _post(studio, f"/v1/models/{studio.backend.name}:predict", body)
    assert status == 200, answer
    png = base64.b64decode(answer["predictions"][0]["image_png_bytes"]["b64"])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(image, _synthesize_cli(exported["version_dir"], label, inst, tmp_path))
    assert float(headers["X-Studio-Model-Ms"]) > 0


@pytest.mark.parametrize("backend", ["ckpt", "tflite"])
def test_checkpoints_and_tflite_files_are_served_as_synthesize_runs_them(exported, backend, tmp_path):
    from spade_tf.studio import start_studio

    server = _serve(start_studio(exported[backend], port=0))
    try:
        assert server.backend.kind == {"ckpt": "checkpoint", "tflite": "tflite"}[backend]
        assert [c["name"] for c in server.info["classes"]][:3] == ["sky", "cloud", "mountain"]
        label, inst = _example(exported["config"], 5)
        body = {"signature_name": "png", "instances": [
            {"label_png": {"b64": _label_png(label)}, "instance_png": {"b64": _instance_png(inst)}}]}
        status, answer, _ = _post(server, f"/v1/models/{server.backend.name}:predict", body)
        assert status == 200, answer
        png = base64.b64decode(answer["predictions"][0]["image_png_bytes"]["b64"])
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                                      _synthesize_cli(exported[backend], label, inst, tmp_path))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("case", ["out of range", "wrong size", "not a png", "rgb png", "no body"])
def test_predict_errors_say_what_to_fix(studio, exported, case):
    label, inst = _example(exported["config"])
    row = {"label_png": {"b64": _label_png(label)}, "instance_png": {"b64": _instance_png(inst)}}
    expect = {"out of range": "out of range: [200]; allowed 0..8", "wrong size": "this model takes 64 x 64",
              "not a png": "not a PNG image", "rgb png": "single-channel (grayscale) PNG of ids",
              "no body": "\"instances\" must be a non-empty list"}[case]
    if case == "out of range":
        bad = label.copy()
        bad[3, 5] = 200
        row["label_png"]["b64"] = _label_png(bad)
    elif case == "wrong size":
        row["label_png"]["b64"] = _label_png(label[:32])
    elif case == "not a png":
        row["label_png"]["b64"] = base64.b64encode(b"GIF89a....").decode()
    elif case == "rgb png":
        buf = io.BytesIO()
        Image.fromarray(np.stack([label.astype(np.uint8)] * 3, -1)).save(buf, format="PNG")
        row["label_png"]["b64"] = base64.b64encode(buf.getvalue()).decode()
    body = {"signature_name": "png", "instances": [] if case == "no body" else [row]}
    status, answer, _ = _post(studio, f"/v1/models/{studio.backend.name}:predict", body)
    assert status == 400 and expect in answer["error"], answer


def _png_header_only(width, height) -> bytes:
    """A PNG signature and an IHDR chunk claiming width x height, then a truncated body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x10"


@pytest.mark.parametrize("endpoint", ["predict", "upload"])
def test_an_oversized_png_is_refused_from_its_header_alone(studio, endpoint):
    """A 20,000 x 20,000 PNG of zeros (388 KB) used to be decoded in full (5 s of CPU) before
    its size was refused. The header's size is checked first: this one claims 100,000 x
    100,000 pixels over a truncated body, and the answer is the size, not a decoding error."""
    data = base64.b64encode(_png_header_only(100_000, 100_000)).decode()
    if endpoint == "predict":
        label, inst = _example(studio.backend.config)
        body = {"signature_name": "png", "instances": [
            {"label_png": {"b64": data}, "instance_png": {"b64": _instance_png(inst)}}]}
        status, answer, _ = _post(studio, f"/v1/models/{studio.backend.name}:predict", body)
        assert status == 400 and "100000 x 100000 pixels (from its header)" in answer["error"]
    else:
        status, answer, _ = _post(studio, "/studio/decode-label",
                                  {"name": "huge.png", "file": {"b64": data}})
        assert status == 400, answer
        assert "huge.png: the PNG is 100000 x 100000 = 10,000,000,000 pixels (from its " \
               "header)" in answer["error"], answer
    assert "decode" not in answer["error"] and "truncated" not in answer["error"]


@pytest.mark.parametrize("endpoint", ["predict", "decode-label"])
def test_json_nested_too_deeply_is_a_400_not_a_500(studio, endpoint):
    path = (f"/v1/models/{studio.backend.name}:predict" if endpoint == "predict"
            else "/studio/decode-label")
    status, answer, _ = _post(studio, path, b"[" * 50_000 + b"]" * 50_000, raw=True)
    assert status == 400 and "nested too deeply" in answer["error"], (status, answer)


def test_the_page_has_an_icon(studio):
    status, body = _raw_get(studio, "/favicon.ico")
    assert status == 200 and body.startswith(b"<svg")
    status, page = _raw_get(studio, "/")
    assert b'rel="icon" href="/static/favicon.svg"' in page


def test_a_body_above_the_limit_gets_413_unread(studio):
    host, port = studio.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", f"/v1/models/{studio.backend.name}:predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(studio.max_body + 1))
    conn.endheaders()
    conn.send(b"{")  # the rest never comes: the server must answer without reading it
    r = conn.getresponse()
    answer = json.loads(r.read())
    conn.close()
    assert r.status == 413 and "larger than the studio's limit" in answer["error"]


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py",
                                  "/static/..%2fserver.py", "/static/%2e%2e%2f%2e%2e%2f__init__.py",
                                  "/static/..%2f..%2f..%2fsetup.cfg", "/static//etc/passwd",
                                  "/static/%2fetc%2fpasswd", "/../../setup.cfg"])
def test_static_files_come_only_from_the_package_folder(studio, path):
    status, body = _raw_get(studio, path)
    assert status == 404, (path, body[:200])
    assert b"import" not in body and b"root:" not in body and b"[metadata]" not in body
    status, body = _raw_get(studio, "/static/studio.js")
    assert status == 200 and b"window.studio" in body


def test_uploads_are_read_as_ids_or_palette_colours_and_checked(studio, exported):
    from spade_tf.data.labels import colorize

    config = exported["config"]
    label, _ = _example(config, 1)

    def upload(image, name="map.png"):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return _post(studio, "/studio/decode-label",
                     {"name": name, "file": {"b64": base64.b64encode(buf.getvalue()).decode()}})

    for image in (Image.fromarray(label.astype(np.uint8), mode="L"),
                  Image.fromarray(np.stack([label.astype(np.uint8)] * 3, -1)),  # R = G = B: ids
                  Image.fromarray(colorize(label, config))):
        status, answer, _ = upload(image)
        assert status == 200, answer
        ids = np.frombuffer(base64.b64decode(answer["label_b64"]), np.uint8).reshape(label.shape)
        np.testing.assert_array_equal(ids, label)
    rgb = colorize(label, config)
    rgb[10, 7] = (1, 2, 3)
    status, answer, _ = upload(Image.fromarray(rgb), "painted.png")
    assert status == 400 and "painted.png: pixel (x=7, y=10) has colour #010203" in answer["error"]
    bad = label.astype(np.uint8)
    bad[0, 0] = 77
    status, answer, _ = upload(Image.fromarray(bad, mode="L"), "ids.png")
    assert status == 400 and "ids.png: label id(s) out of range: [77]; allowed 0..8" in answer["error"]


def test_examples_come_from_the_validation_split(studio, exported):
    with urllib.request.urlopen(studio.url + "studio/example?index=3", timeout=60) as r:
        answer = json.loads(r.read())
    label, inst = _example(exported["config"], 3)
    got = np.frombuffer(base64.b64decode(answer["label_b64"]), np.uint8).reshape(label.shape)
    got_inst = np.frombuffer(base64.b64decode(answer["instance_b64"]), "<u2").reshape(label.shape)
    np.testing.assert_array_equal(got, label)
    np.testing.assert_array_equal(got_inst, inst)


def test_serving_url_forwards_the_same_body(studio, exported, caplog):
    """A second studio in front of the first one, which speaks Serving's REST API: the answer
    through --serving-url is the first one's, byte for byte, errors included."""
    from spade_tf.studio import start_studio

    front = _serve(start_studio(exported["version_dir"], port=0,
                                serving_url=studio.url + f"v1/models/{studio.backend.name}"))
    try:
        assert front.backend.kind == "serving" and front.info["classes"] == studio.info["classes"]
        # the style signature's absence was read from the first one's Serving-shaped /metadata
        assert not front.backend.has_style and "cannot read" not in caplog.text
        label, inst = _example(exported["config"], 2)
        body = {"signature_name": "png", "instances": [
            {"label_png": {"b64": _label_png(label)}, "instance_png": {"b64": _instance_png(inst)}}]}
        direct = _post(studio, f"/v1/models/{studio.backend.name}:predict", body)
        forwarded = _post(front, f"/v1/models/{front.backend.name}:predict", body)
        assert forwarded[:2] == direct[:2] and direct[0] == 200
        # a wrong size is refused by the front from the PNG's header, as the first one does
        body["instances"][0]["label_png"]["b64"] = _label_png(label[:10])
        status, answer, _ = _post(front, f"/v1/models/{front.backend.name}:predict", body)
        assert (status, answer) == _post(studio, f"/v1/models/{studio.backend.name}:predict",
                                         body)[:2]
        assert status == 400 and "this model takes 64 x 64" in answer["error"]
        # a body Serving would refuse is forwarded and its answer passed on
        body["instances"][0]["label_png"]["b64"] = _label_png(label)
        body["instances"][0]["instance_png"] = "not an object"
        status, answer, _ = _post(front, f"/v1/models/{front.backend.name}:predict", body)
        assert (status, answer) == _post(studio, f"/v1/models/{studio.backend.name}:predict",
                                         body)[:2] and status == 400
    finally:
        front.shutdown()
        front.server_close()


def test_vae_models_take_servings_seeds_and_a_style_image(tiny_nets, tiny_vae_config, tmp_path):
    """A seed gives the image the export's own png signature gives for it (the same latent as
    on Serving); the style signature's body (id and pixel arrays) gives the export's style
    image."""
    import tensorflow as tf

    from spade_tf.export import export_generator
    from spade_tf.studio import start_studio

    res = export_generator((tiny_nets, tiny_vae_config), tmp_path, tflite=(), progress=lambda s: None)
    server = _serve(start_studio(res.version_dir, port=0))
    try:
        assert server.info["use_vae"] and server.info["has_style"] and not server.info["vae_note"]
        loaded = tf.saved_model.load(str(res.version_dir))
        rng = np.random.default_rng(4)
        label = rng.integers(0, 4, (64, 64))
        inst = rng.integers(0, 3, (64, 64))
        path = f"/v1/models/{server.backend.name}:predict"

        def png_row(seed):
            return {"label_png": {"b64": _label_png(label)}, "instance_png": {"b64": _instance_png(inst)},
                    "seed": seed}
        status, answer, _ = _post(server, path, {"signature_name": "png",
                                                 "instances": [png_row(7), png_row(8)]})
        assert status == 200, answer
        got = [np.asarray(Image.open(io.BytesIO(base64.b64decode(p["image_png_bytes"]["b64"]))))
               for p in answer["predictions"]]
        want = loaded.signatures["png"](
            label_png=tf.constant([base64.b64decode(png_row(0)["label_png"]["b64"])] * 2),
            instance_png=tf.constant([base64.b64decode(png_row(0)["instance_png"]["b64"])] * 2),
            seed=tf.constant([7, 8], tf.int64))["image_png_bytes"].numpy()
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, np.asarray(Image.open(io.BytesIO(w))))
        assert np.abs(got[0].astype(int) - got[1]).max() > 0  # a new seed, a new look
        style = rng.integers(0, 256, (64, 64, 3))
        status, answer, _ = _post(server, path, {"signature_name": "style", "instances": [
            {"label": label.tolist(), "instance": inst.tolist(), "style_image": style.tolist()}]})
        assert status == 200, answer
        want = loaded.signatures["style"](label=tf.constant(label[None], tf.int32),
                                          instance=tf.constant(inst[None], tf.int32),
                                          style_image=tf.constant(style[None], tf.uint8))["image"]
        np.testing.assert_array_equal(np.array(answer["predictions"][0]["image"]), want.numpy()[0])
        status, answer, _ = _post(server, path, {"signature_name": "png", "instances": [
            {k: v for k, v in png_row(0).items() if k != "seed"}]})
        assert status == 400 and "send an integer seed" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_cli_studio_refuses_bad_arguments_in_one_line(exported):
    import subprocess
    import sys

    for args, expect in ((["--model", str(exported["root"] / "nothing")], "not a model"),
                         (["--model", str(exported["version_dir"]), "--serving-url", "http://x/y"],
                          "--serving-url 'http://x/y': expected http://HOST:8501/v1/models/NAME"),
                         # no --model is the packaged model (tests/test_packaged.py); with
                         # --serving-url it must name the export deployed there
                         (["--serving-url", "http://localhost:8501/v1/models/spade"],
                          "--serving-url needs --model too")):
        proc = subprocess.run([sys.executable, "-m", "spade_tf", "studio", "--port", "0", *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], proc.stderr


def test_cli_studio_prints_its_url_and_warns_when_it_listens_beyond_this_machine(exported):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "spade_tf", "studio", "--model",
                             str(exported["version_dir"]), "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        url = lines[1].split()[1]
        assert lines[1].startswith("open http://") and url.endswith("/"), lines
        with urllib.request.urlopen(url + "studio/info", timeout=60) as r:
            assert json.loads(r.read())["name"] == exported["config"].export.name
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "no authentication" in err and "0.0.0.0" in err, err


# ----------------------------------------------------------------------------- in a browser

# (the browser fixture, one Chromium per test process, is in conftest.py)

@pytest.fixture()
def page(browser, studio):
    from spade_tf.studio.browser import open_studio

    open_studio(browser, studio.url)
    return browser


def _ids(page, what="labelIds"):
    state = page.execute_script("return [window.studio.state.W, window.studio.state.H];")
    return np.array(page.execute_script(f"return window.studio.{what}();")).reshape(state[1], state[0])


def _click(page, element_id):
    from selenium.webdriver.common.by import By

    page.find_element(By.ID, element_id).click()


def _choose_class(page, class_id):
    from selenium.webdriver.common.by import By

    page.find_element(By.CSS_SELECTOR, f"#classes .swatch[data-id='{class_id}']").click()
    assert page.execute_script("return window.studio.state.cls;") == class_id


def _clear_to(page, class_id):
    from spade_tf.studio.browser import wait_idle

    _choose_class(page, class_id)
    _click(page, "clear")
    wait_idle(page)
    assert (_ids(page) == class_id).all()


def _capsules(points, size, h, w):
    """The round brush in numpy: pixels whose centre is within size/2 of a segment between the
    centres of successive points."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    out = np.zeros((h, w), bool)
    pts = [(x + 0.5, y + 0.5) for x, y in points]
    for (ax, ay), (bx, by) in zip(pts, pts[1:] or pts):
        dx, dy = bx - ax, by - ay
        len2 = dx * dx + dy * dy
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / len2, 0, 1) if len2 else 0
        out |= (xs - (ax + t * dx)) ** 2 + (ys - (ay + t * dy)) ** 2 <= (size / 2) ** 2
    return out


def test_page_loads_with_the_models_palette(page, studio):
    from selenium.webdriver.common.by import By

    names = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#classes .swatch .name")]
    assert names == [c["name"] for c in studio.info["classes"]]
    search = page.find_element(By.ID, "search")
    search.send_keys("sky")
    shown = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#classes .swatch .name")]
    assert shown == [n for n in names if "sky" in n]
    search.clear()
    search.send_keys(" ")  # an input event with an empty query: every class again
    assert len(page.find_elements(By.CSS_SELECTOR, "#classes .swatch")) == len(names)
    assert not page.find_element(By.ID, "vae-group").is_displayed()
    assert "use_vae: false" in page.find_element(By.ID, "vae-note").text
    assert page.find_element(By.ID, "instance-group").is_displayed()


def test_a_brush_stroke_paints_exactly_the_pixels_under_it(page, studio, exported, tmp_path):
    """Real pointer events through the page; then the image on the page equals what
    ``spade-tf synthesize`` writes for the page's label and instance maps; undo brings the map
    back."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    from spade_tf.studio.browser import drag, wait_idle

    _clear_to(page, 0)
    before, before_inst = _ids(page), _ids(page, "instanceIds")
    page.execute_script("window.studio.setSize(5);")
    _choose_class(page, 3)
    aim = [(10, 12), (20, 15), (35, 30), (50, 31), (52, 50)]
    drag(page, aim)
    wait_idle(page)
    stroke = page.execute_script("return window.studio.state.lastStroke;")
    points = [tuple(p) for p in stroke["points"]]
    assert points[0] == aim[0] and points[-1] == aim[-1] and set(aim) <= set(points)
    after = _ids(page)
    changed = after != before
    h, w = after.shape
    np.testing.assert_array_equal(changed, _capsules(points, 5, h, w))
    assert (after[changed] == 3).all() and changed.sum() > 100

    # the image on screen, pixel for pixel, against spade-tf synthesize through the same model
    src = page.execute_script("return document.getElementById('output').src;")
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
    inst = _ids(page, "instanceIds")
    np.testing.assert_array_equal(shown, _synthesize_cli(exported["version_dir"], after, inst, tmp_path))
    latency = page.execute_script("return window.studio.state.latencies;")
    assert latency and latency[-1]["total_ms"] >= latency[-1]["model_ms"] > 0
    assert "stroke → image" in page.find_element("id", "latency").text

    ActionChains(page).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    wait_idle(page)
    np.testing.assert_array_equal(_ids(page), before)
    np.testing.assert_array_equal(_ids(page, "instanceIds"), before_inst)
    ActionChains(page).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys("z") \
        .key_up(Keys.SHIFT).key_up(Keys.CONTROL).perform()
    wait_idle(page)
    np.testing.assert_array_equal(_ids(page), after)
    if os.environ.get("SPADE_TF_STUDIO_SCREENSHOT"):
        page.save_screenshot(os.environ["SPADE_TF_STUDIO_SCREENSHOT"])
    page.save_screenshot(str(tmp_path / "studio.png"))


def test_fill_fills_one_connected_region(page):
    from selenium.webdriver.common.action_chains import ActionChains

    from spade_tf.studio.browser import drag, wait_idle

    _clear_to(page, 0)
    _choose_class(page, 1)
    ActionChains(page).send_keys("r").perform()  # the rectangle tool, by its shortcut
    drag(page, [(30, 0), (33, 63)])  # a wall from top to bottom: two regions of class 0
    wait_idle(page)
    wall = _ids(page)
    assert (wall[:, 30:34] == 1).all() and (wall[:, :30] == 0).all() and (wall[:, 34:] == 0).all()
    _choose_class(page, 2)
    ActionChains(page).send_keys("f").perform()
    drag(page, [(10, 40)])  # one click
    wait_idle(page)
    filled = _ids(page)
    assert (filled[:, :30] == 2).all(), "the clicked region"
    assert (filled[:, 30:34] == 1).all() and (filled[:, 34:] == 0).all(), "the rest is unchanged"
    ActionChains(page).send_keys("i").perform()  # the eyedropper takes the wall's class
    drag(page, [(31, 5)])
    assert page.execute_script("return window.studio.state.cls;") == 1


def test_an_uploaded_map_with_an_unknown_id_shows_the_error_in_the_page(page, tmp_path):
    from selenium.webdriver.common.by import By

    from spade_tf.studio.browser import wait_for

    label = np.zeros((64, 64), np.uint8)
    label[5, 9] = 200
    path = tmp_path / "bad_ids.png"
    Image.fromarray(label, mode="L").save(path)
    before = _ids(page)
    page.execute_script("document.getElementById('load-label').hidden = false;")
    page.find_element(By.ID, "load-label").send_keys(str(path))
    text = wait_for(page, "!document.getElementById('error').hidden && "
                          "document.getElementById('error-text').textContent", 60, "the error")
    assert "bad_ids.png: label id(s) out of range: [200]; allowed 0..8" in text
    np.testing.assert_array_equal(_ids(page), before)  # the map is left as it was
