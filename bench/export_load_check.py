"""What the sha256 check costs when an export is loaded: ``python bench/export_load_check.py [--rounds N]``.

For LeNet-5 and ``paddle.vision.models.resnet18(num_classes=10)`` (3x32x32), each
exported once with ``export_model``, it times in one process, interleaved, ``--rounds``
times each (resnet18: a third of them):

- ``checked_ms``: ``load_inference_predictor(prefix)`` as every loader runs it now: read both
  model files once, check size and sha256 against the metadata, write them to a private
  copy, create the ``paddle.inference`` predictor from the copy;
- ``unchecked_ms``: the predictor created from ``prefix`` directly (the load before the check);
- ``check_ms``: the read, check and copy alone (``verified_copy``);
- ``ratio``: the median over rounds of ``checked / unchecked``.

It prints one JSON object per model (milliseconds are medians). The machine may be
shared: compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import paddle
from paddle.static import InputSpec

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.deploy.export import _create_predictor, export_model, load_inference_predictor, verified_copy


def _export(name: str, directory: str) -> str:
    paddle.seed(0)
    if name == "resnet18":
        spec = InputSpec([None, 3, 32, 32], "float32", "image")
        model = paddle.Model(paddle.vision.models.resnet18(num_classes=10), spec)
    else:
        model = paddle.Model(create_model(name), *specs_for(name))
    prefix = os.path.join(directory, name)
    export_model(model, prefix, batch_sizes=(1, 2))
    return prefix


def _seconds(action: Callable[[], Any]) -> float:
    begin = time.perf_counter()
    action()
    return time.perf_counter() - begin


def _check_only(prefix: str) -> None:
    with verified_copy(prefix):
        pass


def measure(name: str, rounds: int, directory: str) -> dict[str, Any]:
    prefix = _export(name, directory)
    size = sum(os.path.getsize(prefix + suffix) for suffix in (".json", ".pdiparams"))
    load_inference_predictor(prefix)  # warm the page cache and Paddle's first-use costs
    times: dict[str, list[float]] = {"checked": [], "unchecked": [], "check": []}
    for index in range(rounds):
        actions = {
            "checked": lambda: load_inference_predictor(prefix),
            "unchecked": lambda: _create_predictor(prefix, 1, prefix),
            "check": lambda: _check_only(prefix),
        }
        order = list(actions) if index % 2 == 0 else list(reversed(actions))  # alternate which runs first
        for kind in order:
            times[kind].append(_seconds(actions[kind]))
    ratios = [c / u for c, u in zip(times["checked"], times["unchecked"], strict=True)]
    return {
        "model": name,
        "model_files_mb": round(size / 1e6, 2),
        "rounds": rounds,
        "checked_ms": round(1000 * statistics.median(times["checked"]), 1),
        "unchecked_ms": round(1000 * statistics.median(times["unchecked"]), 1),
        "check_ms": round(1000 * statistics.median(times["check"]), 1),
        "ratio": round(statistics.median(ratios), 3),
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        for name, rounds in (("lenet5", args.rounds), ("resnet18", max(args.rounds // 3, 1))):
            print(json.dumps(measure(name, rounds, directory)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
