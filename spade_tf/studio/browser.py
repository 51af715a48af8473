"""Driving the studio page in a headless Chromium (Selenium), for its tests and its benchmark.

Needs the ``selenium`` package and a Chromium with its driver (Debian: ``chromium`` and
``chromium-driver``; ``scripts/setup_venv.sh test`` installs them). ``BrowserUnavailable`` says
what is missing, so that callers can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import time

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "chromium-driver")
# WebGPU in headless Chromium: the GPU process on, WebGPU allowed on an adapter that is not on
# Chromium's list, and SwiftShader (Vulkan on the CPU) where there is no GPU
WEBGPU_ARGS = ("--enable-unsafe-webgpu", "--enable-features=Vulkan",
               "--use-webgpu-adapter=swiftshader")


class BrowserUnavailable(RuntimeError):
    """No headless browser can be started here; the message says why."""


def find_chromium() -> tuple[str, str]:
    """(browser, driver) executables, from $SPADE_TF_CHROMIUM / $SPADE_TF_CHROMEDRIVER or PATH."""
    browser = os.environ.get("SPADE_TF_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("SPADE_TF_CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVERS)), None)
    if not browser or not driver:
        missing = [n for n, p in (("chromium", browser), ("chromium-driver", driver)) if not p]
        raise BrowserUnavailable(f"no {' or '.join(missing)} on PATH (Debian: apt-get install "
                                 f"chromium chromium-driver; scripts/setup_venv.sh test does it "
                                 f"as root)")
    return browser, driver


def headless_chromium(width: int = 1400, height: int = 1000, mobile: bool = False,
                      extra_args: tuple = (), webgpu: bool = False):
    """A Selenium ``webdriver.Chrome`` running headless Chromium at ``width`` x ``height``;
    ``mobile``: a phone's screen of that size in CSS pixels (device pixel ratio 3, touch
    events, a phone's user agent), through Chromium's device emulation. ``extra_args``: more
    Chromium switches; ``webgpu``: WebGPU on (``WEBGPU_ARGS``), on SwiftShader where there is
    no GPU; otherwise Chromium's GPU process is off. The page's console goes to the driver's
    ``get_log("browser")``; WebGPU's validation errors appear there as "rendering" entries."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        raise BrowserUnavailable(f"selenium is not installed ({e}); pip install selenium") from None
    browser, driver = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", *(WEBGPU_ARGS if webgpu else ("--disable-gpu",)),
                "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--disable-extensions", "--no-first-run", "--force-color-profile=srgb",
                *extra_args):
        options.add_argument(arg)
    if mobile:
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0, "touch": True},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, "
                         "like Gecko) Chrome/156.0 Mobile Safari/537.36"})
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=options)
    except Exception as e:  # selenium's WebDriverException, or the driver failing to start
        raise BrowserUnavailable(f"headless Chromium did not start: {str(e).strip()[:400]}") from None


def wait_for(driver, script: str, timeout: float = 60.0, what: str = "the page"):
    """Polls a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            errors = driver.execute_script("return window.studio ? window.studio.state.errors : [];")
            raise TimeoutError(f"waited {timeout:.0f} s for {what} ({script}); page errors: {errors}")
        time.sleep(0.02)


def open_studio(driver, url: str, timeout: float = 60.0):
    """Loads the page and waits until it has drawn its first image."""
    driver.get(url)
    driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const poll = () => window.studio && window.studio.ready ? window.studio.ready.then(done) "
        ": setTimeout(poll, 20); poll();")
    ok = driver.execute_script("return window.studio.ready && window.studio.state.info !== null;")
    if not ok:
        raise RuntimeError(f"the studio page did not start: {driver.execute_script('return window.studio.state.errors;')}")
    wait_idle(driver, timeout)


def wait_idle(driver, timeout: float = 60.0):
    """Until no request is in flight or pending and the last one is on screen."""
    wait_for(driver, "window.studio && !window.studio.state.inFlight && !window.studio.state.pending"
                     " && window.studio.state.strokeEnd === null"
                     " && window.studio.state.shown === window.studio.state.requests",
             timeout, "the image of the latest label map")


def canvas_point(driver, x: float, y: float) -> tuple[int, int]:
    """The offset from the label canvas' centre (Selenium's origin) of model pixel (x, y)'s
    centre, in CSS pixels."""
    rect = driver.execute_script(
        "const r = document.getElementById('label-canvas').getBoundingClientRect();"
        "return [r.width, r.height, window.studio.state.W, window.studio.state.H];")
    w, h, mw, mh = rect
    return (round((x + 0.5) * w / mw - w / 2), round((y + 0.5) * h / mh - h / 2))


def drag(driver, points, pause: float = 0.0):
    """A real pointer drag (W3C actions: pointerdown, pointermove..., pointerup) on the label
    canvas through model pixels ``points`` [(x, y), ...]."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "label-canvas")
    offsets = [canvas_point(driver, x, y) for x, y in points]
    chain = ActionChains(driver, duration=0)
    chain.move_to_element_with_offset(canvas, *offsets[0]).click_and_hold()
    for (ax, ay), (bx, by) in zip(offsets, offsets[1:]):
        chain.move_by_offset(bx - ax, by - ay)
        if pause:
            chain.pause(pause)
    chain.release().perform()
