"""The drawing page in a real browser: Debian's Chromium, headless, driven by Playwright.

Strokes are drawn with the mouse and with touch events on the canvas of a real ``paddle-mnist serve``
process (the session's LeNet-5 trained on the real MNIST); the page must show the digit the model
predicts, ten probability bars and the 28x28 model input, and fetch nothing from anywhere else.
``UPDATE_DOCS_SCREENSHOT=1`` copies the screenshot to ``docs/images/serve.png``."""

from __future__ import annotations

import itertools
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image
from test_serve import start_server, stop_server

from conftest import ROOT

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'paddle-mnist-hapi[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the dev extra has it)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's Chromium, never a downloaded browser build; nothing may reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip

# strokes in canvas pixels (the canvas is 280x280, drawn white on black like MNIST)
SEVEN = [[(72, 66), (130, 60), (204, 56), (168, 130), (128, 236)]]
ONE = [[(150, 45), (146, 240)]]
ZERO = [[(140 + 55 * np.sin(t), 140 - 85 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 40)]]
ELEVEN = [[(70, 60), (72, 220)], [(200, 60), (198, 220)]]  # two digits side by side: not one digit


@pytest.fixture(scope="module")
def served(trained_run, tmp_path_factory, request):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore:No ccache found:UserWarning"
    server = start_server(trained_run["export"], tmp_path_factory.mktemp("serve_page") / "server.log", env)
    yield server
    stop_server(server.proc)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (`make browser` installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def draw_with_mouse(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
        page.mouse.up()


def draw_with_touch(page, strokes) -> None:
    """Real touch input through the DevTools protocol (touchStart / touchMove / touchEnd)."""
    box = page.locator("#pad").bounding_box()
    session = page.context.new_cdp_session(page)
    for stroke in strokes:
        points = [{"x": box["x"] + x, "y": box["y"] + y} for x, y in stroke]
        session.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [points[0]]})
        for a, b in itertools.pairwise(points):
            for f in np.linspace(0.2, 1.0, 5):
                point = {"x": a["x"] + f * (b["x"] - a["x"]), "y": a["y"] + f * (b["y"] - a["y"])}
                session.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    session.detach()


def shown(page) -> dict:
    """What the page shows once its latest prediction has arrived."""
    # polled from here: the page's Content-Security-Policy forbids the eval that wait_for_function uses
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if page.evaluate("document.body.dataset.state === 'idle' && document.getElementById('digit').dataset.label"):
            break
        time.sleep(0.05)
    return page.evaluate(
        """() => ({
            label: document.getElementById('digit').dataset.label,
            digit: document.getElementById('digit').textContent,
            bars: [...document.querySelectorAll('#bars .fill')].map(el => parseFloat(el.style.width)),
            best: [...document.querySelectorAll('#bars .best')].length,
            seen: [document.getElementById('seen').naturalWidth, document.getElementById('seen').naturalHeight],
            status: document.getElementById('status').textContent,
            confidence: document.getElementById('confidence').textContent,
            uncertain: document.getElementById('digit').dataset.uncertain,
        })"""
    )


def test_drawing_on_the_page_shows_the_models_answer(served, browser, tmp_path):
    context = browser.new_context(viewport={"width": 820, "height": 500}, has_touch=True)
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(served.url)
    page.wait_for_selector("#pad")

    draw_with_mouse(page, SEVEN)
    seven = shown(page)
    assert seven["label"] == "7" and seven["digit"] == "7", seven
    assert len(seven["bars"]) == 10 and abs(sum(seven["bars"]) - 100) < 1.0 and seven["best"] == 3  # 3 cells
    assert seven["bars"][7] == max(seven["bars"])
    assert seven["seen"] == [28, 28] and seven["status"] == ""  # the 28x28 picture the model saw
    shot = tmp_path / "serve.png"
    page.wait_for_timeout(400)  # the bars' 0.12 s width transition
    page.screenshot(path=str(shot))

    page.click("#clear")
    assert page.evaluate("document.getElementById('digit').dataset.label") == ""
    draw_with_touch(page, ONE)
    assert shown(page)["label"] == "1"

    page.click("#clear")
    draw_with_mouse(page, ZERO)
    zero = shown(page)
    assert zero["label"] == "0" and zero["confidence"].endswith("% sure") and zero["uncertain"] == "false", zero

    page.click("#clear")  # two digits: the page says it is not sure, and why
    draw_with_mouse(page, ELEVEN)
    eleven = shown(page)
    assert eleven["uncertain"] == "true" and eleven["confidence"].startswith("not sure"), eleven
    assert "several separate marks" in eleven["status"], eleven
    assert page.locator("#confidence.unsure").is_visible()

    # everything the page loaded came from the service itself
    assert requested and all(url.startswith(served.url) for url in requested), requested
    assert any(url.endswith("/predict") for url in requested)
    context.close()

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    canvas_white = (pixels[80:380, 20:320] > 200).all(axis=-1).sum()
    assert canvas_white > 2000, "the screenshot shows no strokes on the canvas"
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "images" / "serve.png")
