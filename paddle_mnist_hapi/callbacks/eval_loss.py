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
rank reports the mean over all ranks' batches; the samples that
``DistributedBatchSampler`` repeats to give every rank as many (its padding,
which hapi also cuts off before its metrics) are not counted, so the figure is
the single-process one.

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

from collections.abc import Callable
from typing import Any

import numpy as np
import paddle

__all__ = ["mean_eval_loss", "real_samples"]

_MARK = "_paddle_mnist_hapi_mean_eval_loss"


class _LossRecorder:
    """Stands in for hapi's ``CallbackList`` in one evaluation: adds up each batch's loss, then passes it on."""

    def __init__(self, callbacks: Any) -> None:
        self._callbacks = callbacks
        self.sums: np.ndarray | None = None
        self.weight = 0.0
        self.noted: tuple[list[float], int] | None = None  # this batch's loss over its real samples, and their count

    def on_batch_end(self, mode: str, step: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        noted, self.noted = self.noted, None
        if noted is not None:
            self._add(np.asarray(noted[0], dtype=np.float64).reshape(-1), float(noted[1]))
        elif loss is not None:
            self._add(np.asarray(loss, dtype=np.float64).reshape(-1), float((logs or {}).get("batch_size") or 1))
        self._callbacks.on_batch_end(mode, step, logs)

    def _add(self, values: np.ndarray, weight: float) -> None:
        self.sums = values * weight if self.sums is None else self.sums + values * weight
        self.weight += weight

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


def real_samples(batch_sampler: Any) -> list[list[bool]] | None:
    """Which samples of each batch a ``DistributedBatchSampler`` yields on this rank are real, not padding.

    To give every rank as many samples, the sampler repeats the first ones of the data set
    (``total_size - len(dataset)`` of them). Their places are those of the same sampler over
    ``range(total_size)`` (no padding there) that hold a number ``>= len(dataset)``. None when
    there is no padding (or the sampler is of another kind).

    Examples:
        >>> rank1 = paddle.io.DistributedBatchSampler(range(5), batch_size=4, num_replicas=2, rank=1)
        >>> real_samples(rank1)   # 5 samples on 2 ranks: rank 1's third sample repeats sample 0
        [[True, True, False]]
    """
    if not isinstance(batch_sampler, paddle.io.DistributedBatchSampler):
        return None
    size, total = len(batch_sampler.dataset), batch_sampler.total_size
    if total <= size:
        return None
    twin = paddle.io.DistributedBatchSampler(
        range(total), batch_sampler.batch_size, num_replicas=batch_sampler.nranks, rank=batch_sampler.local_rank,
        shuffle=batch_sampler.shuffle, drop_last=batch_sampler.drop_last,
    )  # fmt: skip
    twin._acc_steps = getattr(batch_sampler, "_acc_steps", 1)
    if batch_sampler.shuffle:  # the pass under way drew its order from the epoch before the sampler's current one
        twin.epoch = max(batch_sampler.epoch - 1, 0)
    return [[position < size for position in batch] for batch in twin]


def _count_real_samples(model: paddle.Model, data_loader: Any, recorder: _LossRecorder) -> Callable[[], None]:
    """Under the launcher, note each batch's loss over its real samples only; return an undo."""
    from paddle_mnist_hapi._private.hapi_loop import batch_sampler_of

    loss, sampler = model._loss, batch_sampler_of(data_loader)
    if (
        loss is None
        or not isinstance(sampler, paddle.io.DistributedBatchSampler)
        or sampler.total_size <= len(sampler.dataset)
    ):
        return lambda: None
    masks: list[list[bool]] = []
    batches = 0

    def loss_over_real_samples(*args: Any) -> Any:
        nonlocal masks, batches
        if batches == 0:
            masks = real_samples(sampler) or []  # now: a shuffled pass has drawn its order
        full = loss(*args)
        mask = masks[batches] if batches < len(masks) else None
        batches += 1
        size = int(args[0].shape[0])
        if mask is None or len(mask) != size or all(mask):
            recorder.noted = ([float(v) for v in paddle.utils.flatten([full])], size)
        elif any(mask):
            keep = paddle.to_tensor([i for i, real in enumerate(mask) if real], dtype="int64")
            real = loss(*[paddle.gather(a, keep) for a in args])
            recorder.noted = ([float(v) for v in paddle.utils.flatten([real])], len(keep))
        else:
            recorder.noted = ([0.0 for _ in paddle.utils.flatten([full])], 0)  # padding only
        return full

    model._loss = loss_over_real_samples
    return lambda: setattr(model, "_loss", loss)


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
        multi_rank = paddle.distributed.ParallelEnv().nranks > 1 and paddle.in_dynamic_mode()
        undo = _count_real_samples(model, data_loader, recorder) if multi_rank else lambda: None
        try:
            logs = run_one_epoch(data_loader, recorder, mode, *args, **kwargs)
        finally:
            undo()
        mean = recorder.mean()
        if mean is not None and isinstance(logs, dict) and "loss" in logs:
            logs["loss"] = mean  # the same key and format as hapi's: one float per loss
        return logs

    model._run_one_epoch = run_with_mean_loss
    model.__dict__[_MARK] = True
    return model
