"""A training script that uses ResumeCkpt; the resume tests run it and kill it.

Runs LeNet-5 (plus dropout, so Paddle's RNG matters) on a real MNIST subset
with a per-batch polynomial LR schedule, shuffling, evaluation every epoch
and a stateful canary callback that counts the batches it saw. Writes the
final parameters to OUT.npz and the counters to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import paddle

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt, StatefulCallback


class Canary(StatefulCallback):
    """Counts batches across resumes (state) and in this process (not state)."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep
        self.here = 0
        super().__init__()

    def reset_state(self) -> None:
        self.total = 0

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total}

    def _load_state(self, state: dict[str, int]) -> None:
        self.total = state["total"]

    def on_train_batch_end(self, step, logs=None):
        self.total += 1
        self.here += 1
        if self.sleep:
            time.sleep(self.sleep)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--every-n-steps", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--loader", choices=["dataset", "dataloader"], default="dataset")
    args = parser.parse_args()

    paddle.seed(0)
    np.random.seed(0)
    net = paddle.nn.Sequential(create_model("lenet5"), paddle.nn.Dropout(0.2))
    model = paddle.Model(net, *specs_for("lenet5"))
    schedule = paddle.optimizer.lr.PolynomialDecay(0.01, decay_steps=200, end_lr=0.001)
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=net.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    train = MNIST("train", limit=args.limit)
    if args.loader == "dataloader":  # a user-built loader shuffled by numpy's global RNG
        train = paddle.io.DataLoader(train, batch_size=args.batch_size, shuffle=True)
    canary = Canary(args.sleep)
    ckpt = ResumeCkpt(args.save_dir, every_n_steps=args.every_n_steps, keep_last=3, monitor="acc")
    model.fit(
        train,
        MNIST("test", limit=256),
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[ckpt, canary],
    )
    rank, nranks = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    out = args.out if nranks == 1 else f"{args.out}.rank{rank}"
    np.savez(out + ".npz", **{k: v.numpy() for k, v in net.state_dict().items()})
    with open(out + ".json", "w") as fh:
        result = {
            "total": canary.total,
            "here": canary.here,
            "report": ckpt.report,
            "step": ckpt.global_step,
            "saved": str(ckpt.last_saved) if ckpt.last_saved else None,
        }
        json.dump(result, fh)


if __name__ == "__main__":
    main()
