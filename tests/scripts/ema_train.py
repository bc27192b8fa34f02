"""A training script with ``EMA`` and ``ResumeCkpt``; the EMA resume test runs it and kills it.

LeNet-5 plus dropout on a real MNIST subset, a per-update polynomial schedule,
``accumulate_grad_batches=2``, shuffling, evaluation every epoch (on the
averaged weights), mid-epoch checkpoints. Writes the final network weights to
OUT.params.npz, the EMA's averaged weights to OUT.ema.npz, and a summary to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import paddle

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import EMA, LRStepper, ResumeCkpt
from paddle_mnist_hapi.schedules import polynomial_decay


class Pace(paddle.callbacks.Callback):
    """Counts the batches this process trained; with ``hold_at``, waits after that batch until killed."""

    def __init__(self, hold_at: int | None) -> None:
        super().__init__()
        self.hold_at, self.here = hold_at, 0

    def on_train_batch_end(self, step, logs=None):
        self.here += 1
        while self.here == self.hold_at:  # a test kills this process here, wherever the machine's load put it
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hold-at", type=int, default=None, help="wait after this batch until killed")
    args = parser.parse_args()

    paddle.seed(0)
    np.random.seed(0)
    net = paddle.nn.Sequential(create_model("lenet5"), paddle.nn.Dropout(0.2))
    model = paddle.Model(net, *specs_for("lenet5"))
    schedule = polynomial_decay(args.epochs, 10, start_lr=0.01, end_lr=0.001, accumulate_grad_batches=2)
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=net.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    ema = EMA(decay=0.9, keep="trained")
    ckpt = ResumeCkpt(args.save_dir, every_n_steps=4, keep_last=2)
    pace = Pace(args.hold_at)
    model.fit(
        MNIST("train", limit=640),
        MNIST("test", limit=128),
        batch_size=64,
        epochs=args.epochs,
        verbose=0,
        accumulate_grad_batches=2,
        callbacks=[ckpt, LRStepper(), pace, ema],
    )
    np.savez(args.out + ".params.npz", **{k: v.numpy() for k, v in net.state_dict().items()})
    np.savez(args.out + ".ema.npz", **ema.averaged_weights())
    with open(args.out + ".json", "w") as fh:
        json.dump({"here": pace.here, "updates": ema.updates, "report": ckpt.report}, fh)


if __name__ == "__main__":
    main()
