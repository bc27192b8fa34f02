"""The one place that reaches into ``paddle.Model.fit``'s running loop.

hapi's ``fit`` has no start epoch and builds its data loaders and callback
list as locals that no callback can reach. Exact resume needs three of them:
the train loader (to set the shuffle epoch and skip batches already done),
the eval loader (to skip evaluations of epochs already done) and the
callback list (so that the user's other callbacks do not see epochs that are
being skipped). This module finds them in ``fit``'s frame, once, at
``on_train_begin``. It is tied to Paddle's hapi (pinned in setup.cfg) and
fails with a clear error if that loop ever changes.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paddle

from paddle_mnist_hapi._private import paddle_version
from paddle_mnist_hapi.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

_FIT_CODE = inspect.unwrap(paddle.Model.fit).__code__


@dataclass
class FitLoop:
    """The locals of a running ``paddle.Model.fit`` that resuming needs."""

    train_loader: Any
    eval_loader: Any
    callbacks: Any  # hapi's CallbackList
    epochs: int  # what the loop runs: ``fit``'s epochs, or ``num_iters // steps + 1`` with num_iters
    eval_freq: int
    num_iters: int | None  # ``fit(num_iters=...)`` as the user passed it


def find_fit_loop() -> FitLoop:
    """Locate the ``paddle.Model.fit`` call that is running the current callback."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not _FIT_CODE:
        frame = frame.f_back
    if frame is None:
        raise CheckpointError(
            "ResumeCkpt must run inside paddle.Model.fit (as one of its callbacks), but no running fit was "
            "found. Pass it as model.fit(..., callbacks=[ResumeCkpt(...)])."
        )
    names = frame.f_locals
    wanted = ("train_loader", "eval_loader", "cbks", "epochs", "eval_freq", "num_iters")
    missing = [n for n in wanted if n not in names]
    if missing:
        raise CheckpointError(
            f"This Paddle version's fit loop has no {', '.join(missing)}; ResumeCkpt supports "
            f"paddlepaddle{paddle_version.SUPPORTED} (docs/compat.md). Installed: {paddle.__version__}."
        )
    return FitLoop(
        names["train_loader"], names["eval_loader"], names["cbks"], names["epochs"], names["eval_freq"],
        names["num_iters"],
    )  # fmt: skip


DEFAULT_RUNS_ROOT = "runs"


