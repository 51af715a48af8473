"""The model in the browser: the studio's "run here" and the ``spade-tf export --web`` page.

The page runs the same ``.tflite`` with LiteRT.js (WebAssembly, XNNPACK) in headless Chromium;
its image must equal, pixel for pixel, what ``spade-tf synthesize`` writes with that file. These
tests skip, with the reason, where Chromium or LiteRT.js (fetched by scripts/setup_venv.sh with
npm) is missing.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import threading

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.xdist_group("browser_runtime")


@pytest.fixture(scope="session")
def litertjs():
    from spade_tf.studio.web import litertjs_status

    status = litertjs_status()
    if not status["available"]:
        pytest.skip(status["reason"])
    return status


@pytest.fixture(scope="session")
def light_tflite(tmp_path_factory, litertjs):
    """The packaged model (the light preset, trained) exported as int8, the phone's file."""
    from spade_tf.export import export_generator

    root = tmp_path_factory.mktemp("light_tflite")
    result = export_generator("pretrained", root, tflite=("int8",), progress=lambda s: None)
    if "int8" not in result.tflite:
        pytest.fail(f"int8 refused: {result.report['tflite']['int8']}")
    return result.tflite["int8"]


@pytest.fixture(scope="session")
def light_fp16(tmp_path_factory, litertjs):
    """The packaged model's fp16 file: the GPU delegate's graph."""
    from spade_tf.export import export_generator

    root = tmp_path_factory.mktemp("light_fp16")
    return export_generator("pretrained", root, tflite=("fp16",), progress=lambda s: None).tflite["fp16"]


@pytest.fixture(scope="session")
def icpe_tflite(tmp_path_factory, litertjs):
    """A CLADE model with ICPE (its TFLite graph takes the offsets as an input)."""
    from spade_tf.config import load_config
    from spade_tf.export import _example_inputs, export_generator
    from spade_tf.networks import build_networks

    config = load_config("synthscapes_light", ["model.clade_positional=true",
                                               "model.base_filters=8"])
    nets = build_networks(config, discriminator=False, ema=False, seed=0)
    h, w = (int(v) for v in nets.generator.output_hw)
    ex = _example_inputs(config, h, w, 2)
    inputs = [{k: v[i:i + 1] for k, v in ex.items()} for i in range(2)]
    result = export_generator((nets, config), tmp_path_factory.mktemp("icpe"), tflite=("fp32",),
                              parity_inputs=inputs, progress=lambda s: None)
    return result.tflite["fp32"]


