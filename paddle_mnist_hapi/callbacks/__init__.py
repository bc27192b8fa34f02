"""Callbacks that plug into ``paddle.Model.fit``.

Examples:
    >>> from paddle_mnist_hapi import callbacks
    >>> issubclass(callbacks.MonitorCallback, callbacks.StatefulCallback)
    True
"""

from paddle_mnist_hapi.callbacks.base import StatefulCallback, scalar, stateful_callbacks
from paddle_mnist_hapi.callbacks.monitor import MonitorCallback, infer_mode

__all__ = ["MonitorCallback", "StatefulCallback", "infer_mode", "scalar", "stateful_callbacks"]
