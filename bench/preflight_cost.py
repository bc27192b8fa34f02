"""What the fail-fast check costs: ``python bench/preflight_cost.py``.

The check (``paddle_mnist_hapi/_private/preflight.py``) runs once per ``fit``
from the first callback of the library: it reads ``dataset[0]`` of the train
and eval data (RNG states saved and restored) and runs the network once on a
batch of one shaped like the ``InputSpec``. This script times it directly, per
kind of data, interleaved over several rounds (median), and sets it against
the time of one training step and one 60,000-image epoch measured in the same
process. Prints one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import paddle
from paddle.vision.transforms import ToTensor

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi._private import preflight
from paddle_mnist_hapi.data import MNIST, InMemoryLoader, paddle_mnist


def check_once(model: paddle.Model, loader) -> float:
    start = time.perf_counter()
    preflight.check_spec(model)
    preflight.check_data(model, loader, "train_data")
    preflight.check_data(model, loader, "eval_data")
    return time.perf_counter() - start


def main() -> None:
    paddle.set_device("cpu")
    model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    model.prepare(paddle.optimizer.Adam(parameters=model.parameters()), paddle.nn.CrossEntropyLoss())
    mnist = MNIST("train", limit=6400)
    loaders = {
        "MNIST Dataset (hapi's DataLoader)": paddle.io.DataLoader(mnist, batch_size=64),
        "paddle.vision MNIST + ToTensor": paddle.io.DataLoader(paddle_mnist("train", ToTensor(), limit=6400)),
        "InMemoryLoader": InMemoryLoader(mnist, batch_size=64),
    }
    times: dict[str, list[float]] = {name: [] for name in loaders}
    steps: list[float] = []
    batch = ([mnist.images[:64]], [mnist.labels[:64]])
    for loader in loaders.values():  # warm-up
        check_once(model, loader)
    model.train_batch(*batch)
    for _ in range(15):
        for name, loader in loaders.items():
            times[name].append(check_once(model, loader))
        start = time.perf_counter()
        model.train_batch(*batch)
        steps.append(time.perf_counter() - start)
    step = statistics.median(steps)
    epoch = step * np.ceil(60000 / 64)
    result = {
        "preflight_ms": {name: round(1000 * statistics.median(t), 2) for name, t in times.items()},
        "train_step_ms_batch64": round(1000 * step, 2),
        "preflight_in_train_steps": {name: round(statistics.median(t) / step, 2) for name, t in times.items()},
        "preflight_share_of_one_epoch_pct": {
            name: round(100 * statistics.median(t) / epoch, 4) for name, t in times.items()
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