def _studio(model):
    from spade_tf.studio import start_studio

    server = start_studio(model, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _shown(page) -> np.ndarray:
    src = page.execute_script("return document.getElementById('output').src;")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def _maps(page):
    w, h = page.execute_script("return [window.studio.state.W, window.studio.state.H];")
    label = np.array(page.execute_script("return window.studio.labelIds();"), np.int32).reshape(h, w)
    inst = np.array(page.execute_script("return window.studio.instanceIds();"), np.int32).reshape(h, w)
    return label, inst


def _synthesized(model, label, inst, tmp_path, use_instance) -> np.ndarray:
    from spade_tf.synthesize import synthesize

    Image.fromarray(label.astype(np.uint8), mode="L").save(tmp_path / "label.png")
    Image.fromarray(inst.astype(np.uint16)).save(tmp_path / "inst.png")
    res = synthesize(model, tmp_path / "label.png", tmp_path / "out",
                     instances=tmp_path / "inst.png" if use_instance else None)
    return np.asarray(Image.open(res["images"][0]).convert("RGB"))


def _run_here(page):
    from spade_tf.studio.browser import wait_for, wait_idle

    page.execute_async_script("const done = arguments[arguments.length - 1];"
                              "window.studio.setWhere('here').then(() => done(true));")
    wait_for(page, "window.studio.state.here !== null", what="LiteRT.js loading the model")
    wait_idle(page)
    assert page.execute_script("return window.studio.state.where;") == "here", \
        page.execute_script("return window.studio.state.errors;")


def test_run_here_draws_what_synthesize_writes_with_the_same_file(browser, light_tflite, tmp_path):
    """The light preset's int8 file in the studio, switched to "run here": a brush stroke, and
    the page's own image equals spade-tf synthesize's with that file, pixel for pixel; the
    readout says where the model ran and its time."""
    from spade_tf.studio.browser import drag, open_studio, wait_idle

    server = _studio(light_tflite)
    try:
        open_studio(browser, server.url)
        info = browser.execute_script("return window.studio.state.info;")
        assert info["here"]["available"], info
        _run_here(browser)
        browser.execute_script("window.studio.setSize(5); window.studio.selectClass(6);")
        drag(browser, [(8, 40), (30, 44), (56, 50)])
        wait_idle(browser)
        label, inst = _maps(browser)
        assert (label == 6).sum() > 50
        want = _synthesized(light_tflite, label, inst, tmp_path, info["use_instance"])
        np.testing.assert_array_equal(_shown(browser), want)
        ran = browser.find_element("id", "ran").text
        assert "this device (LiteRT.js wasm" in ran and " ms" in ran, ran
        # the server path still answers, with the same picture
        browser.execute_async_script("const done = arguments[arguments.length - 1];"
                                     "window.studio.setWhere('server').then(() => done(true));")
        wait_idle(browser)
        np.testing.assert_array_equal(_shown(browser), want)
    finally:
        server.shutdown()
        server.server_close()


def test_icpe_offsets_in_javascript_equal_pythons_and_the_page_draws_the_same(
        browser, icpe_tflite, tmp_path):
    from spade_tf.semantics import intra_class_offsets
    from spade_tf.studio.browser import open_studio

    server = _studio(icpe_tflite)
    try:
        open_studio(browser, server.url)
        _run_here(browser)
        rng = np.random.default_rng(0)
        label = np.kron(rng.integers(0, 9, (8, 8)), np.ones((8, 8), np.int64)).astype(np.int32)
        label[20:30, 5:50] = 3  # components of several shapes, some touching diagonally
        label[40, 40] = 0
        got = browser.execute_script(
            "return Array.from(self.spadeHere.intraClassOffsets(arguments[0], 64, 64));",
            label.ravel().tolist())
        want = intra_class_offsets(label).numpy()
        np.testing.assert_array_equal(np.asarray(got, np.float32).reshape(64, 64, 2), want)
        # and the whole page on an ICPE model: its image equals synthesize's
        browser.execute_script(
            "const S = window.studio.state; S.labels.set(arguments[0]); S.inst.set(arguments[0]);",
            label.ravel().tolist())
        browser.execute_script("window.studio.redraw();")
        from spade_tf.studio.browser import wait_idle

        wait_idle(browser)
        page_label, inst = _maps(browser)
        np.testing.assert_array_equal(page_label, label)
        np.testing.assert_array_equal(_shown(browser),
                                      _synthesized(icpe_tflite, label, inst, tmp_path, True))
    finally:
        server.shutdown()
        server.server_close()


# The page's own runner (here.js) on one label map, on the accelerator named, in a fresh page of
# the studio; with the page's WebGPU validation messages.
RUN_ON = """
const [accelerator, label, inst, done] = arguments;
(async () => {
  try {
    const here = await import("/static/here.js");
    const model = await (await fetch("/studio/model.json")).json();
    const runner = await here.loadModel(model, "/studio/model.tflite",
                                        {base: "/static/vendor/litertjs/wasm/", accelerator});
    const out = await runner.run(Int32Array.from(label), Int32Array.from(inst));
    done({where: runner.where, rgba: Array.from(out.rgba)});
  } catch (e) { done({error: String(e && e.stack || e)}); }
})();
"""


def test_webgpu_runs_the_gpu_graph_and_agrees_with_wasm(light_fp16):
    """The fp16 file (the GPU delegate's graph) on LiteRT.js' WebGPU accelerator (SwiftShader
    here) draws what the wasm runtime draws, within one level, and WebGPU reports no
    validation error (before CLADE's lookups were sliced instead of split, it bound one
    texture as input and output, and drew zeros: docs/mobile.md)."""
    from spade_tf.studio.browser import BrowserUnavailable, headless_chromium

    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 9, (8, 8)), np.ones((8, 8), np.int64)).ravel().tolist()
    inst = np.kron(rng.integers(0, 5, (4, 4)), np.ones((16, 16), np.int64)).ravel().tolist()
    server = _studio(light_fp16)
    images, messages = {}, []
    try:
        for accelerator in ("wasm", "webgpu"):
            try:
                driver = headless_chromium(webgpu=accelerator == "webgpu")
            except BrowserUnavailable as e:
                pytest.skip(f"no browser: {e}")
            try:
                driver.set_script_timeout(300)
                driver.get(server.url)
                got = driver.execute_async_script(RUN_ON, accelerator, label, inst)
                if accelerator == "webgpu":
                    messages = [e["message"] for e in driver.get_log("browser")
                                if e.get("source") == "rendering"]
            finally:
                driver.quit()
            if "error" in got and accelerator == "webgpu" and "WebGPU" in got["error"] \
                    and "adapter" in got["error"].lower():
                pytest.skip(f"no WebGPU adapter in this Chromium: {got['error'][:300]}")
            assert "error" not in got, got["error"]
            assert accelerator in got["where"], got["where"]
            images[accelerator] = np.asarray(got["rgba"], np.int32).reshape(64, 64, 4)[..., :3]
    finally:
        server.shutdown()
        server.server_close()
    assert not messages, messages
    diff = np.abs(images["webgpu"] - images["wasm"])
    assert diff.max() <= 1, (diff.max(), diff.mean())
    assert images["wasm"].std() > 10  # a picture, not a blank


