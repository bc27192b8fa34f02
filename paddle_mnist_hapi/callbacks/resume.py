"""``ResumeCkpt``: training that survives being killed and continues exactly.

One line in the user's script::

    model.fit(train_data, eval_data, epochs=10, batch_size=64, callbacks=[callbacks.ResumeCkpt()])

Run the same script again after it was killed and it continues from the
newest complete checkpoint, as if it had never stopped; run it after it
finished and it trains no more and says so; run it with a larger ``epochs``
and it trains the extra epochs. A checkpoint restores the model, the
optimizer (by parameter structure, so a model rebuilt in the same process
works), the LR schedule, epoch and step, the data order, every RNG, hapi's
running metrics, the AMP scaler and the state of every ``StatefulCallback``.
On SIGTERM (a preemption) it checkpoints after the current optimizer step
and stops; with ``max_time`` it stops before the time budget runs out; when
``fit`` raises, it checkpoints the last consistent state first. Checkpoints are
written in a background thread from a snapshot in host memory, one at a time;
``fit`` returns, or exits on a signal, only once they are on disk.

The pieces live apart: the run directory (:mod:`paddle_mnist_hapi.checkpoint.store`;
its checks, :mod:`~paddle_mnist_hapi.checkpoint.run_dir`), what to keep
(:mod:`~paddle_mnist_hapi.checkpoint.retention`), the training position
(:mod:`~paddle_mnist_hapi.checkpoint.position`), preemption
(:mod:`~paddle_mnist_hapi.checkpoint.preemption`), state capture
(:mod:`~paddle_mnist_hapi.checkpoint.state`), the background writes
(:mod:`~paddle_mnist_hapi.checkpoint.writer`) and hapi's loop
(:mod:`paddle_mnist_hapi._private.hapi_loop`). This class wires them to hapi's hooks.

Examples:
    >>> import tempfile, paddle
    >>> from paddle_mnist_hapi import MNIST, create_model, specs_for
    >>> def run(save_dir, epochs):
    ...     model = paddle.Model(create_model("linear"), *specs_for("linear"))
    ...     model.prepare(paddle.optimizer.Adam(1e-3, parameters=model.parameters()), paddle.nn.CrossEntropyLoss())
    ...     ckpt = ResumeCkpt(save_dir)
    ...     model.fit(MNIST("train", limit=128), batch_size=64, epochs=epochs, verbose=0, callbacks=[ckpt])
    ...     return ckpt
    >>> save_dir = tempfile.mkdtemp()
    >>> run(save_dir, 1).global_step
    2
    >>> report = run(save_dir, 2).report   # a new model continues at epoch 2
    >>> report["resumed_from"].endswith("ckpt-000000002"), report["start_epoch"]
    (True, 1)
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import paddle

from paddle_mnist_hapi._private import hapi_loop, static_graph
from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import is_rank0, log_values, run_preflight, scalar, stateful_callbacks
from paddle_mnist_hapi.callbacks.monitor import MonitorCallback, infer_mode
from paddle_mnist_hapi.checkpoint import retention
from paddle_mnist_hapi.checkpoint import state as S
from paddle_mnist_hapi.checkpoint.position import STOP_BY_CALLBACK, Position
from paddle_mnist_hapi.checkpoint.preemption import (
    StopRequest,
    agree,
    parse_max_time,
    parse_signals,
    updates_between_agreements,
)
from paddle_mnist_hapi.checkpoint.restore import latest_valid, load_network, load_weights
from paddle_mnist_hapi.checkpoint.run_dir import check_run_dir, check_save_dir
from paddle_mnist_hapi.checkpoint.store import CheckpointInfo, CheckpointStore, read_tensors
from paddle_mnist_hapi.checkpoint.writer import CheckpointWriter, all_finite
from paddle_mnist_hapi.errors import CheckpointError, CheckpointMismatchError, ConfigError

__all__ = ["ResumeCkpt", "load_weights"]

log = logging.getLogger(__name__)


def _refuse_removed(kwargs: dict[str, Any]) -> None:
    """An argument of an earlier release gets an error that says what replaced it; any other a TypeError."""
    if "weights_only" in kwargs:
        raise ConfigError(
            "ResumeCkpt no longer takes weights_only. To start a new run from another run's weights, give the new "
            "run its own directory and point init_from at the other run: ResumeCkpt('runs/finetune', "
            "init_from='runs/pretrain/checkpoints') (docs/checkpointing.md, 'Fine-tuning from another run'). "
            f"Received: weights_only={kwargs['weights_only']!r}"
        )
    raise TypeError(f"ResumeCkpt() got an unexpected keyword argument {next(iter(kwargs))!r}")


def _best_rule(monitor: str, mode: str, min_delta: float) -> MonitorCallback:
    """The shared monitor rule (``MonitorCallback.is_improvement``) that ranks checkpoints."""
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or not min_delta >= 0:
        raise ConfigError(f"min_delta must be a number >= 0. Received: min_delta={min_delta!r}")
    resolved = infer_mode(monitor) if mode == "auto" else mode  # a name that says neither: pass mode
    return MonitorCallback(monitor=monitor, mode=resolved, min_delta=min_delta)


def _augment_of(loader: Any) -> str | None:
    """The data augmentation of an ``InMemoryLoader`` (settings and seed), part of what a run is."""
    augment = getattr(loader, "augment", None)
    return None if augment is None else f"{augment!r}, seed={getattr(loader, 'seed', None)}"


class ResumeCkpt(paddle.callbacks.Callback):
    """Exact checkpoint/resume for ``paddle.Model.fit``; ``fit``'s ``epochs`` and ``num_iters`` are the run's totals.

    Args:
        save_dir (str|PathLike, optional): the run's checkpoint directory. None:
            ``<fit's save_dir>/checkpoints``, else ``runs/<script name>/checkpoints``
            (``runs/default/checkpoints`` in a notebook); logged at the start. Default: None.
        every_n_epochs (int, optional): checkpoint after every N-th epoch (the
            last epoch is always saved). Default: 1.
        every_n_steps (int, optional): also checkpoint mid-epoch every N
            batches (at the next optimizer update with ``accumulate_grad_batches``);
            resuming then continues mid-epoch. Default: None.
        keep_last (int, optional): newest checkpoints to keep. Default: 2.
        monitor (str, optional): an evaluation metric (``'acc'``, ``'loss'``);
            the ``keep_best`` best checkpoints by it are kept too. Default: None.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'`` (from the
            metric's name), as :class:`MonitorCallback`. Default: ``'auto'``.
        min_delta (float, optional): how much better a value must be to count as
            better. Default: 0.
        keep_best (int, optional): how many best checkpoints to keep. Default: 1.
        resume (bool, optional): continue from the newest valid checkpoint in
            ``save_dir``. With False, a ``save_dir`` that already holds
            checkpoints is an error (nothing is overwritten). Default: True.
        init_from (str|PathLike, optional): start a new run (fine-tuning) from
            the model weights of another run: a ``ckpt-*`` directory or a run
            directory (its newest checkpoint). Weights that do not fit are
            skipped and reported. Used only while ``save_dir`` has no
            checkpoint; a re-run continues the new run. The other run's
            directory is only read. Default: None.
        signals (sequence, optional): signals that checkpoint after the current
            optimizer step and stop (the process then exits with 128 + the
            signal number). ``()`` leaves signals alone. Default: ``('SIGTERM',)``.
        max_time (float|str, optional): seconds (or ``'DD:HH:MM:SS'``) this
            ``fit`` may take: it checkpoints and returns before the budget runs
            out. Default: None.
        async_save (bool, optional): write checkpoints in a background thread:
            the training thread copies the state to host memory and goes on; one
            write at a time, and ``fit`` returns (or exits on a signal) only when
            they are on disk. False writes each one on the training thread.
            Default: True.

    Attributes:
        report (dict): what the last ``fit`` did: ``save_dir`` (the run directory);
            ``resumed_from`` (the checkpoint it continued from, or None), ``start_epoch``
            and ``start_step`` (0-based epoch and batch within it where this ``fit``
            started), ``global_step`` (only when resumed: the step it resumed at);
            ``skipped`` (invalid newer checkpoints, each ``{"checkpoint", "reason"}``);
            ``callbacks_restored`` / ``callbacks_fresh`` (when resumed: keys of the
            stateful callbacks given their state back / that the checkpoint had none
            for); ``schedule_changed`` (when the LR schedule's settings changed: the
            difference); ``threads_changed`` (when resumed under another CPU thread
            count: the difference, logged as a warning); ``init_from`` and ``weights_skipped`` (when a new run started
            from another run's weights: that checkpoint, and the weights that did not
            fit); ``stopped`` (None, or why training stopped before the end: a signal
            name, ``'max_time'``, or ``'callback'`` when a callback such as
            ``EarlyStopping`` ended the run); ``finished`` (True when the run is over, so
            a re-run trains no more: it reached ``epochs`` or ``num_iters``, or a callback
            ended it; False when it was cut short and a re-run continues, or ``fit``
            raised).
        global_step (int): training batches done in this run, across resumes.

    Raises:
        ConfigError: a bad argument (at construction), or train data whose order
            cannot be replayed (at the start of ``fit``).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str] | None = None,
        *,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        keep_last: int = 2,
        monitor: str | None = None,
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 0.0,
        keep_best: int = 1,
        resume: bool = True,
        init_from: str | os.PathLike[str] | None = None,
        signals: Sequence[int | str] = ("SIGTERM",),
        max_time: float | str | None = None,
        async_save: bool = True,
        **removed: Any,
    ) -> None:
        super().__init__()
        if removed:
            _refuse_removed(removed)
        for name, value in (("every_n_epochs", every_n_epochs), ("keep_last", keep_last), ("keep_best", keep_best)):
            check_int(name, value, 1)
        if every_n_steps is not None:
            check_int("every_n_steps", every_n_steps, 1)
        if save_dir is not None:
            check_save_dir(save_dir)  # a file or a ckpt-* directory is refused here
        self.store: CheckpointStore | None = CheckpointStore(save_dir) if save_dir is not None else None
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.keep_last, self.keep_best = keep_last, keep_best
        self.monitor = monitor
        self._rule = _best_rule(monitor, mode, min_delta) if monitor else None
        self.resume = resume
        self.init_from = Path(init_from) if init_from is not None else None
        self._stop_request = StopRequest(parse_signals(signals), parse_max_time(max_time))
        self.report: dict[str, Any] = {}
        self.global_step = 0
        if not isinstance(async_save, bool):
            raise ConfigError(f"async_save must be True or False. Received: async_save={async_save!r}")
        self._writer = CheckpointWriter(background=async_save)
        self.last_saved: Path | None = None

    @property
    def save_dir(self) -> Path | None:
        """The checkpoint directory (None until ``fit`` starts when none was given)."""
        return self.store.save_dir if self.store is not None else None

    @property
    def monitor_mode(self) -> Literal["min", "max"] | None:
        return self._rule.mode if self._rule is not None else None

    @property
    def last_saved(self) -> Path | None:
        """The checkpoint this callback wrote last, or None; waits for a write in flight."""
        self._writer.join()
        return self._last_saved

    @last_saved.setter
    def last_saved(self, path: Path | None) -> None:
        self._last_saved = path

    # ------------------------------------------------------------ public helpers
    def _require_store(self) -> CheckpointStore:
        if self.store is None:
            raise CheckpointError("This ResumeCkpt has no directory yet: it is chosen when fit starts.")
        return self.store

    def best_path(self) -> Path | None:
        """The valid checkpoint with the best ``monitor`` value (``mode``, ``min_delta``), or None."""
        if self._rule is None or self.store is None:
            return None
        self._writer.join()
        infos = self.store.known() or [i for i in self.store.scan() if i.valid]
        best = retention.best_k(infos, 1, self._rule.is_improvement)
        return best[0].path if best else None

    def latest_path(self) -> Path | None:
        """The newest valid checkpoint, or None."""
        if self.store is None:
            return None
        self._writer.join()
        return next((i.path for i in self.store.scan() if i.valid), None)

    def restore_last_good(self) -> dict[str, Any]:
        """Reload model, optimizer, LR schedule, AMP scaler and RNG from the newest valid checkpoint.

        Stateful callbacks whose state follows the weights (``restored_on_rollback``:
        ``EMA``'s average) get their checkpointed state back too. Epoch and step
        counters of the running ``fit``, and the other callbacks' states, are not
        moved back (used by ``NaNGuard(on_nan='rollback')``).

        Raises:
            CheckpointError: there is no valid checkpoint yet.
        """
        self._writer.join()
        info = next((i for i in self.store.scan() if i.valid), None) if self.store is not None else None
        if info is None:
            raise CheckpointError(f"No valid checkpoint in {self.save_dir} to roll back to.")
        self._restore_tensors(info)
        S.set_scaler_state(self.model, info.state.get("amp_scaler"))
        state = self._state_of_this_rank(info.state)
        S.set_rng_state(state["rng"])
        rolled = [cb for cb in self._stateful.values() if cb.restored_on_rollback] if hasattr(self, "_stateful") else []
        restored, _ = self._restore_callbacks(info, state.get("callbacks", {}), rolled)
        log.warning("Rolled back model and optimizer%s to %s", "".join(f", {k}" for k in restored), info.path)
        return {"checkpoint": str(info.path), "epoch": info.state["epoch"], "global_step": info.global_step}

    # ------------------------------------------------------------ hapi hooks
    def set_model(self, model: Any) -> None:
        """hapi's hook; evaluations then report the mean loss, as with every callback of the library."""
        from paddle_mnist_hapi.callbacks.eval_loss import mean_eval_loss

        super().set_model(model)
        mean_eval_loss(model)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        run_preflight(self)
        self._stop_request.start_clock()
        self._loop = loop = hapi_loop.find_fit_loop()
        if self.store is None:
            check_save_dir(hapi_loop.default_run_dir() / "checkpoints")
            self.store = CheckpointStore(hapi_loop.default_run_dir() / "checkpoints")
            log.info("ResumeCkpt: checkpoints go to %s", self.store.save_dir)
        sampler = hapi_loop.replayable_sampler(loop.train_loader)
        self._steps_per_epoch = len(sampler)
        self._accumulate = int(getattr(self.model, "_accumulate", 1) or 1)
        self._others = list(loop.callbacks.callbacks)
        self._stateful = stateful_callbacks(self._others)
        self._reset_run_state()
        dataset = getattr(sampler, "dataset", None)
        self._fingerprint = S.fingerprint(
            self.model,
            batch_size=getattr(sampler, "batch_size", None),
            dataset_len=len(dataset) if dataset is not None else None,
            world_size=paddle.distributed.ParallelEnv().nranks,
            augment=_augment_of(loop.train_loader),
        )
        self._check_init_from()
        check_run_dir(self.save_dir)  # writable, and the same directory on every rank (every machine)
        if is_rank0():
            self.store.clean_tmp()
        self.report = {"save_dir": str(self.save_dir), "resumed_from": None, "start_epoch": 0, "start_step": 0}
        self.report["skipped"] = []
        resumed = self._resume() if self.resume else self._refuse_existing_run()
        if not resumed and self.init_from is not None:
            self._load_init_weights()
        remaining = self._position.remaining(loop.epochs, loop.num_iters)
        self._finished = remaining == 0
        if remaining and loop.num_iters is not None:
            self.model.num_iters = remaining  # hapi counts this fit's batches; num_iters is the run's total
        self.report["finished"] = self._finished
        if resumed:
            self._log_resume()
        self._install(sampler)
        if self._position.epoch > 0 or self._finished:
            self._mute()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._flush()
        position = self._position
        if epoch < position.epoch or self._finished:
            self._train.configure(epoch, empty=True)
            if self._eval is not None:
                self._eval.configure(None, empty=True)
            if self._finished:
                self.model.stop_training = True
            return
        self._set_workers(on=True)
        if self._eval is not None:
            self._eval.configure(None)
        skip, after_skip = (position.step_in_epoch if epoch == position.epoch else 0), None
        if self._resume_rng is not None and epoch == position.epoch:
            epoch_rng, rng = self._resume_rng
            S.set_rng_state(epoch_rng if skip else rng)
            if skip:
                after_skip = lambda: S.set_rng_state(rng)  # noqa: E731
                S.set_metric_states(self.model._metrics, self._resume_metrics or [])
            self._resume_rng = None
        # The epoch's order is drawn from the RNG as it is now, whatever the loader draws on the way
        # (a worker iterator takes a seed when it is created, not when a persistent one is reused).
        self._epoch_rng = epoch_rng = S.rng_state()
        before = lambda: S.set_rng_state(epoch_rng)  # noqa: E731
        position.epoch, position.step_in_epoch = epoch, skip
        self._train.configure(epoch, skip, before=before, after_skip=after_skip)
        self._step_offset = skip
        self._consistent = True
        if self._muted:
            self._unmute()
            for callback in self._others:
                if callback is not self:
                    callback.on_epoch_begin(epoch, logs)
        hapi_loop.show_position(self._others, skip)
        self._batch_clock = time.monotonic()

    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self._flush()

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        position = self._position
        position.global_step += 1
        position.step_in_epoch += 1
        self.global_step = position.global_step
        self._metrics_snapshot = S.copy_metric_states(self.model._metrics)
        now = time.monotonic()
        self._last_step_seconds = now - self._batch_clock
        self._step_seconds = max(self._step_seconds, self._last_step_seconds)
        self._batch_clock = now
        at_update = position.step_in_epoch % self._accumulate == 0 or position.step_in_epoch == self._steps_per_epoch
        if self.every_n_steps and position.global_step % self.every_n_steps == 0:
            self._want_mid_epoch = True
        if self._want_mid_epoch and at_update and position.step_in_epoch < self._steps_per_epoch:
            self._pending, self._want_mid_epoch = True, False
        if at_update and self._watch_stop and self._agreement_due(position):
            window = self._agree_every * self._step_seconds  # until the ranks next agree
            reason = self._stop_request.reason(window + self._eval_seconds, self._save_seconds)
            agreed, slowest = agree(reason, self._last_step_seconds)
            self._agree_every = updates_between_agreements(slowest) if self._ranks > 1 else 1
            if agreed is not None:
                self._stop_request.adopt(agreed)
                self._stop(agreed)

    def _agreement_due(self, position: Position) -> bool:
        """Whether the ranks agree on a stop after this update: every update in one process; under the
        launcher after the number of updates the last agreement set (about 0.1 s of training, see
        :func:`~paddle_mnist_hapi.checkpoint.preemption.updates_between_agreements`) and after every epoch's
        last, the same on every rank, so the all-reduce is not paid on every short step."""
        self._updates_since_agreement += 1
        due = self._ranks == 1 or self._updates_since_agreement >= self._agree_every
        if due or position.step_in_epoch == self._steps_per_epoch:
            self._updates_since_agreement = 0
            return True
        return False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch < self._position.epoch or self._finished:
            return
        self._consistent = False  # evaluation follows; a crash there leaves no checkpoint
        if self._position.step_in_epoch < self._steps_per_epoch:
            return  # the epoch ended early (num_iters, NaNGuard, a stop): the position stays mid-epoch
        self._position.epoch, self._position.step_in_epoch = epoch + 1, 0
        self._want_mid_epoch = False
        self._eval_logs = None
        if (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 >= self._loop.epochs:
            self._pending = True
        if self._stop_after_epoch:
            self.model.stop_training = True

    def on_eval_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._eval_clock = time.monotonic()

    def on_eval_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        # hapi also counts fit's evaluation batches against num_iters (right after this hook); the run's
        # num_iters counts training batches, so that a resumed run, which skips evaluations, stops where an
        # uninterrupted one does.
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.num_iters is not None and getattr(self.model, "num_iters", None) is not None:
            self.model.num_iters += 1

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        self._eval_seconds = max(self._eval_seconds, time.monotonic() - self._eval_clock)
        if not self._muted:
            self._eval_logs = dict(logs or {})

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        budget = self._loop.num_iters
        if not self._finished and self.model.stop_training:
            self._pending = True  # save where training stopped
            if self._stopped is None and not (budget is not None and self._position.global_step >= budget):
                self._position.stop = STOP_BY_CALLBACK  # EarlyStopping, NaNGuard ...: the run is over
        failure = self._flush_and_wait()  # raised once our hooks are undone
        self.report["stopped"] = self._stopped or self._position.stop
        self.report["finished"] = self._position.remaining(self._loop.epochs, self._loop.num_iters) == 0
        received = self._stop_request.received
        self._cleanup()
        if self._muted:
            self._unmute()
            for callback in self._others:
                if callback is not self:
                    callback.on_train_end(logs)
        if self._finished:
            self.model.stop_training = False
        if failure is not None:
            raise failure
        if received is not None:
            log.warning("ResumeCkpt: stopped on %s at global step %d; exiting.", received.name, self.global_step)
            raise SystemExit(128 + int(received))

    # ------------------------------------------------------------ internals
    def _reset_run_state(self) -> None:
        self._position = Position()
        self._step_offset = 0
        self.global_step = 0
        self._muted = self._pending = self._want_mid_epoch = self._consistent = False
        self._eval_logs: dict[str, Any] | None = None
        self._epoch_rng: dict[str, Any] | None = None
        self._resume_rng: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._resume_metrics: list[dict[str, Any]] | None = None
        self._metrics_snapshot: list[dict[str, Any]] = []
        self._stopped: str | None = None
        self._stop_after_epoch: str | None = None
        self._step_seconds = self._eval_seconds = self._save_seconds = 0.0
        self._batch_clock = self._eval_clock = time.monotonic()
        self._ranks, self._updates_since_agreement, self._agree_every = paddle.distributed.get_world_size(), 0, 1
        self._rank0 = is_rank0()  # both fixed for the fit: _flush does not ask Paddle again at every save
        self._last_step_seconds = 0.0
        self._undo: list[Callable[[], None]] = []
        self._workers: dict[int, int | None] = {}
        self.model.stop_training = False  # hapi keeps it from an earlier fit

    def _install(self, sampler: Any) -> None:
        """Take over the loaders' batch samplers, watch for exceptions and stop requests, for this fit."""
        loop = self._loop
        self._train = hapi_loop.EpochSampler(sampler)
        hapi_loop.install(loop.train_loader, self._train)
        self._undo.append(lambda: hapi_loop.uninstall(loop.train_loader))
        eval_sampler = hapi_loop.batch_sampler_of(loop.eval_loader) if loop.eval_loader is not None else None
        self._eval = hapi_loop.EpochSampler(eval_sampler) if eval_sampler is not None else None
        if self._eval is not None:
            hapi_loop.install(loop.eval_loader, self._eval)
            self._undo.append(lambda: hapi_loop.uninstall(loop.eval_loader))
        self._set_workers(on=False)
        self._undo.append(lambda: self._set_workers(on=True))
        self._undo.append(hapi_loop.guard_epochs(self.model, self._on_error, loop.callbacks))
        updater = self.model._adapter if static_graph.is_static(self.model) else self.model._optimizer
        self._undo.append(hapi_loop.watch_updates(updater, self._on_update))
        self._undo.append(hapi_loop.number_batches(loop.callbacks, lambda: self._step_offset, self._after_train_batch))
        self._watch_stop = not self._finished and bool(self._stop_request.signals or self._stop_request.max_time)
        if self._watch_stop:
            self._stop_request.start()
            self._undo.append(self._stop_request.stop)

    def _set_workers(self, on: bool) -> None:
        """Worker processes off while epochs before the resume point iterate nothing; back on after."""
        for loader in (self._loop.train_loader, self._loop.eval_loader):
            if loader is None:
                continue
            if not on and id(loader) not in self._workers:
                self._workers[id(loader)] = hapi_loop.set_workers(loader, 0)
            elif on and id(loader) in self._workers:
                hapi_loop.set_workers(loader, self._workers.pop(id(loader)))

    def _on_update(self) -> None:
        self._consistent = False  # the optimizer is changing the weights: not a state to checkpoint

    def _after_train_batch(self) -> None:
        if not self._muted:
            self._consistent = True  # every callback has finished the batch

    def _cleanup(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _stop(self, reason: str) -> None:
        """Stop after this optimizer step: checkpoint here; other callbacks see nothing more of this fit."""
        if self._stopped or self._stop_after_epoch:
            return
        log.warning("ResumeCkpt: stopping at global step %d (%s)", self._position.global_step, reason)
        if self._position.step_in_epoch >= self._steps_per_epoch:
            self._stop_after_epoch = reason  # let the epoch end and its evaluation run, then stop
            self._stopped = reason
            return
        self._stopped = reason
        self.model.stop_training = True
        self.model.num_iters = 1  # hapi leaves the epoch after this batch
        self._pending = True
        if self._eval is not None:
            self._eval.configure(None, empty=True)
        self._mute()

    def _on_error(self, exc: BaseException) -> None:
        """``fit`` is raising: write the last consistent, finite state (marked as such), undo our hooks."""
        if getattr(self, "_handled", None) is exc:
            return
        self._handled = exc
        try:
            position = self._position
            at_update = position.step_in_epoch % self._accumulate == 0
            if self._finished or paddle.distributed.get_world_size() > 1:
                pass  # under launch the other ranks are elsewhere: the newest regular checkpoint stands
            elif self._consistent and at_update:
                self._pending = True
                failure = self._flush_and_wait(crash={"type": type(exc).__name__, "message": str(exc)[:500]})
                if failure is None:
                    log.error("ResumeCkpt: fit raised %s; checkpointed the last consistent state first (%s)",
                              type(exc).__name__, self.last_saved)  # fmt: skip
                else:
                    log.error("ResumeCkpt: fit raised %s; checkpointing the last consistent state failed too: %s",
                              type(exc).__name__, failure)  # fmt: skip
            else:
                log.error(
                    "ResumeCkpt: fit raised %s in the middle of an optimizer step or an evaluation; the newest "
                    "checkpoint (%s) stands.", type(exc).__name__, self.latest_path(),
                )  # fmt: skip
        finally:
            self._pending = False  # a save due later is of no consistent state now: only the write in flight ends
            failure = self._flush_and_wait()  # the write in flight, if any, ends before fit raises
            if failure is not None:
                log.error("ResumeCkpt: %s", failure)
            self._cleanup()
            if self._muted:
                self._unmute()

    def _check_init_from(self) -> None:
        if self.init_from is None:
            return
        source, target = self.init_from.resolve(), self.save_dir.resolve()
        if source == target or target in source.parents or source in target.parents:
            raise ConfigError(
                "init_from must be another run's checkpoints, outside this run's save_dir, so the two runs' "
                "checkpoints never mix. Give the new run its own save_dir. "
                f"Received: init_from={str(self.init_from)!r}, save_dir={str(self.save_dir)!r}"
            )

    def _refuse_existing_run(self) -> bool:
        if any(info.valid for info in self.store.scan()):
            raise CheckpointError(
                f"{self.save_dir} already holds checkpoints of a run, and resume=False would overwrite them. "
                "Use another save_dir for a new run (init_from=... starts it from this run's weights), delete "
                f"the old checkpoints, or resume=True to continue. Received: save_dir={str(self.save_dir)!r}, "
                "resume=False"
            )
        return False

    def _load_init_weights(self) -> None:
        info = latest_valid(self.init_from)
        skipped = load_network(self.model.network, read_tensors(info.path / "model.safetensors"), strict=False)
        self.report.update(init_from=str(info.path), weights_skipped=skipped)
        log.info("ResumeCkpt: new run in %s, starting from the weights of %s (skipped: %s)",
                 self.save_dir, info.path, skipped or "none")  # fmt: skip

    def _mute(self) -> None:
        self._loop.callbacks.callbacks = [self]
        self._muted = True

    def _unmute(self) -> None:
        self._loop.callbacks.callbacks = self._others
        self._muted = False

    def _monitor_value(self) -> float | None:
        if not self.monitor or not self._eval_logs or self.monitor not in self._eval_logs:
            return None
        return scalar(self._eval_logs[self.monitor])

    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks: RNG and the running metrics (each rank sees its own batches; snapshots,
        made data by the writer), callbacks."""
        mid_epoch = self._position.step_in_epoch > 0
        return {
            "rng": S.rng_snapshot(),
            "epoch_rng": self._epoch_rng if mid_epoch else None,
            "metrics": self._metrics_snapshot if mid_epoch else None,  # a copy, replaced (not changed) per batch
            "callbacks": {key: copy.deepcopy(cb.state_dict()) for key, cb in self._stateful.items()},
        }

    def _flush(self, crash: dict[str, Any] | None = None) -> None:
        """Save if a save is due: snapshot here, write in the background (or here, ``async_save=False``)."""
        self._writer.raise_failure()  # a background write that failed stops training at the next step
        if not self._pending:
            return
        self._pending = False
        started = time.monotonic()
        mine = self._rank_state()
        ranks = [mine]
        if self._ranks > 1:  # every rank is here at the same step (crashes are not)
            ranks = []
            paddle.distributed.all_gather_object(ranks, mine)
        if not self._rank0:
            return
        optimizer = self.model._optimizer
        groups = S.training_tensors(self.model.network, optimizer)  # a static graph's: copies of its scope's values
        callback_tensors = {
            f"{key}/{name}": tensor for key, cb in self._stateful.items() for name, tensor in cb.state_tensors().items()
        }
        if callback_tensors:
            groups["callbacks"] = callback_tensors
        with static_graph.eager():
            tensors = self._writer.snapshot(groups)  # after the write in flight: at most one at a time
        position = self._position
        state = {
            "epoch": position.epoch,
            "step_in_epoch": position.step_in_epoch,
            "global_step": position.global_step,
            "stop": position.stop,
            "interrupted": self._stopped,
            "crash": crash,
            "lr": S.lr_state(optimizer) if optimizer is not None else None,
            **mine,
            "ranks": ranks[1:] if len(ranks) > 1 else None,  # rank 0's is above
            "amp_scaler": S.scaler_state(self.model),
            "eval": log_values(self._eval_logs),
            "monitor": self.monitor,
            "monitor_value": self._monitor_value(),
            "fingerprint": self._fingerprint,
            "versions": {"paddle": paddle.__version__},
        }
        store, step = self.store, position.global_step
        rule = self._rule.is_improvement if self._rule is not None else None

        def write() -> None:  # in the writer's thread: touches only the snapshot and the store
            for rank_state in (state, *(state["ranks"] or ())):
                rank_state["rng"] = S.jsonable_rng(rank_state["rng"])
                if rank_state["metrics"] is not None:
                    rank_state["metrics"] = S.jsonable_metric_states(rank_state["metrics"])
            if not all_finite(tensors["model"]):
                log.error("ResumeCkpt: the model has NaN/Inf values; this state is not checkpointed.")
                return
            self.last_saved = store.write(step, tensors, state)
            store.prune(retention.kept(store.known(), self.keep_last, self.keep_best, rule))

        self._writer.submit(write, f"ckpt-{step:09d} in {store.save_dir}")
        self._save_seconds = max(self._save_seconds, time.monotonic() - started, self._writer.seconds)

    def _flush_and_wait(self, crash: dict[str, Any] | None = None) -> CheckpointError | None:
        """Save if due and wait until the write is on disk; return (not raise) a failed write's error."""
        try:
            self._flush(crash)
            self._writer.wait()
        except CheckpointError as failure:
            return failure
        finally:
            self._writer.close()
            if self.store is not None:
                self.store.release_spares()
        return None

    def _restore_tensors(self, info: CheckpointInfo, lr_changed: bool = False) -> None:
        network, optimizer = self.model.network, self.model._optimizer
        load_network(network, read_tensors(info.path / "model.safetensors"), strict=True)
        if optimizer is not None:
            optimizer_file = info.path / "optimizer.safetensors"
            saved = read_tensors(optimizer_file) if optimizer_file.is_file() else {}
            S.load_optimizer_tensors(optimizer, network, saved)
            S.set_lr_state(optimizer, info.state.get("lr"), recompute=lr_changed)

    def _resume(self) -> bool:
        chosen = None
        for info in self.store.scan():
            if info.valid:
                chosen = info
                break
            self.report["skipped"].append({"checkpoint": str(info.path), "reason": info.reason})
            log.warning("ResumeCkpt: skipping %s: %s", info.path, info.reason)
        if chosen is None:
            if self.report["skipped"]:
                log.warning("ResumeCkpt: no valid checkpoint in %s; training from the start.", self.save_dir)
            return False
        state = chosen.state
        saved_print = state.get("fingerprint", {})
        diff = S.fingerprint_diff(saved_print, self._fingerprint)
        schedule_note = [d for d in diff if d.startswith("lr_schedule:")]
        same_kind = S.same_schedule_kind(saved_print.get("lr_schedule"), self._fingerprint["lr_schedule"])
        if diff and not (same_kind and diff == schedule_note):
            raise CheckpointMismatchError(
                f"The newest checkpoint {chosen.path} belongs to a different setup: " + "; ".join(diff) + ". "
                "Resume with the same model, optimizer, schedule type, batch size, data and world size; or start a "
                "new run from its weights in another directory: ResumeCkpt(new_save_dir, "
                f"init_from={str(self.save_dir)!r}) (this run's checkpoints stay as they are)."
            )
        threads_note = S.threads_change(saved_print, self._fingerprint)
        if threads_note:
            log.warning("ResumeCkpt: %s (%s): on CPUs where the thread count splits sums differently the run is no "
                        "longer bit-identical to an uninterrupted one; set OMP_NUM_THREADS to match.",
                        threads_note, chosen.path)  # fmt: skip
            self.report["threads_changed"] = threads_note
        if schedule_note:
            log.warning(
                "ResumeCkpt: the LR schedule changed since %s (%s); continuing at its step %s with the new settings.",
                chosen.path, schedule_note[0], (state.get("lr") or {}).get("last_epoch"),
            )  # fmt: skip
            self.report["schedule_changed"] = schedule_note[0]
        self._restore_tensors(chosen, lr_changed=bool(schedule_note))
        S.set_scaler_state(self.model, state.get("amp_scaler"))  # made first when hapi has none yet
        state = self._state_of_this_rank(state)
        restored, fresh = self._restore_callbacks(chosen, state.get("callbacks", {}), list(self._stateful.values()))
        self.report.update(callbacks_restored=restored, callbacks_fresh=fresh)
        self._position = Position.from_state(state)
        self.global_step = self._position.global_step
        S.set_rng_state(state["rng"])  # again at the resumed epoch's start: loaders may draw in between
        epoch_rng = state.get("epoch_rng") or (
            {**state["rng"], "numpy": state["epoch_start_numpy"]} if state.get("epoch_start_numpy") else None
        )
        self._resume_rng = (epoch_rng or state["rng"], state["rng"])
        self._resume_metrics = state.get("metrics")
        if state.get("crash"):
            log.warning("ResumeCkpt: %s was written when fit raised %s: %s", chosen.path,
                        state["crash"].get("type"), state["crash"].get("message"))  # fmt: skip
        self.report.update(
            resumed_from=str(chosen.path),
            start_epoch=self._position.epoch,
            start_step=self._position.step_in_epoch,
            global_step=self.global_step,
        )
        return True

    @staticmethod
    def _state_of_this_rank(state: dict[str, Any]) -> dict[str, Any]:
        rank = paddle.distributed.get_rank()
        if rank > 0 and state.get("ranks") and len(state["ranks"]) >= rank:
            state = {**state, **state["ranks"][rank - 1]}  # this rank's RNG, metrics and callback states
        return state

    def _restore_callbacks(
        self, chosen: CheckpointInfo, saved_states: dict[str, Any], callbacks: list[Any]
    ) -> tuple[list[str], list[str]]:
        """Load the checkpoint's state into ``callbacks``; return the keys restored and those it has none for."""
        callbacks_file = chosen.path / "callbacks.safetensors"
        saved_tensors = read_tensors(callbacks_file) if callbacks_file.is_file() else {}
        restored, fresh = [], []
        for callback in callbacks:
            key = callback.key
            if key in saved_states:
                prefix = f"{key}/"
                callback.load_state_tensors(
                    {k[len(prefix) :]: v for k, v in saved_tensors.items() if k.startswith(prefix)}
                )
                callback.load_state_dict(saved_states[key])
                restored.append(key)
            else:
                fresh.append(key)
        return restored, fresh

    def _log_resume(self) -> None:
        position = self._position
        if self._finished and position.stop:
            log.warning(
                "ResumeCkpt: training already finished (%s: a callback such as EarlyStopping or NaNGuard ended the "
                "run at epoch %d, global step %d); nothing left to train, whatever epochs says. To train on from its "
                "weights, start a new run from them: ResumeCkpt('<new save_dir>', init_from=%r) "
                "(docs/checkpointing.md, 'After early stopping').",
                self.report["resumed_from"], position.epoch + (position.step_in_epoch > 0), position.global_step,
                str(self.save_dir),
            )  # fmt: skip
        elif self._finished:
            log.warning(
                "ResumeCkpt: training already finished (%s: epoch %d of %d, global step %d); nothing left to train. "
                "Raise epochs (or num_iters) to train on.",
                self.report["resumed_from"], position.epoch, self._loop.epochs, position.global_step,
            )  # fmt: skip
        else:
            log.info(
                "ResumeCkpt: resuming from %s at epoch %d, batch %d (global step %d); restored callbacks: %s",
                self.report["resumed_from"], position.epoch + 1, position.step_in_epoch, position.global_step,
                ", ".join(self.report.get("callbacks_restored", [])) or "none",
            )  # fmt: skip
