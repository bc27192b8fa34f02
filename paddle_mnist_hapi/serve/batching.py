"""``MicroBatcher``: one worker thread runs the model on batches of concurrent requests.

A ``paddle.inference`` predictor is not thread-safe and costs little more for
32 images than for one, so the service gives it one thread of its own. Each
request puts its input on a queue and waits on a future; the worker takes the
first waiting input, collects whatever else arrives within ``max_wait_ms`` (up
to ``max_batch`` inputs), runs them as one batch and hands every request its
own rows. Under load the batches grow by themselves.

The worker only waits for inputs that are known to be on their way: a caller
that will submit soon (the service, while it decodes an upload) says so with
:meth:`MicroBatcher.announce`. With nothing announced, a lone request runs at
once, so batching costs a single client no latency; with requests announced it
waits at most ``max_wait_ms`` for them.

Examples:
    >>> import numpy as np
    >>> batcher = MicroBatcher(lambda batch: batch * 2, max_batch=8, max_wait_ms=500)
    >>> for _ in range(5):
    ...     batcher.announce()                  # five requests are being decoded
    >>> futures = [batcher.submit(np.full((1, 3), i, np.float32), announced=True) for i in range(5)]
    >>> futures[4].result(timeout=5).tolist()
    [[8.0, 8.0, 8.0]]
    >>> batcher.stats()["requests"], batcher.stats()["batches"]   # one call of fn for all five
    (5, 1)
    >>> batcher.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["MicroBatcher"]

log = logging.getLogger(__name__)

_STOP = object()


class MicroBatcher:
    """Run ``fn`` on batches gathered from concurrent :meth:`submit` calls, in one worker thread.

    Args:
        fn (callable): maps an ``(N, ...)`` array to an ``(N, ...)`` array of results, row by row
            (e.g. :meth:`paddle_mnist_hapi.deploy.predict.Predictor.logits`). Only the worker thread calls it.
        max_batch (int, optional): the most inputs in one call of ``fn``. ``1`` switches batching
            off. Default: 32.
        max_wait_ms (float, optional): how long the worker waits for announced inputs after the
            first one arrived. Default: 3.

    Examples:
        >>> import numpy as np
        >>> with MicroBatcher(np.negative, max_batch=4) as batcher:
        ...     batcher.submit(np.ones((1, 2))).result(timeout=5).tolist()
        [[-1.0, -1.0]]
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], *, max_batch: int = 32, max_wait_ms: float = 3.0):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive integer. Received: max_batch={max_batch!r}")
        if not isinstance(max_wait_ms, (int, float)) or not 0 <= max_wait_ms <= 1000:
            raise ConfigError(f"max_wait_ms must be a number in 0..1000. Received: max_wait_ms={max_wait_ms!r}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._requests = 0
        self._batches = 0
        self._largest = 0
        self._coming = 0  # announced inputs not submitted yet
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="paddle-mnist-batcher", daemon=True)
        self._thread.start()

    def announce(self) -> None:
        """Say that one :meth:`submit` (with ``announced=True``) or one :meth:`withdraw` will follow soon."""
        with self._lock:
            self._coming += 1

    def withdraw(self) -> None:
        """An announced input will not come (e.g. its upload was not an image)."""
        with self._lock:
            self._coming -= 1

    def submit(self, inputs: np.ndarray, *, announced: bool = False) -> Future[np.ndarray]:
        """Queue ``inputs`` (one or more rows); the future gives ``fn``'s rows for them.

        Raises:
            RuntimeError: the batcher was closed.
        """
        if announced:
            self.withdraw()
        if self._closed:
            raise RuntimeError("MicroBatcher is closed")
        future: Future[np.ndarray] = Future()
        self._queue.put((np.asarray(inputs), future))
        return future

    def stats(self) -> dict[str, Any]:
        """Requests and batches run so far, the mean and largest batch (in requests)."""
        with self._lock:
            mean = self._requests / self._batches if self._batches else 0.0
            return {
                "requests": self._requests,
                "batches": self._batches,
                "mean_batch": round(mean, 3),
                "largest_batch": self._largest,
                "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait * 1000.0,
            }

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued work and stop the worker thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the worker thread

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or self._coming <= 0:  # nothing is on its way: run now
                        break
                    try:
                        item = self._queue.get(timeout=remaining)
                    except queue.Empty:
                        break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[np.ndarray, Future[np.ndarray]]]) -> None:
        live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            inputs = np.concatenate([x for x, _ in live])
            outputs = np.asarray(self.fn(inputs))
            if len(outputs) != len(inputs):
                raise RuntimeError(f"fn returned {len(outputs)} rows for {len(inputs)} inputs")
        except Exception as exc:  # every waiting request learns what went wrong
            log.warning("batch of %d failed: %s", len(live), exc)
            for _, future in live:
                future.set_exception(exc)
            return
        with self._lock:
            self._requests += len(live)
            self._batches += 1
            self._largest = max(self._largest, len(live))
        start = 0
        for x, future in live:
            future.set_result(outputs[start : start + len(x)])
            start += len(x)
