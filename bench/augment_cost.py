"""What augmentation costs per training step: ``python bench/augment_cost.py [--steps 200] [--chunk 25]``.

In one process, interleaved in chunks (plain, augmented, augmented, plain, ...)
so that load from other processes hits both alike: LeNet-5 ``paddle.Model.fit``
steps on ``InMemoryLoader`` batches of the real MNIST without and with
``augment=Augment()``, and the augmentation alone on the same batches. Prints
one JSON object: milliseconds per batch for each, ``augment_vs_step`` (the
augmentation's time over a plain training step's) and ``fit_overhead``
(augmented over plain training time, minus 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.data import MNIST, Augment, InMemoryLoader


def _model() -> paddle.Model:
    paddle.seed(0)
    network = create_model("lenet5")
    model = paddle.Model(network, *specs_for("lenet5"))
    model.prepare(
        paddle.optimizer.Adam(learning_rate=2e-3, parameters=network.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    return model


def measure(steps: int, chunk: int, batch_size: int) -> dict[str, Any]:
    train = MNIST("train", limit=max(steps, chunk) * batch_size)
    augment = Augment()
    loaders = {
        "plain": InMemoryLoader(train, batch_size),
        "augmented": InMemoryLoader(train, batch_size, augment=augment),
    }
    models = {name: _model() for name in loaders}
    for name, loader in loaders.items():  # warm-up
        models[name].fit(loader, epochs=1, verbose=0, num_iters=5)
    batches = [images for images, _ in InMemoryLoader(train, batch_size)][:chunk]
    per_batch: dict[str, list[float]] = {"plain": [], "augmented": [], "augment_only": []}
    for round_ in range(max(1, steps // chunk)):
        order = ["plain", "augmented", "augment_only"] if round_ % 2 == 0 else ["augment_only", "augmented", "plain"]
        for name in order:
            started = time.perf_counter()
            if name == "augment_only":
                for index, images in enumerate(batches):
                    augment(images, np.random.default_rng([round_, index]))
            else:
                loaders[name].set_epoch(round_)
                models[name].fit(loaders[name], epochs=1, verbose=0, num_iters=chunk)
            per_batch[name].append((time.perf_counter() - started) / chunk * 1e3)
    plain, augmented, only = (statistics.median(per_batch[k]) for k in ("plain", "augmented", "augment_only"))
    return {
        "batch_size": batch_size,
        "steps": steps,
        "chunk": chunk,
        "plain_step_ms": plain,
        "augmented_step_ms": augmented,
        "augment_ms": only,
        "augment_vs_step": only / plain,
        "fit_overhead": augmented / plain - 1.0,
        "chunks_ms": per_batch,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    paddle.set_device("cpu")
    print(json.dumps(measure(args.steps, args.chunk, args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
