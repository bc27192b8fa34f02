"""The library's exceptions: one small hierarchy, one message style.

Every message says what happened, what was expected and how to fix it, and
ends with ``Received: ...`` where a value was given. The CLI prints
``str(error)`` on one line of stderr and exits non-zero.

Every class here is also importable from the package itself.

Examples:
    >>> from paddle_mnist_hapi import ConfigError, PaddleMnistError, UnknownModelError
    >>> issubclass(UnknownModelError, PaddleMnistError), issubclass(ConfigError, ValueError)
    (True, True)
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "ConfigError",
    "DataCorruptError",
    "DataNotFoundError",
    "DeviceError",
    "ExportError",
    "FitInputError",
    "ImageError",
    "PaddleMnistError",
    "PaddleVersionError",
    "UnknownModelError",
]


class PaddleMnistError(Exception):
    """Base class of every error a user of this library can hit."""


class ConfigError(PaddleMnistError, ValueError):
    """An argument has a value the library cannot work with."""


class DataNotFoundError(PaddleMnistError, FileNotFoundError):
    """No source of the MNIST data could be found or read."""


class DataCorruptError(PaddleMnistError, ValueError):
    """A data file exists but its content is truncated or wrong."""


class UnknownModelError(PaddleMnistError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DeviceError(PaddleMnistError, ValueError):
    """The requested device is not available in this Paddle build."""


class CheckpointError(PaddleMnistError, RuntimeError):
    """A checkpoint cannot be written, found or read."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to another model, optimizer or data setup."""


class ImageError(PaddleMnistError, ValueError):
    """An input image cannot be read or is not usable."""


class ExportError(PaddleMnistError, RuntimeError):
    """An exported model is missing, unreadable or disagrees with the original."""


class PaddleVersionError(PaddleMnistError, ImportError):
    """The installed PaddlePaddle is older than the releases this library supports."""


class FitInputError(ConfigError):
    """What ``fit`` was given (samples, labels, loss, InputSpec) cannot train or export correctly."""
