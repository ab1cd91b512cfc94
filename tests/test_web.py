"""The demo page in a real browser: Debian's Chromium driven by Playwright, against the Serve app on
tiny models (no browser download: Playwright is given the system's Chromium)."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import start_tiny_serve_app

pytestmark = [pytest.mark.slow]  # a real browser on the demo page, minutes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium on this machine: scripts/setup.sh installs Debian's chromium where it can "
                "(as root with apt-get)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (scripts/setup.sh)")

STEPS = 4
TRAINING_CAMERAS = {"elevation": [0.0, 30.0], "distance": [2.0, 2.0], "fov": [39.6, 39.6]}


@pytest.fixture(scope="module")
def web_server(ray_local, tmp_path_factory):
    from ray import serve

    url, _ = start_tiny_serve_app(tmp_path_factory.mktemp("web"), "videomv-web", TRAINING_CAMERAS)
    yield url
    serve.shutdown()


def variance(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64).var())


def settled(page, locator, timeout_ms: int = 10_000) -> bytes:
    """A screenshot of ``locator`` once two taken 300 ms apart agree (the viewers ease into a move)."""
    previous = locator.screenshot()
    for _ in range(timeout_ms // 300):
        page.wait_for_timeout(300)
        current = locator.screenshot()
        if current == previous:
            return current
        previous = current
    return previous


def test_the_page_generates_an_orbit_and_a_gaussian_viewer(web_server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone-width screen
        requested, generate_bodies = [], []
        page.on("request", lambda r: requested.append(r.url))
        page.on("request", lambda r: generate_bodies.append(r.post_data) if r.url.endswith("/v1/generate") else None)
        page.goto(f"{web_server}/")
        page.wait_for_selector("#model-info:has-text('Text-to-multi-view model')")
        # Keyboard only: focus the prompt, type, tab through the fields, submit with Enter on the button.
        page.focus("#prompt")
        page.keyboard.type("a blue vase")
        page.fill("#steps", str(STEPS))
        page.focus("#generate")
        page.keyboard.press("Enter")
        page.wait_for_selector("#result:not([hidden])", timeout=180_000)
        assert page.locator("#error").is_hidden()

        orbit = page.locator("#orbit")
        assert orbit.evaluate("img => img.naturalWidth") == 32
        assert variance(orbit.screenshot()) > 20.0
        # Chromium here has WebGL2 (SwiftShader): the vendored gsplat.js draws the splats.
        assert page.locator("#viewer").is_hidden() and "drawn as splats (WebGL)" in page.inner_text("#viewer-info")
        viewer = page.locator("#splat-viewer")
        page.wait_for_timeout(500)
        before = viewer.screenshot()
        assert variance(before) > 5.0  # the Gaussians, not an empty canvas
        box = viewer.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
        page.wait_for_timeout(500)
        dragged = settled(page, viewer)
        assert dragged != before  # orbiting redraws the splats from another side
        # ... and by keyboard: with the viewer focused the arrows orbit, while typing elsewhere moves nothing.
        page.focus("#prompt")
        page.keyboard.press("ArrowLeft")
        assert settled(page, viewer) == dragged, "keys typed in the prompt leave the viewer alone"
        viewer.focus()
        for _ in range(6):
            page.keyboard.press("ArrowLeft")
        assert settled(page, viewer) != dragged
        page.click("#play")  # pause the animation, then step through the views with the slider's keys
        assert page.locator("#play").get_attribute("aria-pressed") == "false"
        shown = int(page.locator("#view-number").inner_text())
        page.focus("#view-slider")
        key, expected = ("ArrowLeft", shown - 1) if shown == 24 else ("ArrowRight", shown + 1)
        page.keyboard.press(key)
        assert int(page.locator("#view-number").inner_text()) == expected
        # The mesh, drawn by the vendored three.js from the answer's GLB.
        page.wait_for_selector("#mesh-info:has-text('triangles')", timeout=30_000)
        mesh = page.locator("#mesh-viewer")
        assert variance(mesh.screenshot()) > 5.0
        mesh_before = mesh.screenshot()
        mesh.focus()
        for _ in range(6):
            page.keyboard.press("ArrowRight")
        page.wait_for_timeout(500)
        assert mesh.screenshot() != mesh_before, "the mesh orbits by keyboard"
        names = page.locator("#downloads a").evaluate_all("links => links.map(a => a.download)")
        assert names == ["gaussians.ply", "gaussians.splat", "mesh.glb", "orbit.gif", "orbit.mp4", "gaussians_orbit.mp4",
                         "views.zip"]

        # The page's progress came from the server: the request it named reports every step done.
        request_id = json.loads(generate_bodies[0])["request_id"]
        progress = requests.get(f"{web_server}/v1/progress/{request_id}", timeout=10).json()
        assert progress == {"request_id": request_id, "state": "done", "done": STEPS, "total": STEPS}
        # Offline: every script, style and image came from the app itself (or the page's own data).
        assert all(url.startswith((web_server, "data:", "blob:")) for url in requested), requested

        # An error from the API is shown on the page.
        page.fill("#elevation", "45")
        page.click("#generate")
        page.wait_for_selector("#error:not([hidden])", timeout=60_000)
        assert "outside the model's training cameras" in page.locator("#error").inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        browser.close()


def test_without_webgl_the_page_draws_the_gaussians_on_its_2d_canvas(web_server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-webgl"])
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(f"{web_server}/")
        page.wait_for_selector("#model-info:has-text('Text-to-multi-view model')")
        assert page.evaluate("window.VideoMVSplatViewer && window.VideoMVSplatViewer.supported") is False
        page.fill("#prompt", "a blue vase")
        page.fill("#steps", str(STEPS))
        page.click("#generate")
        page.wait_for_selector("#result:not([hidden])", timeout=180_000)
        assert page.locator("#splat-viewer").is_hidden() and "no WebGL2" in page.inner_text("#viewer-info")
        viewer = page.locator("#viewer")
        before = viewer.screenshot()
        assert variance(before) > 5.0
        viewer.focus()
        for _ in range(6):
            page.keyboard.press("ArrowLeft")
        page.wait_for_timeout(200)
        assert viewer.screenshot() != before
        browser.close()
