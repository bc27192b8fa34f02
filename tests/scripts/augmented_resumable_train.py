"""An augmented training run under ResumeCkpt; tests/test_augment_resume_kill.py runs it and kills it.

LeNet-5 on a few hundred real MNIST images through ``InMemoryLoader(augment=Augment(...))``,
shuffled, mid-epoch checkpoints, a stateful canary that counts batches (and, with ``--hold-at K``,
waits after global batch K until it is killed, so a test kills it at a chosen point). Writes the
final parameters to OUT.npz and counters to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import paddle

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt, StatefulCallback
from paddle_mnist_hapi.data import Augment, InMemoryLoader


class Canary(StatefulCallback):
    """Counts batches across resumes (state) and in this process (not state)."""

    def __init__(self, sleep: float, hold_at: int | None = None) -> None:
        self.sleep, self.hold_at = sleep, hold_at
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
        while self.total == self.hold_at:  # until the test kills this process
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--every-n-steps", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--hold-at", type=int, default=None, help="wait after this global batch until killed")
    parser.add_argument("--no-augment", action="store_true", help="the same run without augmentation")
    args = parser.parse_args()

    paddle.seed(0)
    np.random.seed(0)
    net = create_model("lenet5")
    model = paddle.Model(net, *specs_for("lenet5"))
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(0.005, T_max=args.epochs * (args.limit // args.batch_size))
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=net.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    augment = None if args.no_augment else Augment(start_epoch=1, ramp_epochs=1)  # epoch-dependent strength too
    train = InMemoryLoader(MNIST("train", limit=args.limit), args.batch_size, augment=augment, seed=7)
    canary = Canary(args.sleep, args.hold_at)
    ckpt = ResumeCkpt(args.save_dir, every_n_steps=args.every_n_steps, keep_last=3, monitor="acc")
    model.fit(
        train,
        InMemoryLoader(MNIST("test", limit=128), 128, shuffle=False),
        epochs=args.epochs,
        verbose=0,
        callbacks=[ckpt, canary],
    )
    np.savez(args.out + ".npz", **{k: v.numpy() for k, v in net.state_dict().items()})
    with open(args.out + ".json", "w") as fh:
        result = {"total": canary.total, "here": canary.here, "report": ckpt.report, "step": ckpt.global_step}
        json.dump(result, fh)


if __name__ == "__main__":
    main()
