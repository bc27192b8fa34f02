"""The convolutional network of the Paddle MNIST course (``mnist_cnn``).

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi.models.cnn import mnist_cnn
    >>> list(mnist_cnn()(paddle.zeros([2, 1, 28, 28])).shape)
    [2, 10]
"""

from __future__ import annotations

import paddle
from paddle import nn

from paddle_mnist_hapi.models.layers import Conv2D, conv_relu_pool
from paddle_mnist_hapi.models.registry import register_model

__all__ = ["MnistCNN", "mnist_cnn"]


class MnistCNN(nn.Layer):
    """conv 1→20 k5 pad2, ReLU, pool; conv 20→20 k5 pad2, ReLU, pool; fc 980→classes."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = Conv2D(1, 20, 5, stride=1, padding=2)
        self.max_pool1 = nn.MaxPool2D(2, 2)
        self.conv2 = Conv2D(20, 20, 5, stride=1, padding=2)
        self.max_pool2 = nn.MaxPool2D(2, 2)
        self.fc = nn.Linear(980, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = conv_relu_pool(self.conv1, self.max_pool1, x)  # pool(relu(conv(x))), fused in dygraph
        x = conv_relu_pool(self.conv2, self.max_pool2, x)
        return self.fc(paddle.flatten(x, 1))


@register_model("image", source="Paddle MNIST course, convolutional network (seeds/003)")
def mnist_cnn(num_classes: int = 10) -> MnistCNN:
    """The course's two-conv network with one fully connected layer.

    Examples:
        >>> isinstance(mnist_cnn(), MnistCNN)
        True
    """
    return MnistCNN(num_classes)
