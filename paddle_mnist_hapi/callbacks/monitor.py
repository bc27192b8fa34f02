"""``MonitorCallback``: track the best value of one metric, once, for all.

Early stopping, best-k checkpoints and reduce-on-plateau all ask the same
question: did ``monitor`` improve by more than ``min_delta``? This base
answers it and keeps ``best`` as resumable state.

Metric names are hapi's: ``loss``, ``acc`` ... as they arrive in
``on_eval_end`` logs (evaluation, the default) or, with ``source='train'``,
in ``on_epoch_end`` logs.

Examples:
    >>> m = MonitorCallback(monitor="acc", min_delta=0.01)
    >>> m.mode
    'max'
    >>> [m.update(v) for v in (0.90, 0.905, 0.95)]
    [True, False, True]
    >>> m.best
    0.95
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from typing import Any, Literal

from paddle_mnist_hapi.callbacks.base import StatefulCallback, is_rank0, scalar
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["MonitorCallback", "infer_mode"]

log = logging.getLogger(__name__)

Mode = Literal["auto", "min", "max"]

_HIGHER_IS_BETTER = ("acc", "precision", "recall", "f1", "auc", "iou")


def infer_mode(monitor: str) -> Literal["min", "max"]:
    """``'max'`` for accuracy-like names, ``'min'`` for losses and errors.

    Raises:
        ConfigError: the name says neither; pass ``mode`` explicitly.

    Examples:
        >>> infer_mode("acc_top5"), infer_mode("loss"), infer_mode("miou")
        ('max', 'min', 'max')
    """
    name = monitor.lower().rsplit("/", 1)[-1]
    if any(k in name for k in _HIGHER_IS_BETTER):
        return "max"
    if any(k in name for k in ("loss", "err", "mae", "mse")):
        return "min"
    raise ConfigError(
        f"Cannot tell whether {monitor!r} should go up or down. Pass mode='min' or mode='max'. "
        f"Received: monitor={monitor!r}, mode='auto'"
    )


def _auto_mode(monitor: str) -> Literal["min", "max"]:
    """``mode='auto'`` as Paddle's callbacks resolve it: a name that says neither means ``'min'``, with a warning."""
    try:
        return infer_mode(monitor)
    except ConfigError as error:
        warnings.warn(
            f"{error} Assuming lower is better (mode='min'), as Paddle does for names without 'acc'.",
            UserWarning,
            stacklevel=4,
        )
        return "min"


class MonitorCallback(StatefulCallback):
    """Base for callbacks that watch one metric.

    Args:
        monitor (str, optional): metric name in hapi's logs. Default: ``'loss'``.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'`` (from the name, see
            :func:`infer_mode`; a name that says neither means ``'min'``, with a warning);
            an unknown mode warns and falls back to ``'auto'``, as in Paddle. Default: ``'auto'``.
        min_delta (float, optional): smallest change that counts as an improvement
            (its absolute value, as in Paddle). Default: 0.
        baseline (float, optional): a value the metric must beat before anything counts. Default: None.
        source (str, optional): keyword-only. ``'eval'`` (``on_eval_end`` logs) or ``'train'``
            (``on_epoch_end`` logs). Default: ``'eval'``.
        verbose (int, optional): keyword-only. 1: print what the callback does (Paddle's
            ``verbose``); 0: log it at DEBUG level only. Default: 0.
    """

    def __init__(
        self,
        monitor: str = "loss",
        mode: Mode = "auto",
        min_delta: float = 0.0,
        baseline: float | None = None,
        *,
        source: Literal["eval", "train"] = "eval",
        verbose: int = 0,
    ) -> None:
        # First: for a subclass of a Paddle callback this runs Paddle's own __init__ with its
        # defaults; the attributes set below replace what it set.
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"monitor must be a metric name such as 'loss' or 'acc'. Received: monitor={monitor!r}")
        if mode not in ("auto", "min", "max"):
            warnings.warn(
                f"{type(self).__name__} mode {mode!r} is unknown, fallback to auto mode. "
                "Pass mode='min', 'max' or 'auto'.",
                UserWarning,
                stacklevel=3,
            )
            mode = "auto"
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or math.isnan(min_delta):
            raise ConfigError(f"min_delta must be a number. Received: min_delta={min_delta!r}")
        if baseline is not None and (isinstance(baseline, bool) or not isinstance(baseline, (int, float))):
            raise ConfigError(f"baseline must be a number or None. Received: baseline={baseline!r}")
        if source not in ("eval", "train"):
            raise ConfigError(f"source must be 'eval' or 'train'. Received: source={source!r}")
        if isinstance(verbose, bool) or not isinstance(verbose, int):
            raise ConfigError(f"verbose must be 0 or 1. Received: verbose={verbose!r}")
        self.monitor = monitor
        self.mode: Literal["min", "max"] = _auto_mode(monitor) if mode == "auto" else mode
        self.min_delta = abs(float(min_delta))
        self.baseline = baseline
        self.source = source
        self.verbose = verbose
        self._missing_warned = False

    def reset_state(self) -> None:
        self.best: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.best = state["best"]

    def is_improvement(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` beats ``reference`` (or the baseline) by more than ``min_delta``."""
        if math.isnan(value):
            return False
        if reference is None:
            reference = self.baseline
            if reference is None:
                return True
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def update(self, value: float) -> bool:
        """Record a new value; return whether it improved on ``best``."""
        improved = self.is_improvement(value, self.best)
        if improved:
            self.best = value
        return improved

    def monitor_value(self, logs: dict[str, Any] | None) -> float | None:
        """The monitored value in ``logs``, or None when it is absent."""
        if not logs or self.monitor not in logs:
            return None
        try:
            return scalar(logs[self.monitor])
        except (TypeError, ValueError, IndexError):
            return None

    def on_monitor(self, value: float, improved: bool, logs: dict[str, Any]) -> None:
        """Called with each new value of the metric; subclasses act here."""

    def report(self, message: str) -> None:
        """Say what the callback did: printed on rank 0 when ``verbose`` (as Paddle does), else logged at DEBUG.

        (Importing Paddle sends INFO records of every logger to stderr, so INFO would not be quiet.)
        """
        if self.verbose > 0 and is_rank0():
            sys.stdout.write(message + "\n")
            sys.stdout.flush()
        else:
            log.debug(message)

    def _observe(self, logs: dict[str, Any] | None) -> None:
        value = self.monitor_value(logs)
        if value is None:
            if not self._missing_warned:  # once per fit: Paddle warns at every evaluation
                self._missing_warned = True
                names = sorted(k for k in (logs or {}) if k not in ("step", "steps", "batch_size", "metrics"))
                warnings.warn(
                    f"{type(self).__name__} monitors {self.monitor!r}, but the {self.source} logs have no such "
                    f"number, so it does nothing. Pass one of {names} as monitor. Received: monitor={self.monitor!r}",
                    UserWarning,
                    stacklevel=2,
                )
            return
        improved = self.update(value)
        self.on_monitor(value, improved, dict(logs or {}))

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._missing_warned = False
        super().on_train_begin(logs)

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.source == "eval":
            self._observe(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.source == "train":
            self._observe(logs)
