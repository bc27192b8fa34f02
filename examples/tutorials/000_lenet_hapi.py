"""Tutorial 000, "MNIST数据集使用LeNet进行图像分类", with this library.

The tutorial (Paddle 2.0, /work/shared/seeds/000) loads Paddle's MNIST, builds
LeNet, and trains it with ``paddle.Model`` prepare / fit / evaluate. Kept:
Paddle's own ``paddle.vision.datasets.MNIST`` class with a transform, the
network, Adam(0.001), ``Accuracy(topk=(1, 2))``, ``fit(epochs=2,
batch_size=64, log_freq=200)``, ``evaluate(batch_size=64)``. Changed:

* ``paddle.vision.datasets.MNIST(mode='train')`` downloads (it fails offline)
  and, in Paddle 3, yields PIL images, on which fit hangs:
  ``data.paddle_mnist('train', transform=...)`` is the same class, built from
  the library's verified copy, with the tutorial's normalization as transform;
* the tutorial's ``InputSpec([None, 784])`` does not fit LeNet (export fails
  after training): ``specs_for('lenet5')`` gives ``[None, 1, 28, 28]``;
* the tutorial's LeNet ends in ``F.softmax`` before ``CrossEntropyLoss``
  (which applies softmax again, hence its loss floor of 1.46): ``lenet.lenet5()``
  is the same network returning logits;
* ``callbacks.ResumeCkpt``: run it again after an interruption and it continues.

    python examples/tutorials/000_lenet_hapi.py            # 60,000 images, 2 epochs
    python examples/tutorials/000_lenet_hapi.py --quick    # 1,000 images, seconds

The last line printed is one JSON object (test accuracy, top-2, seconds).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import paddle
from paddle.metric import Accuracy

from paddle_mnist_hapi import callbacks, lenet, specs_for
from paddle_mnist_hapi.data import paddle_mnist


def normalize(image) -> np.ndarray:
    """The tutorial's normalization, (x - 127.5) / 127.5, as a numpy [1, 28, 28] float32 sample.

    Paddle's ``Normalize(mean=[127.5], std=[127.5], data_format='CHW')`` would do the same on a
    tensor; numpy keeps DataLoader workers safe (see docs/migrating.md, "DataLoader workers").
    """
    return ((np.asarray(image, dtype=np.float32) - 127.5) / 127.5).reshape(1, 28, 28)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 training and 500 test images")
    parser.add_argument("--out", default=None, help="run directory (default: runs/tutorials/000[-quick])")
    args = parser.parse_args(argv)
    out = args.out or ("runs/tutorials/000-quick" if args.quick else "runs/tutorials/000")
    limit_train, limit_test = (1000, 500) if args.quick else (None, None)
    start = time.perf_counter()
    paddle.seed(2020)

    print("download training data and load training data")
    train_dataset = paddle_mnist(mode="train", transform=normalize, limit=limit_train)
    test_dataset = paddle_mnist(mode="test", transform=normalize, limit=limit_test)
    print("load finished")
    train_data0, train_label_0 = train_dataset[0][0], train_dataset[0][1]
    print("train_data0 shape is: " + str(train_data0.shape) + ", label is: " + str(train_label_0))

    model = paddle.Model(lenet.lenet5(), *specs_for("lenet5"))
    optim = paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters())
    model.prepare(optim, paddle.nn.CrossEntropyLoss(), Accuracy(topk=(1, 2)))
    model.fit(
        train_dataset,
        epochs=2,
        batch_size=32 if args.quick else 64,
        log_freq=200,
        verbose=1 if args.quick else 2,
        callbacks=[callbacks.ResumeCkpt(save_dir=f"{out}/checkpoints")],
    )
    result = model.evaluate(test_dataset, log_freq=20, batch_size=64, verbose=0)
    print(result)
    summary = {
        "tutorial": "000",
        "train_images": len(train_dataset),
        "test_images": len(test_dataset),
        "test_acc": float(result["acc_top1"]),
        "test_acc_top2": float(result["acc_top2"]),
        "test_loss": float(result["loss"][0]),
        "first_label": int(train_label_0[0]),
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
