"""The PyTorch reference: a plain eager training loop with the same LeNet-5.

Same architecture as ``paddle_mnist_hapi.models.lenet.LeNet5``, Adam, cross
entropy, batch 64, the same real MNIST normalized the same way and held in
memory, a shuffled order per epoch, the loss and accuracy read back to Python
every step (as hapi does), and the same number of threads as Paddle uses.
Prints one JSON object. Needs ``torch`` (``bench/requirements.txt``), which is
not a dependency of the library.

    python bench/torch_loop.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

BATCH = 64
WARMUP = 20


class TorchLoop:
    """PyTorch LeNet-5 training on the in-memory MNIST; ``run(steps)`` trains that many batches."""

    def __init__(self, threads: int = 1, batch_size: int = BATCH) -> None:
        import torch
        from torch import nn

        from paddle_mnist_hapi.data import load_arrays, normalize

        self.torch = torch
        self.batch_size = batch_size
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        arrays = load_arrays()
        self.images = torch.from_numpy(normalize(arrays.train_images))
        self.labels = torch.from_numpy(arrays.train_labels.astype(np.int64))
        self.network = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
        )  # fmt: skip
        self.network.train()
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=2e-3)
        self.loss_fn = nn.CrossEntropyLoss()
        self.order = torch.randperm(len(self.labels))
        self.position = 0

    def run(self, steps: int) -> float:
        """Train ``steps`` batches; return the last loss."""
        loss_value, correct, seen = 0.0, 0, 0
        for _ in range(steps):
            if self.position + self.batch_size > len(self.order):
                self.order, self.position = self.torch.randperm(len(self.labels)), 0
            index = self.order[self.position : self.position + self.batch_size]
            self.position += self.batch_size
            x, y = self.images[index], self.labels[index]
            logits = self.network(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            correct += int((logits.argmax(1) == y).sum())  # read back every step, as hapi does
            seen += len(y)
            loss_value = loss.item()
        return loss_value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(
            json.dumps({"available": False, "reason": "torch is not installed (pip install -r bench/requirements.txt)"})
        )
        return 0
    loop = TorchLoop(args.threads)
    loop.run(WARMUP)
    started = time.perf_counter()
    loop.run(args.steps)
    seconds = time.perf_counter() - started
    result = {
        "available": True,
        "steps": args.steps,
        "seconds": seconds,
        "img_per_s": args.steps * BATCH / seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
