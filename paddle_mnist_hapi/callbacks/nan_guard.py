"""``NaNGuard``: stop (or roll back) as soon as training turns non-finite.

hapi only checks ``model.stop_training`` after a whole epoch and its
evaluation, so a NaN in the middle of an epoch would run on, and a checkpoint
at the end of the epoch would save it. The guard ends the epoch right after
the batch that went non-finite, using hapi's own early exit (the one behind
``fit(num_iters=...)``), and records what happened in its state.
:func:`nonfinite_parameters` is the check a checkpoint writer uses to refuse
to save a broken state.

Examples:
    >>> guard = NaNGuard()
    >>> guard.on_train_batch_end(0, {"loss": [float("nan")]})
    >>> guard.triggered, guard.events[0]["what"]
    (True, 'loss')
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import paddle

from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import StatefulCallback, scalar
from paddle_mnist_hapi.errors import CheckpointError, ConfigError

__all__ = ["NaNGuard", "nonfinite_parameters"]

log = logging.getLogger(__name__)


def nonfinite_parameters(network: paddle.nn.Layer) -> list[str]:
    """Names of the parameters of ``network`` holding a NaN or an infinity.

    Examples:
        >>> net = paddle.nn.Linear(2, 1)
        >>> nonfinite_parameters(net)
        []
        >>> net.bias.set_value(paddle.to_tensor([float("inf")]))
        >>> nonfinite_parameters(net)
        ['bias']
    """
    if static_graph.is_static_network(network):  # a static-graph model's: its numbers are in the scope
        arrays = static_graph.network_arrays(network)
        return [name for name, _ in network.named_parameters() if not np.isfinite(arrays[name]).all()]
    with paddle.no_grad():
        return [name for name, p in network.named_parameters() if not bool(paddle.isfinite(p).all())]


class NaNGuard(StatefulCallback):
    """Watch the loss (and optionally the parameters) for NaN and infinity after each batch.

    Args:
        on_nan (str, optional): ``'stop'``: end training after the batch, with a log
            message, no exception; ``'rollback'``: reload the newest valid checkpoint
            of ``checkpoint`` and go on training. Default: ``'stop'``.
        checkpoint (ResumeCkpt, optional): the checkpoint callback to roll back
            with (required by ``'rollback'``, which calls its ``restore_last_good()``). Default: None.
        check_parameters_every (int, optional): also check every parameter each
            this many batches; 0 checks only the loss. Default: 0.
        max_rollbacks (int, optional): after this many rollbacks in one run, stop
            instead. Default: 3.

    Examples:
        >>> NaNGuard(on_nan="stop", check_parameters_every=100).on_nan
        'stop'
    """

    def __init__(
        self,
        on_nan: Literal["stop", "rollback"] = "stop",
        checkpoint: Any = None,
        check_parameters_every: int = 0,
        max_rollbacks: int = 3,
    ) -> None:
        if on_nan not in ("stop", "rollback"):
            raise ConfigError(f"on_nan must be 'stop' or 'rollback'. Received: on_nan={on_nan!r}")
        if on_nan == "rollback" and not callable(getattr(checkpoint, "restore_last_good", None)):
            raise ConfigError(
                "on_nan='rollback' needs the checkpoint callback to roll back with: pass "
                "checkpoint=ResumeCkpt(...) (the same instance you give to fit). "
                f"Received: checkpoint={checkpoint!r}"
            )
        check_int("check_parameters_every", check_parameters_every)
        check_int("max_rollbacks", max_rollbacks)
        self.on_nan = on_nan
        self.checkpoint = checkpoint
        self.check_parameters_every = check_parameters_every
        self.max_rollbacks = max_rollbacks
        super().__init__()

    def reset_state(self) -> None:
        self.batches = 0
        self.triggered = False
        self.rollbacks = 0
        self.events: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "triggered": self.triggered,
            "rollbacks": self.rollbacks,
            "events": self.events,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.triggered = bool(state["triggered"])
        self.rollbacks = int(state["rollbacks"])
        self.events = list(state["events"])

    def _find_nonfinite(self, logs: dict[str, Any]) -> tuple[str, str] | None:
        if "loss" in logs:
            loss = scalar(logs["loss"])
            if not math.isfinite(loss):
                return "loss", repr(loss)
        every = self.check_parameters_every
        if every and self.batches % every == 0 and self.model is not None:
            bad = nonfinite_parameters(self.model.network)
            if bad:
                return "parameters", ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        return None

    def _stop_now(self) -> None:
        # hapi ends the epoch right after this batch when num_iters runs out (then sets stop_training).
        self.model.stop_training = True
        self.model.num_iters = 1

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.batches += 1
        found = self._find_nonfinite(logs or {})
        if found is None:
            return
        what, value = found
        event: dict[str, Any] = {"batch": self.batches, "step": step, "what": what, "value": value}
        self.events.append(event)
        if self.on_nan == "rollback" and self.rollbacks < self.max_rollbacks:
            try:
                restored = self.checkpoint.restore_last_good()
            except CheckpointError as exc:
                event.update(action="stop", reason=str(exc))
                log.error(
                    "NaNGuard: non-finite %s (%s) at batch %d and no checkpoint to roll back to (%s); stopping",
                    what,
                    value,
                    self.batches,
                    exc,
                )
            else:
                self.rollbacks += 1
                event.update(action="rollback", restored=restored)
                log.warning(
                    "NaNGuard: non-finite %s (%s) at batch %d; rolled back to %s (rollback %d of %d)",
                    what,
                    value,
                    self.batches,
                    restored,
                    self.rollbacks,
                    self.max_rollbacks,
                )
                return
        else:
            event["action"] = "stop"
            reason = "" if self.on_nan == "stop" else f" after {self.rollbacks} rollbacks"
            log.error(
                "NaNGuard: non-finite %s (%s) at batch %d; stopping training%s", what, value, self.batches, reason
            )
        self.triggered = True
        if self.model is not None:
            self._stop_now()