def _touch_drag(driver, points):
    """A drag with a touch pointer (W3C actions, pointerType "touch")."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By

    from spade_tf.studio.browser import canvas_point

    canvas = driver.find_element(By.ID, "label-canvas")
    offsets = [canvas_point(driver, x, y) for x, y in points]
    chain = ActionChains(driver, duration=0)
    chain.w3c_actions = ActionBuilder(driver, mouse=PointerInput(interaction.POINTER_TOUCH, "finger"))
    chain.w3c_actions.pointer_action.move_to(canvas, *offsets[0]).pointer_down()
    for x, y in offsets[1:]:
        chain.w3c_actions.pointer_action.move_to(canvas, x, y)
    chain.w3c_actions.pointer_action.pointer_up()
    chain.perform()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_the_web_page_runs_offline_on_a_phone_sized_screen_with_touch(light_tflite, tmp_path):
    """spade-tf export --web's folder, served by a plain static server: it loads and draws;
    with its service worker installed, the server stopped and the page reloaded, it still
    loads and draws; a touch stroke on a phone-sized screen paints, and the image equals
    synthesize's."""
    from spade_tf.studio.browser import (BrowserUnavailable, headless_chromium, open_studio,
                                         wait_idle)
    from spade_tf.studio.web import export_web

    web = tmp_path / "web"
    summary = export_web(light_tflite, web)
    assert (web / "model.tflite").is_file() and (web / "sw.js").is_file()
    assert (web / "vendor" / "litertjs" / "LICENSE").is_file()
    assert summary["bytes"] < 40e6
    try:
        driver = headless_chromium(width=390, height=844, mobile=True)
    except BrowserUnavailable as e:
        pytest.skip(f"no browser: {e}")
    handler = functools.partial(_Quiet, directory=str(web))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        open_studio(driver, url, timeout=120)
        assert driver.execute_script("return window.studio.state.where;") == "here"
        driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "navigator.serviceWorker.ready.then(() => done(true));")
        httpd.shutdown()
        httpd.server_close()
        open_studio(driver, url, timeout=120)  # offline now: the service worker answers
        driver.execute_script("window.studio.setSize(4); window.studio.selectClass(5);")
        _touch_drag(driver, [(5, 50), (30, 52), (60, 55)])
        wait_idle(driver)
        label, inst = _maps(driver)
        assert (label == 5).sum() > 30
        info = driver.execute_script("return window.studio.state.info;")
        np.testing.assert_array_equal(
            _shown(driver), _synthesized(light_tflite, label, inst, tmp_path, info["use_instance"]))
        width = driver.execute_script("return document.documentElement.scrollWidth;")
        assert width <= 390 + 1, "the page scrolls sideways on a phone"
    finally:
        driver.quit()
        httpd.server_close()
