"""Data: the real MNIST, offline, verified, in memory.

Examples:
    >>> from paddle_mnist_hapi.data import MNIST
    >>> MNIST("test", limit=5).labels.ravel().tolist()
    [7, 2, 1, 0, 4]
"""

from paddle_mnist_hapi.data.augment import Augment
from paddle_mnist_hapi.data.dataset import MEAN, MNIST, STD, as_mnist, normalize
from paddle_mnist_hapi.data.loader import InMemoryLoader
from paddle_mnist_hapi.data.paddle_vision import paddle_mnist
from paddle_mnist_hapi.data.sources import MnistArrays, load_arrays

__all__ = [
    "MEAN",
    "MNIST",
    "STD",
    "Augment",
    "InMemoryLoader",
    "MnistArrays",
    "as_mnist",
    "load_arrays",
    "normalize",
    "paddle_mnist",
]