def fit_save_dir() -> str | None:
    """``save_dir`` of the running ``paddle.Model.fit`` (None when not given or not inside ``fit``)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not _FIT_CODE:
        frame = frame.f_back
    return None if frame is None else frame.f_locals.get("save_dir")


def default_run_dir() -> Path:
    """Where a callback writes when the user gave it no path (documented in docs/getting-started.md).

    ``fit(save_dir=...)`` when the running ``fit`` has one, otherwise ``runs/<script name>``
    (``runs/default`` for an interactive session). Callbacks put their own sub-path under it:
    ``checkpoints/`` (ResumeCkpt), ``vdl/`` (VisualDL), ``metrics.jsonl`` (MetricsLog).
    """
    save_dir = fit_save_dir()
    if save_dir:
        return Path(save_dir)
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    return Path(DEFAULT_RUNS_ROOT) / (script if script.isidentifier() and not script.startswith("_") else "default")


def batch_sampler_of(loader: Any) -> Any | None:
    """The batch sampler a loader iterates (``paddle.io.DataLoader`` or ``InMemoryLoader``), or None."""
    sampler = getattr(loader, "batch_sampler", None)
    if isinstance(sampler, EpochSampler):
        return sampler.inner
    return sampler


def replayable_sampler(loader: Any) -> Any:
    """The batch sampler of ``fit``'s train data, after checking that its order can be replayed.

    Raises:
        ConfigError: a generator, an ``IterableDataset`` or a sampler whose order
            comes from a private random generator; the message says what to pass instead.
    """
    what = "ResumeCkpt replays the order of the training data, so it needs"
    instead = (
        "Pass a paddle.io.Dataset (fit shuffles it), a paddle.io.DataLoader over a map-style Dataset, or an "
        "InMemoryLoader."
    )
    if loader is None or not hasattr(loader, "batch_sampler"):
        raise ConfigError(
            f"{what} a loader with a `batch_sampler`; a generator or a plain iterable cannot be replayed. "
            f"{instead} Received: train_data of type {type(loader).__name__}"
        )
    dataset = getattr(loader, "dataset", None)
    if isinstance(dataset, paddle.io.IterableDataset) or getattr(loader, "dataset_kind", None) == 1:
        raise ConfigError(
            f"{what} a map-style data set (indexable, with a length); an IterableDataset streams its samples "
            f"in an order no sampler controls. {instead} Received: {type(dataset).__name__} (an IterableDataset)"
        )
    sampler = batch_sampler_of(loader)
    if sampler is None or not hasattr(sampler, "__len__"):
        raise ConfigError(
            f"{what} a batch sampler with a length. {instead} Received: batch_sampler="
            f"{type(sampler).__name__}, batch_size={getattr(loader, 'batch_size', None)!r}"
        )
    inner = getattr(sampler, "sampler", None)
    if getattr(inner, "generator", None) is not None:
        raise ConfigError(
            f"{what} an order drawn from the global RNGs it saves (numpy's, Paddle's) or from the sampler's "
            "epoch; this sampler draws from its own `generator`, which a checkpoint cannot capture. Use "
            f"RandomSampler without `generator` (or shuffle=True). Received: {type(inner).__name__}(generator=...)"
        )
    return sampler


class EpochSampler:
    """Stands in for a loader's batch sampler during one ``fit``; what it yields is set per epoch.

    ``configure`` picks, before each epoch, the shuffle epoch (``set_epoch``), how
    many batches to skip (already covered by a checkpoint) or that the epoch is
    empty (done before a resume). ``before`` runs just before the order is drawn
    (to set the RNG it is drawn from), ``after_skip`` right after the skipped
    batches were drawn. One instance serves the whole ``fit``, so a persistent
    worker iterator, which keeps the sampler it first saw, sees every change.
    Its length is the number of batches still to come, so hapi's "last batch of
    the epoch" (the final update of ``accumulate_grad_batches``) holds.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.configure(None)

    def configure(
        self,
        epoch: int | None,
        skip: int = 0,
        *,
        empty: bool = False,
        before: Callable[[], None] | None = None,
        after_skip: Callable[[], None] | None = None,
    ) -> None:
        """Set what the next ``iter()`` yields; ``epoch=None`` leaves the inner sampler's epoch alone."""
        self._epoch, self.skip, self.empty = epoch, skip, empty
        self._before, self._after_skip = before, after_skip

    @property
    def epoch(self) -> int | None:
        """The shuffle epoch the next pass draws (the inner sampler's own when not set), as samplers say it."""
        return self._epoch if self._epoch is not None else getattr(self.inner, "epoch", None)

    def __len__(self) -> int:
        return 0 if self.empty else len(self.inner) - self.skip

    def __iter__(self) -> Iterator[Any]:
        if self.empty:
            return
        if self._epoch is not None and hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(self._epoch)
        if self._before is not None:
            self._before()
        iterator = iter(self.inner)
        for _ in range(self.skip):
            next(iterator, None)
        if self._after_skip is not None:
            self._after_skip()
        yield from iterator

    def __getattr__(self, name: str) -> Any:  # batch_size, dataset, ... of the inner sampler
        return getattr(self.inner, name)


def install(loader: Any, sampler: EpochSampler) -> None:
    """Make ``loader`` (and a persistent worker iterator it already has) iterate ``sampler``."""
    loader.batch_sampler = sampler
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_batch_sampler"):
        iterator._batch_sampler = sampler


def uninstall(loader: Any) -> None:
    """Put back the loader's own batch sampler."""
    sampler = getattr(loader, "batch_sampler", None)
    if isinstance(sampler, EpochSampler):
        install(loader, sampler.inner)


def set_workers(loader: Any, num_workers: int | None) -> int | None:
    """Set a ``DataLoader``'s ``num_workers`` (None: leave it); return the previous value.

    Epochs done before a resume iterate nothing; with no workers they start no processes.
    """
    previous = getattr(loader, "num_workers", None)
    if num_workers is not None and previous is not None:
        loader.num_workers = num_workers
    return previous


