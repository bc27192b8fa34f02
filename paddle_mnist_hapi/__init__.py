"""paddle-mnist-hapi: production-grade callbacks, data and deployment for ``paddle.Model``.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import create_model, specs_for
    >>> model = paddle.Model(create_model("lenet5"), *specs_for("lenet5"))
    >>> isinstance(model, paddle.Model)
    True
"""

from paddle_mnist_hapi import callbacks, data, specs
from paddle_mnist_hapi.data import MNIST
from paddle_mnist_hapi.device import resolve_device, set_device
from paddle_mnist_hapi.models import cnn, create_model, lenet, list_models, mlp, register_model
from paddle_mnist_hapi.specs import MNIST_FLAT_SPEC, MNIST_IMAGE_SPEC, MNIST_LABEL_SPEC, specs_for

__version__ = "0.1.0"

__all__ = [
    "MNIST",
    "MNIST_FLAT_SPEC",
    "MNIST_IMAGE_SPEC",
    "MNIST_LABEL_SPEC",
    "__version__",
    "callbacks",
    "cnn",
    "create_model",
    "data",
    "lenet",
    "list_models",
    "mlp",
    "register_model",
    "resolve_device",
    "set_device",
    "specs",
    "specs_for",
]
