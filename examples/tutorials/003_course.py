"""Tutorial 003, the full Paddle MNIST course, with this library.

The course (/work/shared/seeds/003) goes from a one-layer regression to a CNN:
MLP vs CNN, square_error_cost vs cross entropy, SGD / Momentum / Adagrad /
Adam, VisualDL, resuming with ``PolynomialDecay`` and the optimizer's state,
``paddle.jit.save`` for deployment and predicting a local image with
``load_image``. Each part is here, written the way the course's reader would
with ``paddle.Model`` and this library. Kept: the course's networks (its MLP,
its two-conv CNN), its losses and optimizers and their learning rate 0.01,
Momentum with ``PolynomialDecay(0.01 -> 0.001)``, ``paddle.jit.load`` of the
export and the ``load_image`` function. Changed:

* data: the course's 50,000 / 10,000 split of the real MNIST, offline and
  normalized once (``MNIST('train'|'val', split='course')``);
* labels: int64 for cross entropy; float32 only for square_error_cost, where
  they belong (with cross entropy the library refuses float labels at train begin);
* the hand ``Trainer`` with ``paddle.save(opt.state_dict(), ...pdopt)`` and
  ``set_state_dict`` per epoch: ``callbacks.ResumeCkpt(save_dir=...)`` saves and
  restores model, optimizer, the schedule, epoch, data order and RNG; the
  resumed run below ends bit-identical to one never interrupted;
* the VisualDL ``LogWriter`` calls in the loop: ``callbacks.VisualDL(log_dir)``;
* ``paddle.jit.save(layer, path, input_spec=[InputSpec([None, 784])])``:
  ``export_model(model, prefix)`` (``model.save(training=False)`` with the
  network's own spec, reloaded with ``paddle.inference`` and compared);
* ``Image.ANTIALIAS`` is gone from Pillow 10: ``Image.LANCZOS``; and the
  library's ``Predictor`` reads the file, inverts dark-on-light and centres the digit.

    python examples/tutorials/003_course.py            # 50,000 / 10,000 images, 3 epochs (comparisons: 1)
    python examples/tutorials/003_course.py --quick    # 600 / 300 images, 2 epochs (comparisons: 1)

The last line printed is one JSON object with what each part measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import paddle
from PIL import Image

from paddle_mnist_hapi import Predictor, callbacks, cnn, create_model, export_model, schedules, specs_for
from paddle_mnist_hapi.data import MNIST


def course_model(name: str, optimizer: str = "adam", lr: float = 0.01, loss: str = "cross_entropy") -> paddle.Model:
    # square_error_cost regresses the digit's value: one output (the course's "output size 1")
    net = cnn.MnistCNN(num_classes=1) if loss == "square_error_cost" else create_model(name)
    model = paddle.Model(net, *specs_for(name))
    make = {
        "sgd": lambda: paddle.optimizer.SGD(learning_rate=lr, parameters=model.parameters()),
        "momentum": lambda: paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=model.parameters()),
        "adagrad": lambda: paddle.optimizer.Adagrad(learning_rate=lr, parameters=model.parameters()),
        "adam": lambda: paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters()),
    }[optimizer]
    if loss == "square_error_cost":
        model.prepare(make(), paddle.nn.MSELoss())
    else:
        model.prepare(make(), paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


def accuracy(model: paddle.Model, data: MNIST) -> float:
    logits = np.concatenate([model.predict_batch([data.images[i : i + 500]])[0] for i in range(0, len(data), 500)])
    if logits.shape[-1] == 1:  # regression on the digit's value: round it, as the course does
        predicted = np.clip(np.rint(logits[:, 0]), 0, 9)
    else:
        predicted = logits.argmax(-1)
    return round(float((predicted == data.labels[:, 0]).mean()), 4)


class FloatLabels(paddle.io.Dataset):
    """The course's regression data: the digit's value as a float32 label, for square_error_cost."""

    def __init__(self, data: MNIST) -> None:
        super().__init__()
        self.data = data

    def __getitem__(self, idx: int):
        return self.data.images[idx], self.data.labels[idx].astype("float32")

    def __len__(self) -> int:
        return len(self.data)


class Interrupt(Exception):
    """Stands for a crash or a kill in the middle of training."""


class InterruptAt(paddle.callbacks.Callback):
    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt(f"interrupted at the start of epoch {epoch}")


def resumable_run(out: Path, train: MNIST, epochs: int, batch: int, interrupt_at: int | None = None) -> dict:
    """One life of the course's resumable training: Momentum + PolynomialDecay(0.01 -> 0.001), checkpoints.

    Everything a process would build is built here under one ``unique_name.guard`` (a new process
    gets fresh parameter names; see docs/checkpointing.md).
    """
    paddle.seed(1024)
    np.random.seed(1024)
    with paddle.utils.unique_name.guard():
        model = paddle.Model(create_model("mnist_cnn"), *specs_for("mnist_cnn"))
        steps = -(-len(train) // batch)
        lr = schedules.polynomial_decay(epochs, steps, start_lr=0.01, end_lr=0.001)
        opt = paddle.optimizer.Momentum(learning_rate=lr, momentum=0.9, parameters=model.parameters())
        model.prepare(opt, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
        resume = callbacks.ResumeCkpt(save_dir=str(out))
        cbs = [resume] + ([InterruptAt(interrupt_at)] if interrupt_at is not None else [])
        try:
            model.fit(train, epochs=epochs, batch_size=batch, verbose=0, callbacks=cbs)
        except Interrupt as exc:
            return {"interrupted": str(exc)}
        weights = np.concatenate([p.numpy().ravel() for p in model.parameters()])
        return {"weights": weights, "last_lr": float(lr()), "report": dict(resume.report), "model": model}


def load_image(img_path: str) -> np.ndarray:
    """The course's load_image for this network: Image.LANCZOS (ANTIALIAS is gone from Pillow 10),
    light digit on dark as in MNIST, normalized like the training data."""
    im = Image.open(img_path).convert("L")
    im = im.resize((28, 28), Image.LANCZOS)
    im = 255 - np.array(im).reshape(1, 1, 28, 28).astype(np.float32)
    return (im - 127.5) / 127.5


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="600 training and 300 validation images")
    parser.add_argument("--out", default=None, help="run directory (default: runs/tutorials/003[-quick])")
    args = parser.parse_args(argv)
    out = Path(args.out or ("runs/tutorials/003-quick" if args.quick else "runs/tutorials/003"))
    start = time.perf_counter()
    limit_train, limit_val = (600, 300) if args.quick else (None, None)
    epochs, batch = (2, 32) if args.quick else (3, 32)
    compare_epochs = 1  # the loss and optimizer comparisons: one epoch each is enough to rank them
    train = MNIST("train", split="course", limit=limit_train)
    val = MNIST("val", split="course", limit=limit_val)
    summary: dict = {"tutorial": "003", "train_images": len(train), "val_images": len(val)}

    tick = time.perf_counter()
    # 3. 网络结构: MLP vs CNN, same data, same optimizer
    paddle.seed(0)
    for name in ("mlp", "mnist_cnn"):
        model = course_model(name, "adam", 0.001)
        model.fit(train, epochs=epochs, batch_size=batch, verbose=0, callbacks=[callbacks.NaNGuard()])
        summary.setdefault("network_val_acc", {})[name] = accuracy(model, val)

    summary.setdefault("section_seconds", {})["network"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    # 4. 损失函数: square_error_cost (regress the digit's value) vs cross entropy (10 classes)
    paddle.seed(0)
    regression = course_model("mnist_cnn", "sgd", 0.001, loss="square_error_cost")
    regression.fit(FloatLabels(train), epochs=compare_epochs, batch_size=batch, verbose=0)
    classifier = course_model("mnist_cnn", "sgd", 0.01)
    classifier.fit(train, epochs=compare_epochs, batch_size=batch, verbose=0)
    summary["loss_val_acc"] = {
        "square_error_cost": accuracy(regression, val),
        "cross_entropy": accuracy(classifier, val),
    }

    summary.setdefault("section_seconds", {})["loss"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    # 5. 优化算法: SGD, Momentum, Adagrad, Adam at the course's learning rate 0.01
    for name in ("sgd", "momentum", "adagrad", "adam"):
        paddle.seed(0)
        model = course_model("mnist_cnn", name, 0.01)
        model.fit(train, epochs=compare_epochs, batch_size=batch, verbose=0)
        summary.setdefault("optimizer_val_acc", {})[name] = accuracy(model, val)

    summary.setdefault("section_seconds", {})["optimizer"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    # 8. 可视化: VisualDL, ours (loss, accuracy, learning rate, samples) on the best setup
    paddle.seed(0)
    model = course_model("mnist_cnn", "adam", 0.001)
    vdl_dir = out / "vdl"
    model.fit(train, val, epochs=epochs, batch_size=batch, verbose=0, callbacks=[callbacks.VisualDL(str(vdl_dir))])
    summary["visualdl_files"] = len([p for p in vdl_dir.rglob("*") if p.is_file()])

    summary.setdefault("section_seconds", {})["visualdl"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    # 9. 恢复训练: PolynomialDecay + Momentum, interrupted after the first epoch, resumed, compared
    straight = resumable_run(out / "straight", train, epochs, batch)
    interrupted = resumable_run(out / "resumed", train, epochs, batch, interrupt_at=1)
    resumed = resumable_run(out / "resumed", train, epochs, batch)
    summary["resume"] = {
        "interrupted": interrupted.get("interrupted"),
        "resumed_start_epoch": resumed["report"].get("start_epoch"),
        "bit_identical": bool(np.array_equal(straight["weights"], resumed["weights"])),
        "last_lr": [straight["last_lr"], resumed["last_lr"]],
    }
    model = resumed["model"]

    summary.setdefault("section_seconds", {})["resume"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    # 10. 动转静部署: export (model.save(training=False), verified), paddle.jit.load, a local image
    report = export_model(model, out / "inference" / "mnist")
    digit = MNIST("test", limit=1)
    img_path = out / "example_0.png"
    Image.fromarray(255 - digit.raw_images[0]).resize((112, 112)).save(img_path)  # dark ink on white paper
    # The course's paddle.jit.load: export_model is hapi's model.save(training=False) (jit.save with the
    # model's InputSpec), verified with paddle.inference; its prefix loads with paddle.jit.load as is.
    loaded_model = paddle.jit.load(report.prefix)
    loaded_model.eval()
    jit_label = int(paddle.argmax(loaded_model(paddle.to_tensor(load_image(str(img_path))))).item())
    prediction = Predictor(report.prefix).predict(str(img_path))
    summary["deploy"] = {
        "export_max_abs_diff": report.max_abs_diff,
        "true_label": int(digit.labels[0, 0]),
        "jit_load_image_label": jit_label,
        "predictor_label": prediction.label,
        "predictor_probability": round(max(prediction.probabilities), 4),
    }
    summary.setdefault("section_seconds", {})["deploy"] = round(time.perf_counter() - tick, 2)
    tick = time.perf_counter()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
