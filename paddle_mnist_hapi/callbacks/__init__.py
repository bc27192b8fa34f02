"""Callbacks that plug into ``paddle.Model.fit``.

Examples:
    >>> from paddle_mnist_hapi import callbacks
    >>> issubclass(callbacks.MonitorCallback, callbacks.StatefulCallback)
    True
"""

from paddle_mnist_hapi.callbacks.base import StatefulCallback, scalar, stateful_callbacks
from paddle_mnist_hapi.callbacks.early_stopping import EarlyStopping
from paddle_mnist_hapi.callbacks.ema import EMA
from paddle_mnist_hapi.callbacks.eval_loss import mean_eval_loss
from paddle_mnist_hapi.callbacks.health import TrainingHealth
from paddle_mnist_hapi.callbacks.lr import LRStepper, ReduceLROnPlateau, ScaledLR, current_lr
from paddle_mnist_hapi.callbacks.metrics_log import MetricsLog, plot_metrics, read_metrics
from paddle_mnist_hapi.callbacks.monitor import MonitorCallback, infer_mode
from paddle_mnist_hapi.callbacks.nan_guard import NaNGuard, nonfinite_parameters
from paddle_mnist_hapi.callbacks.resume import ResumeCkpt, load_weights
from paddle_mnist_hapi.callbacks.visualdl import VisualDL, prediction_grid

__all__ = [
    "EMA",
    "EarlyStopping",
    "LRStepper",
    "MetricsLog",
    "MonitorCallback",
    "NaNGuard",
    "ReduceLROnPlateau",
    "ResumeCkpt",
    "ScaledLR",
    "StatefulCallback",
    "TrainingHealth",
    "VisualDL",
    "current_lr",
    "infer_mode",
    "load_weights",
    "mean_eval_loss",
    "nonfinite_parameters",
    "plot_metrics",
    "prediction_grid",
    "read_metrics",
    "scalar",
    "stateful_callbacks",
]