def show_position(callbacks: Any, step_in_epoch: int) -> None:
    """Make hapi's progress bar count the epoch's batches from ``step_in_epoch`` (after a mid-epoch resume)."""
    for callback in callbacks:
        if isinstance(callback, paddle.callbacks.ProgBarLogger):
            callback.train_step = step_in_epoch


def guard_epochs(
    model: paddle.Model, on_error: Callable[[BaseException], None], callback_list: Any = None
) -> Callable[[], None]:
    """Call ``on_error(exc)`` when ``model.fit`` raises inside an epoch or an epoch-level hook; return an undo.

    hapi calls no callback on an exception. Its per-epoch runner is the one place every
    batch, data-loading step and batch callback goes through; ``callback_list``'s
    epoch-level dispatch (``on_begin``/``on_end`` of training and evaluation,
    ``on_epoch_begin``/``on_epoch_end``) covers an exception in any callback's other hooks.
    """
    original = model._run_one_epoch
    patched_before = model.__dict__.get("_run_one_epoch")  # another wrapper (e.g. the mean evaluation loss)
    active = True

    def guarded(call: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return call(*args, **kwargs)
            except BaseException as exc:
                if active:  # not after the undo (an on_train_end after ResumeCkpt's own)
                    on_error(exc)
                raise

        return run

    run_one_epoch = guarded(original)
    model._run_one_epoch = run_one_epoch
    hooks = ("on_begin", "on_end", "on_epoch_begin", "on_epoch_end") if callback_list is not None else ()
    for name in hooks:
        setattr(callback_list, name, guarded(getattr(callback_list, name)))

    def undo() -> None:
        nonlocal active
        active = False
        for name in hooks:
            callback_list.__dict__.pop(name, None)
        if model.__dict__.get("_run_one_epoch") is run_one_epoch:
            if patched_before is None:
                del model._run_one_epoch
            else:
                model._run_one_epoch = patched_before

    return undo


def watch_updates(optimizer: Any, on_update: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_update()`` each time the optimizer is about to change the weights; return an undo.

    ``optimizer`` is the model's optimizer, or for a static-graph model its adapter (the executor
    updates the weights in the adapter's ``train_batch``).
    """
    if optimizer is None:
        return lambda: None
    wrapped = []
    for name in ("step", "minimize", "train_batch"):  # hapi calls minimize (or the AMP scaler calls step)
        original = getattr(optimizer, name, None)
        if original is None:
            continue

        def updating(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            on_update()
            return _original(*args, **kwargs)

        setattr(optimizer, name, updating)
        wrapped.append(name)

    def undo() -> None:
        for name in wrapped:
            optimizer.__dict__.pop(name, None)

    return undo


def number_batches(
    callback_list: Any, offset: Callable[[], int], after_train_batch: Callable[[], None]
) -> Callable[[], None]:
    """Add ``offset()`` to the ``step`` hapi hands callbacks for training batches, and call
    ``after_train_batch()`` once every callback has finished one; return an undo.

    hapi numbers batches by ``enumerate`` over what the loader yields, so after a
    resume skipped ``k`` batches it would call batch ``k`` step 0.
    """
    on_begin, on_end = callback_list.on_batch_begin, callback_list.on_batch_end

    def numbered(mode: str, step: int | None, logs: dict[str, Any] | None) -> int | None:
        shift = offset() if mode == "train" else 0
        if shift and step is not None:
            step += shift
            if logs is not None and "step" in logs:
                logs["step"] = step
        return step

    def on_batch_begin(mode: str, step: int | None = None, logs: dict[str, Any] | None = None) -> None:
        on_begin(mode, numbered(mode, step, logs), logs)

    def on_batch_end(mode: str, step: int | None = None, logs: dict[str, Any] | None = None) -> None:
        on_end(mode, numbered(mode, step, logs), logs)
        if mode == "train":
            after_train_batch()

    callback_list.on_batch_begin, callback_list.on_batch_end = on_batch_begin, on_batch_end

    def undo() -> None:
        for name in ("on_batch_begin", "on_batch_end"):
            callback_list.__dict__.pop(name, None)

    return undo
