"""Does ``EMA`` lift LeNet-5's test accuracy on MNIST for the default recipe? ``python bench/ema_accuracy.py``.

Trains the default recipe (``paddle_mnist_hapi.recipe``: LeNet-5, Adam, cosine
schedule, 4 epochs, batch 64, the 60,000 training images) with ``EMA(decay,
keep="trained")`` appended to its callbacks. EMA does not change the training
trajectory (it only swaps the average in for evaluation), so one run gives a
paired comparison: after every epoch the 10,000 test images are scored with
the trained weights and with the averaged ones. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

import numpy as np
import paddle


class TrainedAccuracy(paddle.callbacks.Callback):
    """After each evaluation (which ran on the averaged weights), score the trained weights on the same data."""

    def __init__(self, ema: Any) -> None:
        super().__init__()
        self.ema = ema
        self.rows: list[dict[str, float]] = []

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        loader = self.model._test_dataloader
        network = self.model.network
        network.eval()
        correct = total = 0
        with paddle.no_grad():
            for images, labels in loader:
                predicted = network(paddle.to_tensor(images)).numpy().argmax(1)
                correct += int((predicted == np.asarray(labels).reshape(-1)).sum())
                total += len(predicted)
        network.train()
        self.rows.append({"ema_acc": float(logs["acc"]), "trained_acc": correct / total})


def run(seed: int, decay: float, epochs: int | None) -> dict[str, Any]:
    from paddle_mnist_hapi import recipe
    from paddle_mnist_hapi.callbacks import EMA

    ema = EMA(decay=decay, keep="trained")
    probe = TrainedAccuracy(ema)
    default_callbacks = recipe.default_callbacks
    # EMA swaps the average back out at its on_eval_end: the probe, after it, sees the trained weights
    recipe.default_callbacks = lambda config, output: [*default_callbacks(config, output), ema, probe]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = recipe.TrainConfig(output=tmp, verbose=0, seed=seed)
            if epochs is not None:
                config.epochs = epochs
            summary = recipe.train(config)
    finally:
        recipe.default_callbacks = default_callbacks
    return {"seed": seed, "decay": decay, "epochs": config.epochs, "per_epoch": probe.rows,
            "final_trained_acc": summary["test_acc"], "final_ema_acc": probe.rows[-1]["ema_acc"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    paddle.set_device("cpu")
    for seed in args.seeds:
        print(json.dumps(run(seed, args.decay, args.epochs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
