"""The evaluation loss as the mean over the whole evaluation set, for every callback and for ``Model.evaluate``.

hapi reports the *last batch's* loss at the end of an evaluation: in the
``on_eval_end`` logs, in what ``Model.evaluate`` returns, and on its progress
bar. :func:`mean_eval_loss` makes a model report the mean over all the
evaluation batches instead, weighted by batch size (so for losses with the
default ``reduction='mean'`` it is the mean over every evaluated sample),
under the same key and in the same format (``{'loss': [value], ...}``). The
value is fixed when the evaluation loop ends, before any callback's
``on_eval_end`` runs, so every callback sees it whatever its place in the
list. Per-batch logs (``on_eval_batch_end``) keep each batch's own loss.
Under ``paddle.distributed.launch`` the ranks' sums are added up, so every
rank reports the mean over all ranks' batches (hapi's padding of the last
batch included).

Every callback of this library turns it on for the model it is given
(``StatefulCallback.set_model``); call it yourself for a plain
``model.evaluate`` without them.

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi import MNIST, create_model, specs_for
    >>> net = create_model("linear")
    >>> model = mean_eval_loss(paddle.Model(net, *specs_for("linear")))
    >>> model.prepare(loss=paddle.nn.CrossEntropyLoss())
    >>> test = MNIST("test", limit=130)
    >>> result = model.evaluate(test, batch_size=64, verbose=0)   # batches of 64, 64 and 2
    >>> with paddle.no_grad():
    ...     by_hand = paddle.nn.functional.cross_entropy(net(paddle.to_tensor(test.images)),
    ...                                                  paddle.to_tensor(test.labels)).item()
    >>> abs(result["loss"][0] - by_hand) < 1e-5
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle

__all__ = ["mean_eval_loss"]

_MARK = "_paddle_mnist_hapi_mean_eval_loss"


class _LossRecorder:
    """Stands in for hapi's ``CallbackList`` in one evaluation: adds up each batch's loss, then passes it on."""

    def __init__(self, callbacks: Any) -> None:
        self._callbacks = callbacks
        self.sums: np.ndarray | None = None
        self.weight = 0.0

    def on_batch_end(self, mode: str, step: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None:
            values = np.asarray(loss, dtype=np.float64).reshape(-1)
            weight = float((logs or {}).get("batch_size") or 1)
            self.sums = values * weight if self.sums is None else self.sums + values * weight
            self.weight += weight
        self._callbacks.on_batch_end(mode, step, logs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._callbacks, name)

    def mean(self) -> list[float] | None:
        if self.sums is None:
            return None
        sums, count = self.sums, self.weight
        nranks = paddle.distributed.ParallelEnv().nranks
        if nranks > 1:
            total = paddle.to_tensor(np.append(sums, count))
            paddle.distributed.all_reduce(total)
            reduced = total.numpy()
            sums, count = reduced[:-1], float(reduced[-1])
        return [float(value) for value in sums / count]


def mean_eval_loss(model: paddle.Model) -> paddle.Model:
    """Make ``model``'s evaluations report the mean loss over the evaluation set (see the module docstring).

    Idempotent; returns ``model``.
    """
    if not isinstance(model, paddle.Model) or model.__dict__.get(_MARK):
        return model
    run_one_epoch = model._run_one_epoch  # hapi's loop over one epoch's batches (train, eval or predict)

    def run_with_mean_loss(data_loader: Any, callbacks: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
        if mode != "eval":
            return run_one_epoch(data_loader, callbacks, mode, *args, **kwargs)
        recorder = _LossRecorder(callbacks)
        logs = run_one_epoch(data_loader, recorder, mode, *args, **kwargs)
        mean = recorder.mean()
        if mean is not None and isinstance(logs, dict) and "loss" in logs:
            logs["loss"] = mean  # the same key and format as hapi's: one float per loss
        return logs

    model._run_one_epoch = run_with_mean_loss
    model.__dict__[_MARK] = True
    return model
