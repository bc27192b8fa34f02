"""Shared fixtures: real MNIST subsets, a fresh Paddle name scope per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    paddle.set_device("cpu")
    paddle.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def mnist_train_small():
    """The first 2,000 real MNIST training images."""
    from paddle_mnist_hapi.data import MNIST

    return MNIST("train", limit=2000)


@pytest.fixture(scope="session")
def mnist_test_small():
    """The first 1,000 real MNIST test images."""
    from paddle_mnist_hapi.data import MNIST

    return MNIST("test", limit=1000)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A real training run, shared by the deployment tests: LeNet-5 through the recipe on the
    first 30,000 MNIST training images, 1 epoch (about 15 s here, > 97% test top-1). Returns the
    recipe's summary; ``summary["export"]`` is the verified export prefix, ``summary["run_dir"]``
    the run directory."""
    from paddle_mnist_hapi.recipe import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("trained_run")
    paddle.set_device("cpu")
    summary = train(TrainConfig(model="lenet5", epochs=1, limit=30000, output=str(run_dir), verbose=0))
    assert summary["test_acc"] > 0.97, summary
    return {**summary, "run_dir": str(run_dir)}


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running the project's scripts in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore:No ccache found:UserWarning"
    return env


PYTHON = sys.executable
