"""Tutorial 004, the MNIST data pipeline (read, split 50k/10k, shuffle, batch, check, load asynchronously).

The tutorial (/work/shared/seeds/004) reads ``mnist.json.gz`` (train 50,000 /
valid 10,000 / eval 10,000), shuffles an index list with ``random.shuffle``,
yields batches of 100 from a generator, checks the data
(``assert len(imgs) == len(labels)``, the shape and dtype of every batch), and
loads asynchronously with ``fluid.io.DataLoader.from_generator``. Kept: the
three splits and their sizes, a ``load_data``-style ``MnistDataset`` with the
validity checks, batches of 100, the per-batch checks. Changed:

* the json.gz file (not available offline) and the 60k→50k/10k split:
  ``data.load_arrays()`` gives the verified MNIST; the course's split is the
  first 50,000 / last 10,000 training images (``MNIST('train'|'val', split='course')``);
* labels as ``int64`` (the tutorial's ``float32`` suits ``square_error_cost``;
  with ``CrossEntropyLoss`` the library refuses them when training starts);
* ``fluid`` is gone from Paddle 3: ``random.shuffle`` + generator +
  ``from_generator`` become ``paddle.io.DataLoader(dataset, batch_size=100,
  shuffle=True, num_workers=2)``; the library's ``InMemoryLoader`` does without
  workers and is faster (measured below, same process).

    python examples/tutorials/004_data_pipeline.py            # 50,000 / 10,000 / 10,000, 2 epochs
    python examples/tutorials/004_data_pipeline.py --quick    # 1,000 / 500 / 500, 3 epochs

The last line printed is one JSON object (split sizes, batches checked, loader
throughput in images/s, validation and test accuracy).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import paddle

from paddle_mnist_hapi import callbacks, create_model, specs_for
from paddle_mnist_hapi.data import MNIST, InMemoryLoader, load_arrays
from paddle_mnist_hapi.errors import ConfigError

IMG_ROWS, IMG_COLS = 28, 28
BATCHSIZE = 100
COURSE_TRAIN = 50000


class MnistDataset(paddle.io.Dataset):
    """The tutorial's ``load_data(mode)`` as a Dataset, over the library's verified arrays."""

    def __init__(self, mode: str = "train", limit: int | None = None) -> None:
        super().__init__()
        arrays = load_arrays()
        if mode == "train":
            imgs, labels = arrays.train_images[:COURSE_TRAIN], arrays.train_labels[:COURSE_TRAIN]
        elif mode == "valid":
            imgs, labels = arrays.train_images[COURSE_TRAIN:], arrays.train_labels[COURSE_TRAIN:]
        elif mode == "eval":
            imgs, labels = arrays.test_images, arrays.test_labels
        else:
            raise ConfigError(f"mode can only be one of ['train', 'valid', 'eval']. Received: mode={mode!r}")
        if limit is not None:
            imgs, labels = imgs[:limit], labels[:limit]
        # 校验数据: the tutorial's assert, as an error that survives `python -O`
        if len(imgs) != len(labels):
            raise ConfigError(f"length of imgs({len(imgs)}) should be the same as labels({len(labels)})")
        self.mode, self.imgs, self.labels = mode, imgs, labels

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        img = np.reshape(self.imgs[idx], [1, IMG_ROWS, IMG_COLS]).astype("float32") / 127.5 - 1.0
        label = np.reshape(self.labels[idx], [1]).astype("int64")
        return img, label

    def __len__(self) -> int:
        return len(self.imgs)


def check_batches(loader) -> int:
    """机器校验: every batch has the shape and dtype the model expects; returns the number of batches."""
    batches = 0
    for image_data, label_data in loader:
        image_data, label_data = np.asarray(image_data), np.asarray(label_data)
        if image_data.shape[1:] != (1, IMG_ROWS, IMG_COLS) or image_data.dtype != np.float32:
            raise ConfigError(f"bad image batch: {image_data.shape} {image_data.dtype}")
        if label_data.shape != (len(image_data), 1) or label_data.dtype != np.int64:
            raise ConfigError(f"bad label batch: {label_data.shape} {label_data.dtype}")
        if label_data.min() < 0 or label_data.max() > 9:
            raise ConfigError(f"labels out of 0..9: {label_data.min()}..{label_data.max()}")
        batches += 1
    return batches


def images_per_second(loader, images: int) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return round(images / (time.perf_counter() - start))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 / 500 / 500 images")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    paddle.seed(0)
    np.random.seed(0)  # DataLoader(shuffle=True) draws its order from numpy's global RNG
    limits = (1000, 500, 500) if args.quick else (None, None, None)
    train_set, val_set, eval_set = (MnistDataset(m, n) for m, n in zip(("train", "valid", "eval"), limits, strict=True))
    print("训练数据集数量: ", len(train_set))
    print("验证数据集数量: ", len(val_set))
    print("测试数据集数量: ", len(eval_set))

    # The asynchronous loader: worker processes read and batch while the model trains.
    train_loader = paddle.io.DataLoader(train_set, batch_size=BATCHSIZE, shuffle=True, num_workers=2, drop_last=False)
    valid_loader = paddle.io.DataLoader(val_set, batch_size=BATCHSIZE, num_workers=0)
    image_data, label_data = next(iter(train_loader))
    print("打印第一个batch数据的维度:")
    print(f"图像维度: {list(image_data.shape)}, 标签维度: {list(label_data.shape)}")
    batches_checked = check_batches(train_loader) + check_batches(valid_loader)

    # The library's way: the same split, normalized once, no worker processes.
    course_train = MNIST("train", split="course", limit=limits[0])
    in_memory = InMemoryLoader(course_train, batch_size=BATCHSIZE)
    same_data = bool(np.allclose(course_train.images[:8], np.stack([train_set[i][0] for i in range(8)]), atol=1e-6))
    speed = {
        "DataLoader(num_workers=2)": images_per_second(train_loader, len(train_set)),
        "DataLoader(num_workers=0)": images_per_second(
            paddle.io.DataLoader(train_set, batch_size=BATCHSIZE, shuffle=True), len(train_set)
        ),
        "InMemoryLoader": images_per_second(in_memory, len(train_set)),
    }
    print("loader images/s:", speed)

    model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    model.prepare(
        paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    epochs = 3 if args.quick else 2
    model.fit(train_loader, valid_loader, epochs=epochs, log_freq=200, verbose=2, callbacks=[callbacks.NaNGuard()])
    val_acc = float(model.evaluate(valid_loader, verbose=0)["acc"])
    test_acc = float(model.evaluate(InMemoryLoader(MNIST("test", limit=limits[2]), shuffle=False), verbose=0)["acc"])
    summary = {
        "tutorial": "004",
        "sizes": {"train": len(train_set), "valid": len(val_set), "eval": len(eval_set)},
        "first_labels": {"train": int(train_set[0][1][0]), "valid": int(val_set[0][1][0])},
        "batches_checked": batches_checked,
        "same_as_library_split": same_data,
        "images_per_s": speed,
        "val_acc": val_acc,
        "test_acc": test_acc,
        "seconds": round(time.perf_counter() - start, 2),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
