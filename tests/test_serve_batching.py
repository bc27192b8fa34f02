"""MicroBatcher: requests submitted together share model calls, results go back to the right caller,
a lone request does not wait, a failing batch fails only its own requests; the load test's own
code (bench/serve_load.py) runs against a real server and counts what it sent."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

from paddle_mnist_hapi.data import MNIST
from paddle_mnist_hapi.deploy.predict import _example_predictor, softmax
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.serve.batching import MicroBatcher

from conftest import ROOT


def test_announced_requests_share_model_calls_and_get_their_own_rows():
    predictor = _example_predictor()  # a real exported model run by paddle.inference
    images = MNIST("test", limit=20).images
    calls: list[int] = []

    def run(batch: np.ndarray) -> np.ndarray:
        assert threading.current_thread().name == "paddle-mnist-batcher"  # only the worker touches the model
        calls.append(len(batch))
        return softmax(predictor.logits(batch))

    with MicroBatcher(run, max_batch=8, max_wait_ms=1000) as batcher:
        for _ in images:
            batcher.announce()
        futures = [batcher.submit(image[None], announced=True) for image in images]
        rows = np.concatenate([f.result(timeout=30) for f in futures])
        stats = batcher.stats()
    expected = softmax(predictor.logits(images))
    assert np.allclose(rows, expected, atol=1e-6)  # each caller got its own image's answer
    assert sum(calls) == 20 and max(calls) <= 8 and len(calls) == 3, calls  # 8 + 8 + 4
    assert stats["requests"] == 20 and stats["batches"] == 3 and stats["largest_batch"] == 8


def test_a_lone_request_does_not_wait_for_company():
    with MicroBatcher(np.negative, max_wait_ms=1000) as batcher:
        batcher.announce()
        batcher.withdraw()  # announced, then its upload turned out bad
        # with nothing on its way the worker runs at once; a 1 s wait would time out here
        assert batcher.submit(np.ones((1, 2))).result(timeout=0.5).tolist() == [[-1.0, -1.0]]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    def run(batch: np.ndarray) -> np.ndarray:
        if (batch < 0).any():
            raise ValueError("negative input")
        return batch * 10

    with MicroBatcher(run, max_batch=1) as batcher:
        bad, good = batcher.submit(-np.ones((1, 1))), batcher.submit(np.ones((1, 1)))
        with pytest.raises(ValueError, match="negative input"):
            bad.result(timeout=5)
        assert good.result(timeout=5).tolist() == [[10.0]]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.ones((1, 1)))


@pytest.mark.parametrize(("options", "match"), [({"max_batch": 0}, "max_batch"), ({"max_wait_ms": -1}, "max_wait")])
def test_options_are_checked(options, match):
    with pytest.raises(ConfigError, match=match):
        MicroBatcher(np.negative, **options)


def test_the_load_test_sends_what_it_counts(trained_run):
    pytest.importorskip("starlette", reason="the serve extra is not installed")
    spec = importlib.util.spec_from_file_location("bench_serve_load", ROOT / "bench" / "serve_load.py")
    serve_load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_load)
    files = serve_load.digit_pngs(8)
    with serve_load.server(trained_run["export"]) as port:
        before = serve_load._get(port, "/health")[1]["batching"]["requests"]
        result = serve_load.load(port, clients=4, requests=24, files=files)
        after = serve_load._get(port, "/health")[1]["batching"]["requests"]
    assert result["ok"] == 24 and result["failed"] == 0 and len(result["latencies"]) == 24
    assert after - before == 24  # the server saw exactly the requests the load test counted
    assert 0 < serve_load._percentile(result["latencies"], 50) <= serve_load._percentile(result["latencies"], 99)
