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


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running the project's scripts in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONWARNINGS"] = "ignore:No ccache found:UserWarning"
    return env


PYTHON = sys.executable
