"""The peers' job with this library: ``paddle.Model.fit`` + ``callbacks.ResumeCkpt(dir, every_n_steps=4)``.

    python bench/peers/library_job.py --out OUT [--ckpt-dir DIR] [--rounds N]

See ``bench/peers/job_spec.py`` for the job and the files it writes.
"""

from __future__ import annotations

import tempfile
from typing import Any

import paddle
from job_spec import (
    BATCH,
    END_LR,
    EPOCHS,
    EVERY,
    IMAGES,
    LR,
    SEED,
    STEPS,
    Steps,
    arguments,
    finish,
    timed,
    timing_report,
)

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt
from paddle_mnist_hapi.data import InMemoryLoader


class Progress(paddle.callbacks.Callback):
    def __init__(self, steps: Steps, start: int = 0) -> None:
        super().__init__()
        self.steps, self.step = steps, start

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        self.steps.done(self.step)


def build() -> tuple[paddle.Model, InMemoryLoader]:
    paddle.seed(SEED)
    network = create_model("lenet5")
    model = paddle.Model(network, *specs_for("lenet5"))
    schedule = paddle.optimizer.lr.PolynomialDecay(LR, decay_steps=STEPS, end_lr=END_LR)
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=network.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    return model, InMemoryLoader(MNIST("train", limit=IMAGES), batch_size=BATCH, shuffle=True)


def fit(ckpt_dir: str | None, steps: Steps | None = None) -> tuple[paddle.Model, tuple[float, float], Any]:
    model, loader = build()
    ckpt = ResumeCkpt(ckpt_dir, every_n_steps=EVERY) if ckpt_dir else None
    callbacks: list[Any] = [ckpt] if ckpt else []
    if steps is not None:
        callbacks.append(Progress(steps))
    seconds = timed(lambda: model.fit(loader, epochs=EPOCHS, verbose=0, callbacks=callbacks))
    return model, seconds, ckpt


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    if args.rounds:
        fit(None)  # warm-up
        pairs = []
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                (wall, cpu), (wall_ckpt, cpu_ckpt) = fit(None)[1], fit(f"{tmp}/{round_}")[1]
                pairs.append((wall, wall_ckpt, cpu, cpu_ckpt))
        finish(args.out, {}, **timing_report(pairs), paddle=paddle.__version__)
        return
    steps = Steps(args.out)
    model, seconds, ckpt = fit(args.ckpt_dir, steps)
    start = ckpt.report.get("global_step", 0) if ckpt and ckpt.report.get("resumed_from") else 0
    weights = {name: tensor.numpy() for name, tensor in model.network.state_dict().items()}
    finish(args.out, weights, start_step=start, trained=steps.count, fit_seconds=seconds[0], paddle=paddle.__version__)


if __name__ == "__main__":
    main()
