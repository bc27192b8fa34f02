"""Callbacks that plug into ``paddle.Model.fit``.

Where a callback shares a name with one in ``paddle.callbacks`` (``EarlyStopping``,
``ReduceLROnPlateau``, ``VisualDL``) it is a subclass of Paddle's that takes
Paddle's arguments in Paddle's order, so a script written for Paddle's runs
unchanged; the extras are keyword-only. Helpers live in the callbacks' own
modules (``callbacks.metrics_log.read_metrics``, ``callbacks.lr.current_lr`` ...).

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import callbacks
    >>> issubclass(callbacks.EarlyStopping, paddle.callbacks.EarlyStopping)
    True
    >>> issubclass(callbacks.MonitorCallback, callbacks.StatefulCallback)
    True
"""

import importlib
from typing import Any

from paddle_mnist_hapi.callbacks.base import StatefulCallback
from paddle_mnist_hapi.callbacks.early_stopping import EarlyStopping
from paddle_mnist_hapi.callbacks.ema import EMA
from paddle_mnist_hapi.callbacks.health import TrainingHealth
from paddle_mnist_hapi.callbacks.lr import LRStepper, ReduceLROnPlateau
from paddle_mnist_hapi.callbacks.metrics_log import MetricsLog
from paddle_mnist_hapi.callbacks.monitor import MonitorCallback
from paddle_mnist_hapi.callbacks.nan_guard import NaNGuard
from paddle_mnist_hapi.callbacks.resume import ResumeCkpt
from paddle_mnist_hapi.callbacks.visualdl import VisualDL

__all__ = [
    "EMA",
    "EarlyStopping",
    "LRStepper",
    "MetricsLog",
    "MonitorCallback",
    "NaNGuard",
    "ReduceLROnPlateau",
    "ResumeCkpt",
    "StatefulCallback",
    "TrainingHealth",
    "VisualDL",
]

# Helpers once re-exported here, and the modules they live in. Still importable from
# ``paddle_mnist_hapi.callbacks`` for existing imports; not part of its public list.
_HELPERS = {
    "ScaledLR": "lr",
    "current_lr": "lr",
    "infer_mode": "monitor",
    "load_weights": "resume",
    "mean_eval_loss": "eval_loss",
    "nonfinite_parameters": "nan_guard",
    "plot_metrics": "metrics_log",
    "prediction_grid": "visualdl",
    "read_metrics": "metrics_log",
    "scalar": "base",
    "stateful_callbacks": "base",
}


def __getattr__(name: str) -> Any:
    if name in _HELPERS:
        return getattr(importlib.import_module(f"{__name__}.{_HELPERS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
