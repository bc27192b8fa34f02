"""``EarlyStopping``: a drop-in for ``paddle.callbacks.EarlyStopping`` that survives a resume.

It takes Paddle 3.3's arguments in Paddle's order (``monitor, mode, patience,
verbose, min_delta, baseline, save_best_model``) and does what Paddle
documents for them: it is a ``paddle.callbacks.EarlyStopping``, so
``fit(save_dir=...)`` hands it the directory where ``save_best_model`` writes
``best_model``. On top: its counters (best value, evaluations without
improvement, the epoch it stopped at) and, with ``restore_best_weights``,
the best weights are resumable state, so an interrupted and resumed run stops
where the uninterrupted one would and ends with the same weights.

Examples:
    >>> stop = EarlyStopping("acc", "max", 2, verbose=0)
    >>> for epoch, acc in enumerate((0.90, 0.95, 0.94, 0.93)):
    ...     stop.on_epoch_end(epoch); stop.on_eval_end({"acc": acc})
    >>> stop.stopped_epoch, stop.best_value, stop.best_epoch
    (4, 0.95, 1)
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import numpy as np
import paddle

from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import fit_callbacks
from paddle_mnist_hapi.callbacks.monitor import Mode, MonitorCallback
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["EarlyStopping"]

log = logging.getLogger(__name__)


class EarlyStopping(MonitorCallback, paddle.callbacks.EarlyStopping):
    """Stop training once ``monitor`` has not improved for ``patience`` evaluations.

    Training stops after the epoch whose evaluation used up the patience
    (``model.stop_training = True``). Epochs are counted across ``fit`` calls
    and resumes.

    Args:
        monitor (str, optional): metric in hapi's logs (``'loss'``, ``'acc'``). Default: ``'loss'``.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'`` (``'max'`` for accuracy-like
            names, else ``'min'``); an unknown mode warns and means ``'auto'``. Default: ``'auto'``.
        patience (int, optional): evaluations without improvement after which training
            stops; 0 stops at the first one (Paddle 3.3 stops after the first evaluation
            even when it improved). Default: 0.
        verbose (int, optional): 1 prints ``Epoch N: Early stopping ...`` and where the best
            model is, as Paddle does; 0 logs them at DEBUG level. Default: 1.
        min_delta (float, optional): smallest change that counts as an improvement. Default: 0.
        baseline (float, optional): a value the metric must beat to count at all. Default: None.
        save_best_model (bool, optional): save the model with ``model.save`` to
            ``<save_dir>/best_model`` at every improvement, where ``save_dir`` is
            ``fit(save_dir=...)`` (nothing is saved when ``fit`` has none). Default: True.
        restore_best_weights (bool, optional): keyword-only. Keep the best weights (also in
            ``ResumeCkpt``'s checkpoints) and put them back in the network when training
            ends: the weights that scored the best value, so with ``EMA`` (which evaluates
            its average) the average of the best epoch, in any callback order and whatever
            ``EMA(keep=...)`` says. Default: False.
        source (str, optional): keyword-only. ``'eval'`` (evaluation logs) or ``'train'``
            (the epoch's training logs). Default: ``'eval'``.

    Attributes:
        best_value (float): the best value so far (the baseline, or +/-inf, before any), as in Paddle.
        wait_epoch (int): evaluations since the last improvement, as in Paddle.
        stopped_epoch (int): 0 until training is stopped; then the number (counted from 1,
            as in Paddle's message) of the last epoch trained.
        best_epoch (int | None): the index (hapi's, from 0) of the best epoch.

    Examples:
        >>> isinstance(EarlyStopping("acc", "max", 3), paddle.callbacks.EarlyStopping)
        True
    """

    def __init__(
        self,
        monitor: str = "loss",
        mode: Mode = "auto",
        patience: int = 0,
        verbose: int = 1,
        min_delta: float = 0,
        baseline: float | None = None,
        save_best_model: bool = True,
        *,
        restore_best_weights: bool = False,
        source: Literal["eval", "train"] = "eval",
    ) -> None:
        super().__init__(monitor, mode, min_delta, baseline, source=source, verbose=verbose)
        check_int("patience", patience)  # a number of evaluations
        for name, value in (("save_best_model", save_best_model), ("restore_best_weights", restore_best_weights)):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False. Received: {name}={value!r}")
        self.patience = patience
        self.save_best_model = save_best_model
        self.restore_best_weights = restore_best_weights
        self.save_dir: str | None = None  # set by hapi's config_callbacks from fit(save_dir=...)
        self.monitor_op = np.less if self.mode == "min" else np.greater  # Paddle's attribute

    # Paddle's names for our counters
    @property
    def wait_epoch(self) -> int:
        return self.wait

    @wait_epoch.setter
    def wait_epoch(self, value: int) -> None:
        self.wait = value

    @property
    def best_value(self) -> float:
        if self.best is not None:
            return self.best
        if self.baseline is not None:
            return float(self.baseline)
        return float("inf") if self.mode == "min" else float("-inf")

    def reset_state(self) -> None:
        super().reset_state()
        self.wait = 0
        self.epoch = -1  # the last finished epoch, counted across fit calls
        self.best_epoch: int | None = None
        self.stopped_epoch = 0
        self.best_weights: dict[str, np.ndarray] | None = None

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
        self.stopped_epoch = int(state["stopped_epoch"] or 0)

    def state_tensors(self) -> dict[str, paddle.Tensor]:
        """The best weights, when ``restore_best_weights`` keeps them."""
        if not self.restore_best_weights or self.best_weights is None:
            return {}
        return static_graph.to_tensors(self.best_weights)

    def load_state_tensors(self, tensors: dict[str, paddle.Tensor]) -> None:
        self.best_weights = {name: tensor.numpy() for name, tensor in tensors.items()} or None

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

    def _best_model_path(self) -> str | None:
        if self.save_best_model and self.save_dir:
            return os.path.join(self.save_dir, "best_model")
        return None

    def on_monitor(self, value: float, improved: bool, logs: dict[str, Any]) -> None:
        if improved:
            self.wait = 0
            self.best_epoch = self.epoch
            if self.restore_best_weights and self.model is not None:
                self.best_weights = self._scored_weights()
            path = self._best_model_path()
            if path is not None and self.model is not None:
                self.model.save(path)  # hapi writes on rank 0 only
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = self.epoch + 1
            if self.model is not None:
                self.model.stop_training = True
            since = f"{self.best:.6g} of epoch {self.best_epoch + 1}" if self.best is not None else "the baseline"
            message = (
                f"Epoch {self.stopped_epoch}: Early stopping ({self.monitor} has not improved on {since} "
                f"for {self.wait} evaluation(s))."
            )
            path = self._best_model_path()
            if path is not None and self.best is not None:
                message += f"\nBest checkpoint has been saved at {os.path.abspath(path)}"
            self.report(message)

    def _evaluated_elsewhere(self) -> list[dict[str, np.ndarray]]:
        """Weights the evaluation ran on instead of the network's trained ones (``EMA``'s average), if any."""
        if self.source != "eval":
            return []
        providers = [getattr(c, "evaluated_weights", None) for c in fit_callbacks()]
        found = [provider() for provider in providers if callable(provider)]
        return [weights for weights in found if weights]

    def _scored_weights(self) -> dict[str, np.ndarray]:
        """The weights that scored this value: the network's, or what the evaluation ran on instead (``EMA``)."""
        weights = static_graph.network_arrays(self.model.network)
        for evaluated in self._evaluated_elsewhere():
            weights.update(evaluated)
        return weights

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self.model is not None and self.best_weights is not None:
            # Always put them back: the network may hold other weights than those that scored (EMA's average
            # was evaluated; EMA's keep= then yields to this), even when the best epoch is the last.
            static_graph.set_network_arrays(self.model.network, self.best_weights)
            if self.best_epoch != self.epoch or self._evaluated_elsewhere():
                epoch = self.best_epoch + 1 if self.best_epoch is not None else "?"
                self.report(
                    f"EarlyStopping: restored the weights that scored best, those evaluated after epoch {epoch} "
                    f"({self.monitor}={self.best:.6g})."
                )
        super().on_train_end(logs)
