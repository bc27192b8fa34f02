"""Small building blocks for the callback tests' real ``fit`` runs on real MNIST."""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi._private import static_graph


class ArrayDataset(paddle.io.Dataset):
    """Images and labels from numpy arrays (lets a test plant a NaN in one sample)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        super().__init__()
        self.images, self.labels = images, labels

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.images)


def first(dataset: Any, n: int) -> ArrayDataset:
    """The first ``n`` samples of an ``MNIST`` split."""
    return ArrayDataset(dataset.images[:n], dataset.labels[:n])


def lenet(learning_rate: Any = 0.002, seed: int = 0, name: str = "lenet5") -> paddle.Model:
    """A prepared ``paddle.Model`` (LeNet-5 by default) with Adam, cross-entropy and accuracy."""
    paddle.seed(seed)
    net = create_model(name)
    model = paddle.Model(net, *specs_for(name))
    optimizer = paddle.optimizer.Adam(learning_rate=learning_rate, parameters=net.parameters())
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


class Recorder(paddle.callbacks.Callback):
    """Counts what really ran: training batches per epoch, evaluations, learning rates used."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: dict[int, int] = {}
        self.evals = 0
        self.lrs: list[float] = []
        self.weights_after_eval: list[dict[str, np.ndarray]] = []

    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.lrs.append(float(self.model._optimizer.get_lr()))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch
        self.batches.setdefault(epoch, 0)

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.batches[self.epoch] += 1

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        self.evals += 1
        self.weights_after_eval.append(static_graph.network_arrays(self.model.network))  # in either graph mode
