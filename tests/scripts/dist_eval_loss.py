"""Run by tests/test_eval_loss_distributed.py, in one process and on every rank of
``python -m paddle.distributed.launch --nproc_per_node 2``: the mean evaluation loss of the same
LeNet-5 on evaluation sets that do not split evenly across 2 ranks (so ``DistributedBatchSampler``
pads them), from ``model.evaluate`` and from ``fit``'s evaluation (learning rate 0: the weights stay
the same), next to the mean computed by hand over every sample once. Writes OUT.json (one process)
or OUT.rankN.json.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.callbacks import mean_eval_loss
from paddle_mnist_hapi.data import MNIST, InMemoryLoader


class EvalLoss(paddle.callbacks.Callback):
    def on_eval_end(self, logs=None):
        self.loss = float(logs["loss"][0])


def by_hand(net: paddle.nn.Layer, data: MNIST) -> float:
    """Cross-entropy of every sample once, summed in float64."""
    net.eval()
    with paddle.no_grad():
        logits = net(paddle.to_tensor(data.images)).numpy().astype(np.float64)
    logits -= logits.max(1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-log_softmax[np.arange(len(data)), data.labels.reshape(-1)].mean())


def cases(size: int) -> dict:
    data = MNIST("test", limit=size)
    shuffled = paddle.io.DistributedBatchSampler(data, batch_size=64, shuffle=True)
    return {
        "dataset": (data, data),
        "in_memory_loader": (data, InMemoryLoader(data, batch_size=64, shuffle=False)),
        "shuffled_sampler": (data, paddle.io.DataLoader(data, batch_sampler=shuffled)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    paddle.seed(0)
    net = create_model("lenet5")
    model = mean_eval_loss(paddle.Model(net, *specs_for("lenet5")))
    model.prepare(paddle.optimizer.SGD(0.0, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                  paddle.metric.Accuracy())  # fmt: skip
    train = MNIST("train", limit=128)
    results = {}
    # 129: rank 1's last batch is padding only; 1001: one padded sample among rank 1's last 53
    for size in (129, 1001):
        for name, (data, loader) in cases(size).items():
            probe = EvalLoss()
            model.fit(train, loader, batch_size=64, epochs=1, verbose=0, callbacks=[probe])
            evaluated = model.evaluate(loader, batch_size=64, verbose=0)
            results[f"{name}/{size}"] = {
                "fit": probe.loss, "evaluate": float(evaluated["loss"][0]), "acc": float(evaluated["acc"]),
                "by_hand": by_hand(net, data),
            }  # fmt: skip
    rank, nranks = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    with open(args.out + (f".rank{rank}" if nranks > 1 else "") + ".json", "w") as fh:
        json.dump({"nranks": nranks, "results": results}, fh)


if __name__ == "__main__":
    main()
