"""Paddle's own unit tests for ``EarlyStopping``, ``ReduceLROnPlateau`` and ``VisualDL``, run with ours swapped in.

The ``test_callback_*.py`` files here are Paddle's (each names its source, commit and licence at the top; ruff
leaves them as they are). Everything that differs from how Paddle runs them is done here, not in them:

- the class: during each test ``paddle.callbacks.EarlyStopping``, ``ReduceLROnPlateau`` and ``VisualDL`` are
  this library's classes (the files look them up at run time); after the test the fixture checks that ours
  really were built, so a swap that silently stopped working fails the test;
- the data: ``paddle.vision.datasets.MNIST`` downloads on first use, and there is no internet here. Its
  download step returns the gzip IDX files ``data.paddle_mnist`` writes from the library's verified MNIST:
  the first 1,000 images of each split (the tests read the first 100, 8 and 512 of them);
- the directory: a temporary one (the VisualDL test writes ``visualdl_log_dir/`` where it runs);
- the graph mode: pytest runs each test as written (dygraph; the early-stopping test dygraph, then
  static-graph mode, as Paddle does), and test_in_pir_static_mode.py runs each whole test again under
  ``paddle.enable_static()`` (PIR, hapi's default static graph since Paddle 3.0). Paddle runs each file in a
  process of its own; here each test gets a program, scope and names of its own, and dygraph mode back after.
"""

from __future__ import annotations

import contextlib

import paddle
import pytest

from paddle_mnist_hapi import callbacks as ours
from paddle_mnist_hapi.data import paddle_mnist

SWAPPED = ("EarlyStopping", "ReduceLROnPlateau", "VisualDL")
SERVED = 1000  # images of each split served to paddle.vision.datasets.MNIST


@pytest.fixture(scope="session")
def offline_mnist_files() -> dict[str, str]:
    """paddle.vision.datasets.MNIST's download URLs -> local gzip IDX files of the real MNIST."""
    from paddle.vision.datasets import MNIST

    train, test = paddle_mnist("train", limit=SERVED), paddle_mnist("test", limit=SERVED)
    return {
        MNIST.TRAIN_IMAGE_URL: train.image_path,
        MNIST.TRAIN_LABEL_URL: train.label_path,
        MNIST.TEST_IMAGE_URL: test.image_path,
        MNIST.TEST_LABEL_URL: test.label_path,
    }


@pytest.fixture(autouse=True)
def paddle_upstream(monkeypatch, tmp_path, offline_mnist_files):
    """Ours swapped in, MNIST offline, a directory, program, scope and names of the test's own."""
    built: list[str] = []
    for name in SWAPPED:
        cls = getattr(ours, name)

        class Counted(cls):  # ours, counting that the test really builds it
            def __init__(self, *args, _cls=cls, **kwargs):
                built.append(_cls.__name__)
                super().__init__(*args, **kwargs)

        Counted.__name__ = Counted.__qualname__ = name
        monkeypatch.setattr(paddle.callbacks, name, Counted)

    def download(path, url, md5, module_name, download=True):
        return path or offline_mnist_files[url]

    monkeypatch.setattr("paddle.vision.datasets.mnist._check_exists_and_download", download)
    monkeypatch.chdir(tmp_path)
    try:
        with (
            paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()),
            paddle.static.scope_guard(paddle.static.Scope()),
            paddle.utils.unique_name.guard(),
        ):
            yield built
    finally:
        paddle.disable_static()  # the early-stopping test leaves static mode on (Paddle's process ends there)
    assert built, "the test never built one of this library's callbacks: the swap did not take"


@contextlib.contextmanager
def pir_static():
    """Static-graph mode (PIR) for a whole upstream test."""
    paddle.enable_static()
    try:
        yield
    finally:
        paddle.disable_static()
