"""A small training run in hapi's static-graph mode (``paddle.enable_static()``) with ResumeCkpt, driven by flags.

tests/callbacks/test_static_graph.py runs it uninterrupted (the reference), and
killed with SIGKILL after a checkpoint exists then re-run, and compares the two
bit for bit. Each training batch appends a line to OUT.batches.jsonl (global
step, loss, acc, lr, pid) and each evaluation one; at the end OUT.npz holds every
variable a step changes (read from the global scope: parameters, batch-norm
statistics, optimizer accumulators, the learning rate) and OUT.json the
counters, evaluate()'s result and ResumeCkpt's report. ``--stack`` adds the
library's other callbacks that work in static-graph mode, with the state they
checkpoint (EMA's average, EarlyStopping's best weights, the board, the metrics file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import numpy as np
import paddle

from paddle_mnist_hapi import MNIST, specs_for
from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi.callbacks import ResumeCkpt, StatefulCallback, current_lr


class Counter(StatefulCallback):
    """Counts batches across resumes (its checkpointed state) and logs each batch and evaluation."""

    def __init__(self, path: str, sleep: float) -> None:
        self.path, self.sleep, self.here = path, sleep, 0
        super().__init__()

    def reset_state(self) -> None:
        self.total = 0
        self.evals = 0

    def state_dict(self):
        return {"total": self.total, "evals": self.evals}

    def _load_state(self, state) -> None:
        self.total, self.evals = state["total"], state["evals"]

    def _write(self, record) -> None:
        with open(self.path, "a") as fh:  # one line per batch, flushed: a SIGKILL loses nothing written
            fh.write(json.dumps({**record, "pid": os.getpid()}) + "\n")

    def on_train_batch_end(self, step, logs=None):
        logs = logs or {}
        self.total += 1
        self.here += 1
        self._write({
            "step": self.total, "loss": float(logs["loss"][0]), "acc": float(logs.get("acc", -1)),
            "lr": float(current_lr(self.model)), "batch": step,
        })  # fmt: skip
        if self.sleep:
            time.sleep(self.sleep)

    def on_eval_end(self, logs=None):
        self.evals += 1
        self._write({"eval": self.evals, "at": self.total, "loss": float(logs["loss"][0]), "acc": float(logs["acc"])})


def callback_stack(args, ckpt, counter):
    if not args.stack:
        return [ckpt, counter]
    from paddle_mnist_hapi.callbacks import (
        EMA,
        EarlyStopping,
        LRStepper,
        MetricsLog,
        NaNGuard,
        ReduceLROnPlateau,
        VisualDL,
    )

    return [
        ckpt,
        counter,
        EarlyStopping(monitor="acc", patience=5, restore_best_weights=True, save_best_model=False),
        ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=5.0, verbose=0),
        LRStepper(),
        VisualDL(args.out + ".vdl", log_freq=2, images=4, histogram_freq=1),
        MetricsLog(args.out + ".metrics.jsonl", log_freq=2),
        NaNGuard(check_parameters_every=2),
        EMA(decay=0.9),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--every-n-steps", type=int, default=None)
    parser.add_argument("--stack", action="store_true")
    parser.add_argument("--old-ir", action="store_true", help="Paddle's legacy static graph (before PIR)")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()

    with paddle.pir_utils.OldIrGuard() if args.old_ir else contextlib.nullcontext():
        paddle.enable_static()
        paddle.seed(0)
        np.random.seed(0)
        net = paddle.nn.Sequential(
            paddle.nn.Flatten(), paddle.nn.Linear(784, 64), paddle.nn.BatchNorm1D(64), paddle.nn.ReLU(),
            paddle.nn.Dropout(0.2), paddle.nn.Linear(64, 10),
        )  # fmt: skip
        model = paddle.Model(net, *specs_for("lenet5"))
        schedule = paddle.optimizer.lr.PolynomialDecay(0.05, decay_steps=1000, end_lr=0.005)
        model.prepare(
            paddle.optimizer.Adam(schedule, parameters=net.parameters()),
            paddle.nn.CrossEntropyLoss(),
            paddle.metric.Accuracy(),
        )
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        counter = Counter(args.out + ".batches.jsonl", args.sleep)
        ckpt = ResumeCkpt(args.save_dir, every_n_steps=args.every_n_steps, keep_last=2, monitor="acc")
        model.fit(
            MNIST("train", limit=args.limit),
            MNIST("test", limit=64),
            batch_size=args.batch_size,
            epochs=args.epochs,
            verbose=0,
            callbacks=callback_stack(args, ckpt, counter),
        )
        evaluation = model.evaluate(MNIST("test", limit=64), batch_size=64, verbose=0)
        arrays = {f"param/{k}": v for k, v in static_graph.network_arrays(net).items()}
        names = static_graph.optimizer_names(model._optimizer, net)
        arrays.update({f"opt/{k}": static_graph.read(name) for k, name in names.items()})
        arrays["lr"] = static_graph.read(static_graph.require_learning_rate_name(model))
        np.savez(args.out + ".npz", **arrays)
        with open(args.out + ".json", "w") as fh:
            json.dump({
                "total": counter.total, "here": counter.here, "evals": counter.evals, "report": ckpt.report,
                "step": ckpt.global_step, "pid": os.getpid(), "static": static_graph.is_static(model),
                "evaluate": {k: np.asarray(v).tolist() for k, v in evaluation.items()},
            }, fh)  # fmt: skip


if __name__ == "__main__":
    main()
