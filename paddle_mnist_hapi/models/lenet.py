"""The LeNet family of the classic Paddle MNIST tutorials.

Convolutions use :class:`~paddle_mnist_hapi.models.layers.Conv2D` (Paddle's, with a
faster bias add on CPU) and conv → ReLU → pool runs :class:`~paddle_mnist_hapi.models.layers.FusedSequential`
(the same values, a quarter of the element-wise work); same parameters and exported graph.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import lenet
    >>> list(lenet.lenet5()(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
"""

from __future__ import annotations

import paddle
from paddle import nn

from paddle_mnist_hapi.models.layers import Conv2D, FusedSequential
from paddle_mnist_hapi.models.registry import register_model

__all__ = ["LeNet5", "LeNetSigmoid", "LeNetWide", "lenet5", "lenet_sigmoid", "lenet_wide"]


class LeNet5(nn.Layer):
    """LeNet-5 of Paddle's hapi tutorial: conv 1→6 k5 pad2, ReLU, pool;
    conv 6→16 k5, ReLU, pool; fc 400→120→84→classes with ReLU. Returns logits.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = FusedSequential(
            Conv2D(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2D(2, 2),
            Conv2D(6, 16, 5), nn.ReLU(), nn.MaxPool2D(2, 2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(paddle.flatten(self.features(x), 1))


class LeNetSigmoid(nn.Layer):
    """The course project's sigmoid LeNet: conv 1→6 k5, sigmoid, pool, sigmoid;
    conv 6→16 k5, pool; conv 16→120 k4; fc 120→64, sigmoid, fc 64→classes.
    Input 28×28 without padding.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = Conv2D(1, 6, 5)
        self.max_pool1 = nn.MaxPool2D(2, 2)
        self.conv2 = Conv2D(6, 16, 5)
        self.max_pool2 = nn.MaxPool2D(2, 2)
        self.conv3 = Conv2D(16, 120, 4)
        self.fc1 = nn.Linear(120, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = nn.functional.sigmoid(self.max_pool1(nn.functional.sigmoid(self.conv1(x))))
        x = self.conv3(self.max_pool2(self.conv2(x)))
        return self.fc2(nn.functional.sigmoid(self.fc1(paddle.flatten(x, 1))))


class LeNetWide(nn.Layer):
    """The wider LeNet of the PyTorch/TensorFlow port (LeNet3): conv 1→32 k3
    same, pool; conv 32→64 k3, pool; conv 64→64 k3; fc 1024→64→classes, ReLU.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = FusedSequential(
            Conv2D(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2D(2, 2),
            Conv2D(32, 64, 3), nn.ReLU(), nn.MaxPool2D(2, 2),
            Conv2D(64, 64, 3), nn.ReLU(),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.classifier(paddle.flatten(self.features(x), 1))


@register_model("image", source="Paddle 2.0 hapi tutorial, LeNet (seeds/000)")
def lenet5(num_classes: int = 10) -> LeNet5:
    """LeNet-5 with ReLU, 61,706 parameters.

    Examples:
        >>> sum(p.size for p in lenet5().parameters())
        61706
    """
    return LeNet5(num_classes)


@register_model("image", source="LeNet course project, sigmoid LeNet (seeds/001)")
def lenet_sigmoid(num_classes: int = 10) -> LeNetSigmoid:
    """Sigmoid LeNet with a third conv layer.

    Examples:
        >>> list(lenet_sigmoid()(paddle.zeros([1, 1, 28, 28])).shape)
        [1, 10]
    """
    return LeNetSigmoid(num_classes)


@register_model("image", source="PyTorch/TensorFlow port, LeNet3 (seeds/002)")
def lenet_wide(num_classes: int = 10) -> LeNetWide:
    """Wide LeNet, conv 32-64-64 k3 and fc 64.

    Examples:
        >>> list(lenet_wide()(paddle.zeros([1, 1, 28, 28])).shape)
        [1, 10]
    """
    return LeNetWide(num_classes)
