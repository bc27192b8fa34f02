"""``EarlyStopping``: stop when a metric stops improving, optionally back to the best weights.

Its counters (best value, evaluations without improvement, the epoch it
stopped at) are resumable state, so an interrupted and resumed run stops
where the uninterrupted one would.

Examples:
    >>> stop = EarlyStopping(monitor="acc", patience=1)
    >>> for epoch, acc in enumerate((0.90, 0.95, 0.94, 0.93)):
    ...     stop.on_epoch_end(epoch); stop.on_eval_end({"acc": acc})
    >>> stop.stopped_epoch, stop.best, stop.best_epoch
    (3, 0.95, 1)
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import paddle

from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.monitor import Mode, MonitorCallback
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["EarlyStopping"]

log = logging.getLogger(__name__)


class EarlyStopping(MonitorCallback):
    """Stop training once ``monitor`` has not improved for ``patience`` evaluations.

    Training stops after the epoch whose evaluation used up the patience
    (``model.stop_training = True``). Epochs are counted across ``fit`` calls
    and resumes.

    Args:
        monitor (str, optional): metric in hapi's logs (``'loss'``, ``'acc'``). Default: ``'loss'``.
        patience (int, optional): evaluations without improvement to tolerate. Default: 0.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'`` (from the name). Default: ``'auto'``.
        min_delta (float, optional): smallest change that counts as an improvement. Default: 0.
        baseline (float, optional): a value the metric must beat to count at all. Default: None.
        restore_best_weights (bool, optional): keep the best weights in memory and
            put them back in the network when training ends. Default: False.
        source (str, optional): ``'eval'`` (evaluation logs) or ``'train'``
            (the epoch's training logs). Default: ``'eval'``.

    Examples:
        >>> EarlyStopping(monitor="acc", patience=3).mode
        'max'
    """

    def __init__(
        self,
        monitor: str = "loss",
        patience: int = 0,
        mode: Mode = "auto",
        min_delta: float = 0.0,
        baseline: float | None = None,
        restore_best_weights: bool = False,
        source: Literal["eval", "train"] = "eval",
    ) -> None:
        check_int("patience", patience)  # a number of evaluations
        if not isinstance(restore_best_weights, bool):
            raise ConfigError(
                f"restore_best_weights must be True or False. Received: restore_best_weights={restore_best_weights!r}"
            )
        self.patience = patience
        self.restore_best_weights = restore_best_weights
        self.best_weights: dict[str, np.ndarray] | None = None
        super().__init__(monitor=monitor, mode=mode, min_delta=min_delta, baseline=baseline, source=source)

    def reset_state(self) -> None:
        super().reset_state()
        self.wait = 0
        self.epoch = -1  # the last finished epoch, counted across fit calls
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.best_weights = None

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "wait": self.wait,
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.wait = int(state["wait"])
        self.epoch = int(state["epoch"])
        self.best_epoch = state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_weights = None  # weights are not state; a checkpoint holds them

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.source == "eval" and self.model is not None and getattr(self.model, "_test_dataloader", 1) is None:
            log.warning(
                "EarlyStopping watches the evaluation's %r, but fit got no eval_data, so it will never stop "
                "training. Pass eval_data to fit, or EarlyStopping(source='train').",
                self.monitor,
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch += 1
        super().on_epoch_end(epoch, logs)

    def on_monitor(self, value: float, improved: bool, logs: dict[str, Any]) -> None:
        if improved:
            self.wait = 0
            self.best_epoch = self.epoch
            if self.restore_best_weights and self.model is not None:
                self.best_weights = {k: v.numpy().copy() for k, v in self.model.network.state_dict().items()}
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = self.epoch
            if self.model is not None:
                self.model.stop_training = True
            since = (
                f"{self.best:.6g} (epoch {self.best_epoch})" if self.best is not None else f"baseline {self.baseline}"
            )
            log.info(
                "EarlyStopping: %s has not improved on %s for %d evaluation(s); stopping after epoch %d",
                self.monitor,
                since,
                self.wait,
                self.epoch,
            )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self.model is not None:
            if self.best_weights is not None and self.best_epoch != self.epoch:
                self.model.network.set_state_dict({k: paddle.to_tensor(v) for k, v in self.best_weights.items()})
                log.info(
                    "EarlyStopping: restored the weights of epoch %s (%s=%.6g)",
                    self.best_epoch,
                    self.monitor,
                    self.best,
                )
            elif self.best_weights is None and self.best_epoch is not None:
                log.warning(
                    "EarlyStopping: the best weights (epoch %s) were not seen in this process (resumed run), so "
                    "the network keeps its last weights. Load the best checkpoint instead.",
                    self.best_epoch,
                )
        super().on_train_end(logs)
