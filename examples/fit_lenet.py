"""Train LeNet-5 on the real MNIST with paddle.Model, evaluate, export, verify.

    python examples/fit_lenet.py                 # the default recipe (>= 99% test top-1)
    python examples/fit_lenet.py --limit 2000 --epochs 1   # a quick run

The last line printed is one JSON object with ``test_acc``, ``seconds`` and
``export`` (the path prefix of the exported model).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from paddle_mnist_hapi import list_models
from paddle_mnist_hapi.errors import PaddleMnistError
from paddle_mnist_hapi.recipe import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=defaults.model, help=f"one of {', '.join(list_models())}")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (cosine decay)")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu or gpu")
    parser.add_argument("--output", default=defaults.output, help="run directory")
    parser.add_argument("--limit", type=int, default=None, help="train on the first N training images")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files")
    args = parser.parse_args(argv)
    return TrainConfig(**{k: v for k, v in vars(args).items()})


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = train(parse_args(argv))
    except PaddleMnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"test accuracy {summary['test_acc']:.2%} in {summary['seconds']:.0f} s; exported to {summary['export']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
