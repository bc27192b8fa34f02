"""When training must stop early: a preemption signal or a time budget.

A scheduler that preempts a job (Kubernetes, SLURM with ``--signal``, a spot
VM) sends a signal and waits a grace period. :class:`StopRequest` turns the
signal into a flag; ``ResumeCkpt`` looks at it after every optimizer step,
writes a checkpoint there and stops. Under ``paddle.distributed.launch`` the
ranks agree on the step (one tiny all-reduce per batch), so every rank stops
at the same step and none waits for another in a gradient all-reduce.

Examples:
    >>> parse_max_time("00:01:30:00"), parse_max_time(90), parse_max_time(None)
    (5400.0, 90.0, None)
    >>> request = StopRequest(signals=(), max_time=10)
    >>> request.start_clock(); request.reason(step_seconds=1.0, save_seconds=0.1)  # plenty of time left
    >>> request.deadline -= 10; request.reason(step_seconds=1.0, save_seconds=0.1)
    'max_time'
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import paddle

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["AGREE_EVERY", "AGREE_SECONDS", "MAX_TIME", "StopRequest", "agree", "parse_max_time", "parse_signals"]
__all__ += ["updates_between_agreements"]

log = logging.getLogger(__name__)


def parse_max_time(value: float | int | str | None) -> float | None:
    """Seconds from a number of seconds or a ``"DD:HH:MM:SS"`` string (as Lightning's ``Timer``); None stays None.

    Raises:
        ConfigError: not a positive duration.
    """
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) == 4 and all(p.strip().isdigit() for p in parts):
            days, hours, minutes, secs = (int(p) for p in parts)
            seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        seconds = float(value)
    if seconds is None or seconds <= 0:
        raise ConfigError(
            "max_time must be a positive number of seconds or a 'DD:HH:MM:SS' string, e.g. '00:12:00:00' for "
            f"12 hours. Received: max_time={value!r}"
        )
    return seconds


def parse_signals(signals: Sequence[int | str | signal.Signals]) -> tuple[signal.Signals, ...]:
    """``signal.Signals`` from numbers or names (``'SIGUSR1'``, ``'USR1'``).

    Raises:
        ConfigError: an unknown signal, or one that cannot be caught (SIGKILL, SIGSTOP).

    Examples:
        >>> parse_signals(["SIGTERM", "USR1"])
        (<Signals.SIGTERM: 15>, <Signals.SIGUSR1: 10>)
    """
    if isinstance(signals, (str, int)):
        signals = [signals]
    out = []
    for item in signals:
        try:
            if isinstance(item, str):
                name = item.upper()
                sig = signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
            else:
                sig = signal.Signals(item)
        except (KeyError, ValueError):
            raise ConfigError(
                f"Unknown signal {item!r}. Pass names such as 'SIGTERM' or 'SIGUSR1'. Received: signals={signals!r}"
            ) from None
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ConfigError(f"{sig.name} cannot be caught by a process. Received: signals={signals!r}")
        out.append(sig)
    return tuple(out)


class StopRequest:
    """A flag raised by a preemption signal or by the time budget running out.

    Args:
        signals (sequence): signals that request a stop while armed.
        max_time (float, optional): seconds this ``fit`` may run, counted from :meth:`start`.
    """

    def __init__(self, signals: Sequence[signal.Signals], max_time: float | None) -> None:
        self.signals = tuple(signals)
        self.max_time = max_time
        self.deadline = math.inf
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def start_clock(self) -> None:
        """Start counting ``max_time``."""
        self.received = None
        self.deadline = time.monotonic() + self.max_time if self.max_time else math.inf

    def start(self) -> None:
        """Catch the signals (main thread only; elsewhere they are left alone, with a warning)."""
        if not self.signals:
            return
        if threading.current_thread() is not threading.main_thread():
            log.warning("ResumeCkpt: fit runs outside the main thread; %s will not checkpoint first.", self.signals)
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def stop(self) -> None:
        """Give the signals back to the handlers they had before :meth:`start`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # Paddle's launcher sends SIGTERM up to 3 times: one stop is enough
            log.info("ResumeCkpt: %s again; already stopping", signal.Signals(signum).name)
            return
        self.received = signal.Signals(signum)
        name = self.received.name
        log.warning("ResumeCkpt: received %s; checkpointing after this optimizer step, then stopping", name)

    def reason(self, step_seconds: float, save_seconds: float) -> str | None:
        """``'SIGTERM'`` (the signal's name), ``'max_time'`` or None.

        The time budget asks to stop when one more step, an evaluation or
        checkpoint included (``step_seconds``, ``save_seconds``, with a margin),
        would no longer fit before the deadline.
        """
        if self.received is not None:
            return self.received.name
        if time.monotonic() + 2 * (step_seconds + max(save_seconds, 0.25)) + 1.0 >= self.deadline:
            return MAX_TIME
        return None

    def adopt(self, reason: str) -> None:
        """Act on another rank's signal as if it had come here (so every rank exits alike)."""
        if reason != MAX_TIME and self.received is None:
            self.received = signal.Signals[reason]


MAX_TIME = "max_time"
_CODES = {MAX_TIME: 1}

# Under paddle.distributed.launch the ranks agree on a stop after the first update of a fit, then again after
# as many updates as fit in AGREE_SECONDS of the slowest rank's steps (at most AGREE_EVERY), and at every
# epoch's end. One all-reduce per update cost about 0.5 ms, 5% of a 64-image LeNet-5 step on 2 CPU ranks
# (rank 0's profile); 2 ranks x 64 images with ResumeCkpt trained 1.05-1.14x faster on this schedule
# (python -m paddle.distributed.launch --nproc_per_node 2 bench/agree_cost.py).
AGREE_SECONDS = 0.1
AGREE_EVERY = 8


def agree(reason: str | None, step_seconds: float = 0.0) -> tuple[str | None, float]:
    """The stop reason of any rank (a signal wins over ``max_time``) and the slowest rank's ``step_seconds``:
    one small all-reduce under ``paddle.distributed.launch``, nothing in one process.

    Examples:
        >>> agree("SIGTERM", 0.25), agree(None)
        (('SIGTERM', 0.25), (None, 0.0))
    """
    if paddle.distributed.get_world_size() <= 1:
        return reason, step_seconds
    code = 0 if reason is None else _CODES.get(reason) or int(signal.Signals[reason])
    flag = paddle.to_tensor([code, round(step_seconds * 1e6)], dtype="int64")
    paddle.distributed.all_reduce(flag, op=paddle.distributed.ReduceOp.MAX)
    agreed, slowest = (int(x) for x in flag.numpy())
    if agreed == 0:
        return None, slowest / 1e6
    return (MAX_TIME if agreed == 1 else signal.Signals(agreed).name), slowest / 1e6


def updates_between_agreements(step_seconds: float) -> int:
    """How many optimizer updates the ranks train before they next agree on a stop, given the slowest
    rank's last step: as many as fit in ``AGREE_SECONDS``, at least 1 and at most ``AGREE_EVERY``.

    Examples:
        >>> updates_between_agreements(0.014), updates_between_agreements(0.5), updates_between_agreements(0.001)
        (7, 1, 8)
    """
    if step_seconds <= 0:
        return 1
    return max(1, min(AGREE_EVERY, int(AGREE_SECONDS / step_seconds)))
