"""One cell of the resume matrix: a small training run with ResumeCkpt, driven by flags.

The resume tests run it uninterrupted (the reference) and killed then re-run,
and compare. A canary layer records a digest of every training batch and a
stateful canary callback (with tensor state) appends one line per batch to
OUT.batches.jsonl (global step, digest, loss, acc, lr) and one per evaluation;
at the end OUT.npz holds the parameters and optimizer state and OUT.json the
counters, evaluate()'s result and ResumeCkpt's report.

``--hold-at K`` makes the canary wait after batch K (global) until the file
OUT.release exists: a test kills it there (SIGKILL), or signals it and then
releases it, so the kill or the signal lands at batch K however loaded the
machine is, and the run cannot finish first.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import paddle

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt, StatefulCallback, current_lr
from paddle_mnist_hapi.checkpoint import preemption
from paddle_mnist_hapi.checkpoint.state import optimizer_tensors
from paddle_mnist_hapi.data import InMemoryLoader


class CanaryLayer(paddle.nn.Layer):
    """Passes its input through; remembers a digest of the last training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.digest = None

    def forward(self, x):
        if self.training:
            self.digest = float(np.float64(x.numpy().astype(np.float64).sum()))
        return x


class Canary(StatefulCallback):
    """Counts batches across resumes (JSON state) and sums the batch digests (tensor state)."""

    def __init__(self, layer: CanaryLayer, path: str, sleep: float, raise_at: int | None, hold: tuple | None) -> None:
        self.layer, self.path, self.sleep, self.raise_at = layer, path, sleep, raise_at
        self.hold_at, self.release = hold or (None, None)
        self.here = 0
        super().__init__()

    def reset_state(self) -> None:
        self.total = 0
        self.evals = 0
        self.digest_sum = paddle.zeros([1], dtype="float64")

    def state_dict(self):
        return {"total": self.total, "evals": self.evals}

    def _load_state(self, state) -> None:
        self.total, self.evals = state["total"], state["evals"]

    def state_tensors(self):
        return {"digest_sum": self.digest_sum}

    def load_state_tensors(self, tensors) -> None:
        self.digest_sum = tensors["digest_sum"].astype("float64")

    def _write(self, record) -> None:
        with open(self.path, "a") as fh:  # one line per batch, flushed: a SIGKILL loses nothing written
            fh.write(json.dumps({**record, "pid": os.getpid()}) + "\n")

    def on_train_batch_begin(self, step, logs=None):
        if self.raise_at is not None and self.total == self.raise_at:
            raise RuntimeError(f"injected failure before batch {self.total + 1}")

    def on_train_batch_end(self, step, logs=None):
        logs = logs or {}
        self.total += 1
        self.here += 1
        self.digest_sum = self.digest_sum + paddle.to_tensor([self.layer.digest], dtype="float64")
        self._write({
            "step": self.total, "digest": self.layer.digest, "loss": float(logs["loss"][0]),
            "acc": float(logs.get("acc", -1)), "lr": float(current_lr(self.model)), "batch": step,
        })  # fmt: skip
        if self.sleep:
            time.sleep(self.sleep)
        if self.total == self.hold_at:
            while not os.path.exists(self.release):  # until the test has killed or signalled this process
                time.sleep(0.01)

    def on_eval_end(self, logs=None):
        self.evals += 1
        self._write({"eval": self.evals, "at": self.total, "loss": float(logs["loss"][0]), "acc": float(logs["acc"])})


def train_data(args, dataset):
    if args.data == "dataset":
        return dataset
    if args.data == "inmemory":
        return InMemoryLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=args.drop_last)
    if args.data == "batch_sampler":  # a user BatchSampler over a RandomSampler (numpy's global RNG)
        sampler = paddle.io.BatchSampler(
            sampler=paddle.io.RandomSampler(dataset), batch_size=args.batch_size, drop_last=args.drop_last
        )
        return paddle.io.DataLoader(dataset, batch_sampler=sampler)
    workers = {"loader0": 0, "loader2": 2, "persistent": 2}[args.data]
    return paddle.io.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True, drop_last=args.drop_last, num_workers=workers,
        persistent_workers=args.data == "persistent",
    )  # fmt: skip


