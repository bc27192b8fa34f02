"""Time to 99% of two recipes, back to back in one process: ``python bench/recipe_compare.py``.

Runs ``recipe.train`` with the earlier default recipe (4 epochs, one cosine,
no augmentation, Adam 2e-3) and the current one, each stopped at the first
evaluation with MNIST test top-1 >= 99%, and prints one JSON object: per
recipe the evaluations (seconds since the start of ``train``, accuracy), the
epochs and seconds to 99%, and ``ratio`` (current over earlier seconds). On a
loaded machine the seconds move; run it on a quiet one, or compare
``epochs_to_99`` (the work per epoch before augmentation starts is the same).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import paddle

from paddle_mnist_hapi import recipe

EARLIER = {"epochs": 4, "fast_epochs": 0, "augment": False, "lr": 0.002}


def time_to_99(overrides: dict[str, Any]) -> dict[str, Any]:
    """Train with ``TrainConfig(**overrides)`` until test top-1 >= 99%; when and after how many epochs."""
    started = time.perf_counter()
    evaluations: list[dict[str, float]] = []

    class StopAt99(paddle.callbacks.Callback):
        def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
            acc = float((logs or {}).get("acc", 0.0))
            evaluations.append({"seconds": time.perf_counter() - started, "acc": acc})
            if acc >= 0.99:
                self.model.stop_training = True

    default_callbacks = recipe.default_callbacks
    recipe.default_callbacks = lambda config, output: [*default_callbacks(config, output), StopAt99()]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            recipe.train(recipe.TrainConfig(output=tmp, verbose=0, **overrides))
    finally:
        recipe.default_callbacks = default_callbacks
    reached = next((i for i, e in enumerate(evaluations) if e["acc"] >= 0.99), None)
    return {
        "config": overrides,
        "evaluations": evaluations,
        "epochs_to_99": reached + 1 if reached is not None else None,
        "seconds_to_99": evaluations[reached]["seconds"] if reached is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    paddle.set_device("cpu")
    earlier, current = time_to_99(EARLIER), time_to_99({})
    ratio = None
    if earlier["seconds_to_99"] and current["seconds_to_99"]:
        ratio = current["seconds_to_99"] / earlier["seconds_to_99"]
    print(json.dumps({"earlier": earlier, "current": current, "ratio": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
