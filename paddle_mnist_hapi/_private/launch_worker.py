"""One rank of a multi-process recipe run, started by ``paddle.distributed.launch``
(see :func:`paddle_mnist_hapi.parallel.launch_train`): ``python launch_worker.py CONFIG_JSON``."""

from __future__ import annotations

import sys

sys.path.pop(0)  # this file's directory is not an import root

import json
import logging


def main(argv: list[str]) -> int:
    from paddle_mnist_hapi.recipe import TrainConfig, train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    train(TrainConfig(**json.loads(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