def callback_stack(args, ckpt, canary):
    if not args.stack:
        return [ckpt, canary]
    from paddle_mnist_hapi.callbacks import EarlyStopping, LRStepper, MetricsLog, NaNGuard, ReduceLROnPlateau, VisualDL

    return [
        ckpt,
        canary,
        EarlyStopping(monitor="acc", patience=5),
        ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5),
        LRStepper(),
        VisualDL(args.out + ".vdl", log_freq=2, images=0),
        MetricsLog(args.out + ".metrics.jsonl", log_freq=2),
        NaNGuard(),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--data",
        default="dataset",
        choices=["dataset", "loader0", "loader2", "persistent", "batch_sampler", "inmemory"],
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--drop-last", action="store_true")
    parser.add_argument("--every-n-steps", type=int, default=None)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--eval-freq", type=int, default=1)
    parser.add_argument("--num-iters", type=int, default=None)
    parser.add_argument("--stack", action="store_true")
    parser.add_argument("--course-schedule", action="store_true", help="PolynomialDecay sized to epochs")
    parser.add_argument("--max-time", type=float, default=None)
    parser.add_argument("--raise-at", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--hold-at", type=int, default=None, help="wait after this global batch for OUT.release")
    parser.add_argument("--signals", nargs="+", default=None, help="ResumeCkpt(signals=...)")
    parser.add_argument("--agree-seconds", type=float, default=None, help="checkpoint.preemption.AGREE_SECONDS")
    args = parser.parse_args()
    if args.agree_seconds is not None:
        preemption.AGREE_SECONDS = args.agree_seconds

    paddle.seed(0)
    np.random.seed(0)
    canary_layer = CanaryLayer()
    net = paddle.nn.Sequential(canary_layer, create_model("mlp"), paddle.nn.Dropout(0.1))
    model = paddle.Model(net, *specs_for("mlp"))
    dataset = MNIST("train", limit=args.limit)
    steps = len(dataset) // args.batch_size if args.drop_last else -(-len(dataset) // args.batch_size)
    decay_steps = args.epochs * steps if args.course_schedule else 1000
    schedule = paddle.optimizer.lr.PolynomialDecay(0.05, decay_steps=decay_steps, end_lr=0.005)
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=net.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    rank, nranks = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    per_rank = -(-len(dataset) // nranks)  # what one rank's DistributedBatchSampler takes
    steps_per_epoch = per_rank // args.batch_size if args.drop_last else -(-per_rank // args.batch_size)
    out = args.out if nranks == 1 else f"{args.out}.rank{rank}"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    hold = (args.hold_at, args.out + ".release") if args.hold_at is not None else None
    canary = Canary(canary_layer, out + ".batches.jsonl", args.sleep, args.raise_at, hold)
    signals = {"signals": args.signals} if args.signals else {}
    ckpt = ResumeCkpt(args.save_dir, every_n_steps=args.every_n_steps, keep_last=2, monitor="acc",
                      max_time=args.max_time, **signals)  # fmt: skip
    started = time.monotonic()
    model.fit(
        train_data(args, dataset),
        MNIST("test", limit=64),
        batch_size=args.batch_size,
        epochs=args.epochs,
        eval_freq=args.eval_freq,
        drop_last=args.drop_last,
        accumulate_grad_batches=args.accumulate,
        num_iters=args.num_iters,
        verbose=0,
        callbacks=callback_stack(args, ckpt, canary),
    )
    fit_seconds = time.monotonic() - started
    evaluation = model.evaluate(MNIST("test", limit=64), batch_size=64, verbose=0)
    arrays = {f"param/{k}": v.numpy() for k, v in net.state_dict().items()}
    arrays.update({f"opt/{k}": v.numpy() for k, v in optimizer_tensors(model._optimizer, net).items()})
    arrays["lr"] = np.asarray(float(current_lr(model)))
    np.savez(out + ".npz", **arrays)
    with open(out + ".json", "w") as fh:
        json.dump({
            "total": canary.total, "here": canary.here, "evals": canary.evals,
            "digest_sum": canary.digest_sum.numpy().tolist(), "report": ckpt.report, "step": ckpt.global_step,
            "saved": str(ckpt.last_saved) if ckpt.last_saved else None, "pid": os.getpid(),
            "evaluate": {k: np.asarray(v).tolist() for k, v in evaluation.items()}, "fit_seconds": fit_seconds,
            "steps_per_epoch": steps_per_epoch,
        }, fh)  # fmt: skip


if __name__ == "__main__":
    main()
