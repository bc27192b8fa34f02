"""Train LeNet-5 on the real MNIST with paddle.Model, evaluate, export, verify.

    python examples/fit_lenet.py                 # the default recipe (99.4% test top-1, 10 epochs)
    python examples/fit_lenet.py --limit 2000 --epochs 1   # a quick run
    python -m paddle.distributed.launch --nproc_per_node 2 examples/fit_lenet.py   # data-parallel

The options are the same as ``paddle-mnist train`` (both come from
``paddle_mnist_hapi.cli.add_train_arguments``). The last line printed is one
JSON object with ``test_acc``, ``seconds`` and ``export`` (the path prefix of
the exported model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from paddle_mnist_hapi.cli import add_train_arguments, train_config_from_args
from paddle_mnist_hapi.errors import PaddleMnistError
from paddle_mnist_hapi.models.registry import model_entry
from paddle_mnist_hapi.recipe import TrainConfig, train


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(parser)
    return train_config_from_args(parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = parse_args(argv)
    try:
        model_entry(config.model)
        summary = train(config)
    except PaddleMnistError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if summary.get("ranks", 1) > 1 and os.environ.get("PADDLE_TRAINER_ID", "0") != "0":
        return 0  # data-parallel: every rank has the same model; rank 0 reports
    print(f"test accuracy {summary['test_acc']:.2%} in {summary['seconds']:.0f} s; exported to {summary['export']}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
