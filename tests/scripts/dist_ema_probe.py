"""Run by tests/test_ema_health_distributed.py on every rank of
``python -m paddle.distributed.launch --nproc_per_node 2``: trains LeNet-5 with
``EMA``, ``TrainingHealth`` and an evaluation set, and writes what each rank
ended with (hashes of the weights and of the average, the last gradient norm,
the evaluation loss and the mean loss over the whole evaluation set computed
by hand) to OUT.rankN.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import paddle

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.callbacks import EMA, TrainingHealth
from paddle_mnist_hapi.data import MNIST, InMemoryLoader
from paddle_mnist_hapi.recipe import seed_everything


def digest(arrays: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for name, value in sorted(arrays.items()):
        sha.update(name.encode() + np.ascontiguousarray(value).tobytes())
    return sha.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    seed_everything(0)
    net = create_model("lenet5")
    model = paddle.Model(net, *specs_for("lenet5"))
    model.prepare(paddle.optimizer.Adam(0.002, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(),
                  paddle.metric.Accuracy())  # fmt: skip
    train = InMemoryLoader(MNIST("train", limit=1024), batch_size=32)  # 16 batches per rank
    test = MNIST("test", limit=400)
    ema, health = EMA(decay=0.9, keep="trained"), TrainingHealth(log_freq=4)
    model.fit(train, InMemoryLoader(test, batch_size=50, shuffle=False), epochs=1, verbose=0,
              accumulate_grad_batches=2, callbacks=[health, ema])  # fmt: skip
    result = model.evaluate(InMemoryLoader(test, batch_size=50, shuffle=False), verbose=0)
    net.eval()
    with paddle.no_grad():
        logits = net(paddle.to_tensor(test.images))
        by_hand = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(test.labels)).item()
    rank = paddle.distributed.get_rank()
    with open(f"{args.out}.rank{rank}.json", "w") as fh:
        json.dump({
            "rank": rank,
            "updates": ema.updates,
            "weights": digest({k: v.numpy() for k, v in net.state_dict().items()}),
            "average": digest(ema.averaged_weights()),
            "grad_norm": health.last.get("grad_norm"),
            "health_updates": health.updates,
            "eval_loss": float(result["loss"][0]),
            "by_hand": by_hand,
        }, fh)  # fmt: skip


if __name__ == "__main__":
    main()
