"""The drawing page for a model of your own: its class names on the bars, its input size, in a real browser."""

from __future__ import annotations

import pytest
from test_export import RGB_SPEC, SmallRGB
from test_serve import start_server, stop_server
from test_serve_page import browser, draw_with_mouse, shown  # noqa: F401 (the browser fixture)

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install 'paddle-mnist-hapi[serve]'")

NAMES = ["cat", "dog", "fox", "owl"]


@pytest.fixture(scope="module")
def served_rgb(tmp_path_factory, subprocess_env_module):
    import paddle

    from paddle_mnist_hapi import ImageInput, export_model

    folder = tmp_path_factory.mktemp("rgb_page")
    paddle.seed(1)
    export_model(paddle.Model(SmallRGB(), RGB_SPEC), folder / "rgb", class_names=NAMES,
                 preprocessing=ImageInput(mean=0.5, std=0.5))  # fmt: skip
    server = start_server(str(folder / "rgb"), folder / "server.log", subprocess_env_module)
    yield server
    stop_server(server.proc)


@pytest.fixture(scope="module")
def subprocess_env_module():
    import os

    from conftest import ROOT

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore:No ccache found:UserWarning"
    return env


def test_the_page_labels_its_bars_with_the_models_class_names(served_rgb, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 820, "height": 500})
    page.goto(served_rgb.url)
    page.wait_for_selector("#pad")
    for _ in range(100):  # the page reads /metadata after it loads
        if page.evaluate("document.querySelectorAll('#bars .track').length") == len(NAMES):
            break
        page.wait_for_timeout(100)
    labels = page.evaluate("[...document.querySelectorAll('#bars > div:nth-child(3n+1)')].map(el => el.textContent)")
    assert labels == NAMES
    assert page.evaluate("document.getElementById('title').textContent") == "Draw a picture"
    assert "32×32" in page.evaluate("document.getElementById('seen-size').textContent")

    draw_with_mouse(page, [[(60, 60), (220, 60), (220, 220), (60, 220), (60, 60)]])
    answer = shown(page)
    assert answer["digit"] in NAMES and NAMES[int(answer["label"])] == answer["digit"], answer
    assert len(answer["bars"]) == len(NAMES) and answer["seen"] == [32, 32] and answer["status"] == ""
    page.close()
