"""Run by tests/test_distributed.py on every rank of
``python -m paddle.distributed.launch --nproc_per_node 2``: trains LeNet-5 with
``paddle.Model`` on an ``InMemoryLoader``, records which samples this rank saw,
a hash of the final parameters and a distributed evaluation, as JSON in OUT.rankN.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.data import MNIST, InMemoryLoader
from paddle_mnist_hapi.recipe import seed_everything


class Recording:
    """Yields the inner sampler's batches and remembers them, one list per epoch."""

    def __init__(self, inner: paddle.io.DistributedBatchSampler) -> None:
        self.inner, self.epochs = inner, []

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        self.epochs.append([])
        for batch in self.inner:
            self.epochs[-1].extend(int(i) for i in batch)
            yield batch


def params_hash(network: paddle.nn.Layer) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(network.state_dict().items()):
        digest.update(name.encode() + value.numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1001)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    env = paddle.distributed.ParallelEnv()
    paddle.set_device("cpu")
    seed_everything(0)
    model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    model.prepare(
        paddle.optimizer.Adam(learning_rate=2e-3, parameters=model.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    initial = params_hash(model.network)
    train = InMemoryLoader(MNIST("train", limit=args.train), batch_size=32)
    train.batch_sampler = Recording(train.batch_sampler)
    model.fit(train, epochs=args.epochs, verbose=0)
    test = MNIST("test", limit=args.test)
    evaluated = model.evaluate(InMemoryLoader(test, batch_size=100, shuffle=False), verbose=0)
    model.network.eval()
    with paddle.no_grad():  # the same parameters, all test samples, no collective
        logits = model.network(paddle.to_tensor(test.images)).numpy()
    local_acc = float((logits.argmax(axis=1) == test.labels.ravel()).mean())
    result = {
        "rank": env.local_rank,
        "nranks": env.nranks,
        "seen": train.batch_sampler.epochs,
        "steps_per_epoch": len(train),
        "initial_hash": initial,
        "final_hash": params_hash(model.network),
        "evaluate_acc": float(evaluated["acc"]),
        "local_acc": local_acc,
    }
    Path(f"{args.out}.rank{env.local_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
