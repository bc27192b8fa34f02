"""Where a run is: epoch, batch within it, global step, and whether it is over.

``epochs`` and ``num_iters`` of ``fit`` are the run's totals (as Keras's
``BackupAndRestore`` has it): the same script re-run continues to them, and
re-run with a larger ``epochs`` extends a finished run.

Examples:
    >>> done = Position(epoch=2, step_in_epoch=0, global_step=8)
    >>> done.remaining(epochs=2, num_iters=None), done.remaining(epochs=3, num_iters=None)
    (0, None)
    >>> Position(epoch=0, step_in_epoch=4, global_step=4).remaining(epochs=2, num_iters=6)
    2
    >>> Position(epoch=1, step_in_epoch=0, global_step=4, stop="callback").remaining(epochs=5, num_iters=None)
    0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["STOP_BY_CALLBACK", "Position"]

STOP_BY_CALLBACK = "callback"  # EarlyStopping, NaNGuard ...: the run is over, whatever epochs says


@dataclass
class Position:
    """A point in training: ``epoch`` (0-based) and ``step_in_epoch`` batches into it, ``global_step`` batches in all.

    ``stop`` is why training stopped there, when a callback ended the run (:data:`STOP_BY_CALLBACK`).
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    stop: str | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        stop = state.get("stop")
        if stop is None and state.get("finished") and state.get("stop_training"):  # format of earlier releases
            stop = STOP_BY_CALLBACK
        return cls(state["epoch"], state["step_in_epoch"], state["global_step"], stop)

    def remaining(self, epochs: int, num_iters: int | None) -> int | None:
        """Batches left to reach ``num_iters`` in all (None without it: go on to ``epochs``); 0 when the run is over."""
        if self.stop == STOP_BY_CALLBACK:
            return 0
        if num_iters is not None:
            return max(num_iters - self.global_step, 0)
        return 0 if self.epoch >= epochs else None
