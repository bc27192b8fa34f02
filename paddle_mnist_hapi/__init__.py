"""paddle-mnist-hapi: production-grade callbacks, data and deployment for ``paddle.Model``.

Names are imported on first use (PEP 562), so ``import paddle_mnist_hapi`` and
the ``paddle-mnist`` command start without importing Paddle.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import callbacks, create_model, lenet, specs_for
    >>> model = paddle.Model(lenet.lenet5(), *specs_for("lenet5"))
    >>> isinstance(model, paddle.Model), callbacks.ResumeCkpt.__name__
    (True, 'ResumeCkpt')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from paddle_mnist_hapi import errors as _errors
from paddle_mnist_hapi._private import paddle_version as _paddle_version
from paddle_mnist_hapi.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    DataCorruptError,
    DataNotFoundError,
    DeviceError,
    ExportError,
    FitInputError,
    ImageError,
    PaddleMnistError,
    PaddleVersionError,
    UnknownModelError,
)

__version__ = "0.1.0"

_paddle_version.check(_paddle_version.installed_version())  # one clear error for an unsupported Paddle

# public name -> module that defines it
_ATTRIBUTES = {
    "MNIST": "paddle_mnist_hapi.data",
    "InMemoryLoader": "paddle_mnist_hapi.data",
    "MNIST_FLAT_SPEC": "paddle_mnist_hapi.specs",
    "MNIST_IMAGE_SPEC": "paddle_mnist_hapi.specs",
    "MNIST_LABEL_SPEC": "paddle_mnist_hapi.specs",
    "specs_for": "paddle_mnist_hapi.specs",
    "create_model": "paddle_mnist_hapi.models",
    "list_models": "paddle_mnist_hapi.models",
    "register_model": "paddle_mnist_hapi.models",
    "resolve_device": "paddle_mnist_hapi.device",
    "set_device": "paddle_mnist_hapi.device",
    "export_model": "paddle_mnist_hapi.deploy.export",
    "Predictor": "paddle_mnist_hapi.deploy.predict",
    "ImageInput": "paddle_mnist_hapi.deploy.image_input",
    "load_weights": "paddle_mnist_hapi.callbacks.resume",
}
# public submodule -> its full name (the model families live in models/)
_SUBMODULES = {
    "callbacks": "paddle_mnist_hapi.callbacks",
    "data": "paddle_mnist_hapi.data",
    "schedules": "paddle_mnist_hapi.schedules",
    "specs": "paddle_mnist_hapi.specs",
    "lenet": "paddle_mnist_hapi.models.lenet",
    "cnn": "paddle_mnist_hapi.models.cnn",
    "mlp": "paddle_mnist_hapi.models.mlp",
}

__all__ = [
    "MNIST",
    "MNIST_FLAT_SPEC",
    "MNIST_IMAGE_SPEC",
    "MNIST_LABEL_SPEC",
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DataCorruptError",
    "DataNotFoundError",
    "DeviceError",
    "ExportError",
    "FitInputError",
    "ImageError",
    "ImageInput",
    "InMemoryLoader",
    "PaddleMnistError",
    "PaddleVersionError",
    "Predictor",
    "UnknownModelError",
    "__version__",
    "callbacks",
    "cnn",
    "create_model",
    "data",
    "export_model",
    "lenet",
    "list_models",
    "load_weights",
    "mlp",
    "register_model",
    "resolve_device",
    "schedules",
    "set_device",
    "specs",
    "specs_for",
]


assert set(__all__) == {*_ATTRIBUTES, *_SUBMODULES, *_errors.__all__, "__version__"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        importlib.import_module("paddle_mnist_hapi.models")  # registers every model
        value = importlib.import_module(_SUBMODULES[name])
    elif name in _ATTRIBUTES:
        value = getattr(importlib.import_module(_ATTRIBUTES[name]), name)
    else:
        raise AttributeError(f"module 'paddle_mnist_hapi' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs
    from paddle_mnist_hapi import callbacks, data, schedules, specs
    from paddle_mnist_hapi.callbacks.resume import load_weights
    from paddle_mnist_hapi.data import MNIST, InMemoryLoader
    from paddle_mnist_hapi.deploy.export import export_model
    from paddle_mnist_hapi.deploy.image_input import ImageInput
    from paddle_mnist_hapi.deploy.predict import Predictor
    from paddle_mnist_hapi.device import resolve_device, set_device
    from paddle_mnist_hapi.models import cnn, create_model, lenet, list_models, mlp, register_model
    from paddle_mnist_hapi.specs import MNIST_FLAT_SPEC, MNIST_IMAGE_SPEC, MNIST_LABEL_SPEC, specs_for
