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

from paddle_mnist_hapi.errors import CheckpointError

log = logging.getLogger(__name__)

_FIT_CODE = inspect.unwrap(paddle.Model.fit).__code__


@dataclass
class FitLoop:
    """The locals of a running ``paddle.Model.fit`` that resuming needs."""

    train_loader: Any
    eval_loader: Any
    callbacks: Any  # hapi's CallbackList
    epochs: int
    eval_freq: int


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
    missing = [n for n in ("train_loader", "eval_loader", "cbks", "epochs", "eval_freq") if n not in names]
    if missing:
        raise CheckpointError(
            f"This Paddle version's fit loop has no {', '.join(missing)}; ResumeCkpt supports "
            f"paddlepaddle 3.3.x. Installed: {paddle.__version__}."
        )
    return FitLoop(names["train_loader"], names["eval_loader"], names["cbks"], names["epochs"], names["eval_freq"])


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
    if isinstance(sampler, ResumableSampler):
        return sampler.inner
    return sampler


class ResumableSampler:
    """Wraps a loader's batch sampler for one epoch: sets the shuffle epoch and
    skips the batches a checkpoint already covers.

    ``before`` runs just before the inner sampler starts (so RNG-seeded
    samplers draw the same permutation as in the original run) and ``after_skip``
    right after the skipped batches were drawn.
    """

    def __init__(
        self,
        inner: Any,
        epoch: int,
        skip: int = 0,
        before: Callable[[], None] | None = None,
        after_skip: Callable[[], None] | None = None,
        empty: bool = False,
    ) -> None:
        self.inner, self.epoch, self.skip, self.empty = inner, epoch, skip, empty
        self._before, self._after_skip = before, after_skip

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        if self.empty:
            return
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(self.epoch)
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


def install(loader: Any, sampler: ResumableSampler) -> None:
    """Make ``loader`` iterate ``sampler`` from its next ``iter()`` on."""
    loader.batch_sampler = sampler


def uninstall(loader: Any) -> None:
    """Put back the loader's own batch sampler."""
    sampler = getattr(loader, "batch_sampler", None)
    if isinstance(sampler, ResumableSampler):
        loader.batch_sampler = sampler.inner
