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

import math
from typing import Any, Literal

from paddle_mnist_hapi.callbacks.base import StatefulCallback, scalar
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["MonitorCallback", "infer_mode"]

Mode = Literal["auto", "min", "max"]


def infer_mode(monitor: str) -> Literal["min", "max"]:
    """``'max'`` for accuracy-like names, ``'min'`` for losses and errors.

    Raises:
        ConfigError: the name says neither; pass ``mode`` explicitly.

    Examples:
        >>> infer_mode("acc_top5"), infer_mode("loss")
        ('max', 'min')
    """
    name = monitor.lower().rsplit("/", 1)[-1]
    if any(k in name for k in ("acc", "precision", "recall", "f1", "auc")):
        return "max"
    if any(k in name for k in ("loss", "err", "mae", "mse")):
        return "min"
    raise ConfigError(
        f"Cannot tell whether {monitor!r} should go up or down. Pass mode='min' or mode='max'. "
        f"Received: monitor={monitor!r}, mode='auto'"
    )


class MonitorCallback(StatefulCallback):
    """Base for callbacks that watch one metric.

    Args:
        monitor (str, optional): metric name in hapi's logs. Default: ``'loss'``.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'`` (from the name). Default: ``'auto'``.
        min_delta (float, optional): smallest change that counts as an improvement. Default: 0.
        baseline (float, optional): a value the metric must beat before anything counts. Default: None.
        source (str, optional): ``'eval'`` (``on_eval_end`` logs) or ``'train'``
            (``on_epoch_end`` logs). Default: ``'eval'``.
    """

    def __init__(
        self,
        monitor: str = "loss",
        mode: Mode = "auto",
        min_delta: float = 0.0,
        baseline: float | None = None,
        source: Literal["eval", "train"] = "eval",
    ) -> None:
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        if not isinstance(min_delta, (int, float)) or min_delta < 0 or math.isnan(min_delta):
            raise ConfigError(f"min_delta must be a number >= 0. Received: min_delta={min_delta!r}")
        if source not in ("eval", "train"):
            raise ConfigError(f"source must be 'eval' or 'train'. Received: source={source!r}")
        self.monitor = monitor
        self.mode: Literal["min", "max"] = infer_mode(monitor) if mode == "auto" else mode
        self.min_delta = float(min_delta)
        self.baseline = baseline
        self.source = source
        super().__init__()

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
        return scalar(logs[self.monitor])

    def on_monitor(self, value: float, improved: bool, logs: dict[str, Any]) -> None:
        """Called with each new value of the metric; subclasses act here."""

    def _observe(self, logs: dict[str, Any] | None) -> None:
        value = self.monitor_value(logs)
        if value is None:
            return
        improved = self.update(value)
        self.on_monitor(value, improved, dict(logs or {}))

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.source == "eval":
            self._observe(logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.source == "train":
            self._observe(logs)
