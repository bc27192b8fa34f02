"""What ResumeCkpt's stop agreement costs data-parallel training: every update vs the adaptive schedule.

    python -m paddle.distributed.launch --nproc_per_node 2 --log_dir /tmp/agree_logs bench/agree_cost.py

Under ``paddle.distributed.launch`` the ranks must agree on a SIGTERM or
``max_time`` stop with an all-reduce. This trains LeNet-5 (``fit`` on
``InMemoryLoader``, 64 images per rank, ``ResumeCkpt`` on) in interleaved
rounds, agreeing after every update and on the library's schedule
(:func:`~paddle_mnist_hapi.checkpoint.preemption.updates_between_agreements`),
and prints images/s of all ranks per round and the median ratio (rank 0, one
JSON line; also in ``LOG_DIR/workerlog.0``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import paddle

import paddle_mnist_hapi.callbacks.resume as resume
from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.data import MNIST, InMemoryLoader


class Clock(paddle.callbacks.Callback):
    """The time from the end of the warm-up's last batch to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        if step == self.warmup - 1:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="images per rank and step")
    args = parser.parse_args(argv)
    paddle.set_device("cpu")
    train = MNIST("train")
    schedules = {"every update": lambda seconds: 1, "adaptive": resume.updates_between_agreements}
    speeds: dict[str, list[float]] = {name: [] for name in schedules}
    ranks = paddle.distributed.get_world_size()
    # one directory for all ranks (only rank 0 writes), new for each launch: the launch's endpoints
    launch = os.environ.get("PADDLE_TRAINER_ENDPOINTS", str(os.getpid())).replace(":", "_").replace(",", "-")
    with tempfile.TemporaryDirectory() as tmp:
        base = f"{tmp}/ckpt" if ranks == 1 else f"{tempfile.gettempdir()}/agree_cost-{launch}"
        for round_ in range(args.rounds):
            order = list(schedules) if round_ % 2 == 0 else list(reversed(schedules))
            for name in order:
                resume.updates_between_agreements = schedules[name]
                paddle.seed(0)
                network = create_model("lenet5")
                model = paddle.Model(network, *specs_for("lenet5"))
                optimizer = paddle.optimizer.Adam(learning_rate=2e-3, parameters=network.parameters())
                model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
                clock = Clock(warmup=20)
                callbacks = [resume.ResumeCkpt(f"{base}/{round_}-{name.replace(' ', '-')}"), clock]
                model.fit(InMemoryLoader(train, batch_size=args.batch), epochs=1, verbose=0,
                          num_iters=args.steps + 20, callbacks=callbacks)  # fmt: skip
                speeds[name].append(args.steps * args.batch * ranks / (clock.end - clock.start))
    resume.updates_between_agreements = schedules["adaptive"]
    if ranks > 1:
        paddle.distributed.barrier()
    if paddle.distributed.get_rank() == 0:
        shutil.rmtree(base, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    result = {
        "ranks": ranks,
        "img_per_s": {name: [round(v) for v in values] for name, values in speeds.items()},
        "median_img_per_s": {name: round(v) for name, v in medians.items()},
        "adaptive_vs_every_update": medians["adaptive"] / medians["every update"],
    }
    if paddle.distributed.get_rank() == 0:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
