"""Fully connected baselines of the Paddle MNIST course: ``mlp`` and ``linear``.

They declare the flat ``[N, 784]`` input preset and also accept ``[N, 1, 28, 28]``
batches (they flatten whatever they get).

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi.models.mlp import mlp
    >>> list(mlp()(paddle.zeros([2, 784])).shape)
    [2, 10]
"""

from __future__ import annotations

from collections.abc import Sequence

import paddle
from paddle import nn

from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.models.registry import register_model

__all__ = ["MLP", "linear", "mlp"]

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}


class MLP(nn.Layer):
    """784 → hidden sizes (with an activation after each) → classes."""

    def __init__(self, num_classes: int = 10, hidden_sizes: Sequence[int] = (10, 10), activation: str = "sigmoid"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"activation must be one of {sorted(_ACTIVATIONS)}. Received: activation={activation!r}")
        layers: list[nn.Layer] = []
        width = 784
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), _ACTIVATIONS[activation]()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.layers(paddle.reshape(x, [-1, 784]))


@register_model("flat", source="Paddle MNIST course, multilayer perceptron 784-10-10 sigmoid (seeds/003)")
def mlp(num_classes: int = 10, hidden_sizes: Sequence[int] = (10, 10), activation: str = "sigmoid") -> MLP:
    """The course's MLP; ``hidden_sizes`` and ``activation`` widen it.

    Examples:
        >>> len(mlp(hidden_sizes=(256,), activation="relu").layers)
        3
    """
    return MLP(num_classes, hidden_sizes, activation)


@register_model("flat", source="Paddle MNIST course, linear model 784-10 (seeds/003)")
def linear(num_classes: int = 10) -> MLP:
    """Softmax regression, 784 → classes: the baseline.

    Examples:
        >>> sum(p.size for p in linear().parameters())
        7850
    """
    return MLP(num_classes, hidden_sizes=())
