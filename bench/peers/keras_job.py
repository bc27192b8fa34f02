"""The peers' job with Keras 3 on the torch backend: ``BackupAndRestore(dir, save_freq=4)``.

    python bench/peers/keras_job.py --out OUT --data DATA.npz [--ckpt-dir DIR] [--rounds N]

As its documentation shows it: a ``Sequential`` LeNet-5, ``Adam`` with a
``PolynomialDecay`` schedule, ``fit(x, y, shuffle=True)``,
``keras.utils.set_random_seed``. See ``bench/peers/job_spec.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import tempfile
from typing import Any

import keras
import numpy as np
import torch
from job_spec import (
    BATCH,
    END_LR,
    EPOCHS,
    EVERY,
    LR,
    SEED,
    STEPS,
    Steps,
    arguments,
    finish,
    load_data,
    timed,
    timing_report,
)


class Progress(keras.callbacks.Callback):
    def __init__(self, steps: Steps) -> None:
        super().__init__()
        self.steps, self.start = steps, 0

    def on_train_begin(self, logs: Any = None) -> None:
        self.start = int(self.model.optimizer.iterations)  # after BackupAndRestore restored (it runs first)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.steps.done(int(self.model.optimizer.iterations))


def build() -> keras.Model:
    keras.utils.set_random_seed(SEED)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(6, 5, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"), layers.Dense(10),
    ])  # fmt: skip
    schedule = keras.optimizers.schedules.PolynomialDecay(LR, decay_steps=STEPS, end_learning_rate=END_LR)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(
    data: tuple[Any, Any], ckpt_dir: str | None, steps: Steps | None = None
) -> tuple[Any, tuple[float, float], Any]:
    keras.backend.clear_session()
    images, labels = data
    model = build()
    callbacks: list[Any] = [keras.callbacks.BackupAndRestore(ckpt_dir, save_freq=EVERY)] if ckpt_dir else []
    progress = Progress(steps) if steps is not None else None
    if progress is not None:
        callbacks.append(progress)
    seconds = timed(
        lambda: model.fit(images, labels, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=callbacks)
    )
    return model, seconds, progress


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    torch.set_num_threads(1)
    images, labels = load_data(args.data)
    data = (np.ascontiguousarray(images.transpose(0, 2, 3, 1)), labels)  # Keras' default: channels last
    if args.rounds:
        fit(data, None)  # warm-up
        with tempfile.TemporaryDirectory() as tmp:
            runs = [(fit(data, None)[1], fit(data, f"{tmp}/{n}")[1]) for n in range(args.rounds)]
            pairs = [(wall, wall_ckpt, cpu, cpu_ckpt) for (wall, cpu), (wall_ckpt, cpu_ckpt) in runs]
        finish(args.out, {}, **timing_report(pairs), keras=keras.__version__, torch=torch.__version__)
        return
    steps = Steps(args.out)
    model, seconds, progress = fit(data, args.ckpt_dir, steps)
    weights = {f"w{n}": np.asarray(keras.ops.convert_to_numpy(v)) for n, v in enumerate(model.weights)}
    finish(args.out, weights, start_step=progress.start, trained=steps.count, fit_seconds=seconds[0],
           keras=keras.__version__, torch=torch.__version__)  # fmt: skip


if __name__ == "__main__":
    main()
