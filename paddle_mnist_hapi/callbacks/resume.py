"""``ResumeCkpt``: training that survives being killed and continues exactly.

One line in the user's script::

    model.fit(train_data, eval_data, epochs=10, batch_size=64,
              callbacks=[callbacks.ResumeCkpt(save_dir="runs/lenet")])

Run the same script again after it was killed and it continues from the
newest complete checkpoint, as if it had never stopped; run it after it
finished and it trains no more and says so. A checkpoint restores the model,
the optimizer (by parameter structure, so a model rebuilt in the same process
works), the LR schedule, epoch and step, the data order, every RNG, hapi's
running metrics, the AMP scaler and the state of every ``StatefulCallback``.

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

import logging
import os
from pathlib import Path
from typing import Any, Literal

import paddle

from paddle_mnist_hapi._private import hapi_loop
from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import is_rank0, log_values, run_preflight, scalar, stateful_callbacks
from paddle_mnist_hapi.callbacks.monitor import infer_mode
from paddle_mnist_hapi.checkpoint import state as S
from paddle_mnist_hapi.checkpoint.store import CheckpointInfo, CheckpointStore, read_tensors
from paddle_mnist_hapi.errors import CheckpointError, CheckpointMismatchError, ConfigError

__all__ = ["ResumeCkpt", "load_weights"]

log = logging.getLogger(__name__)


def load_weights(
    target: paddle.Model | paddle.nn.Layer, checkpoint: str | os.PathLike[str], *, strict: bool = True
) -> list[str]:
    """Load a checkpoint's model weights (e.g. the best one, for evaluation or export).

    Args:
        target (paddle.Model|paddle.nn.Layer): the model to load into.
        checkpoint (str|PathLike): a ``ckpt-*`` directory, or a run directory
            (then its newest valid checkpoint).
        strict (bool, optional): refuse any name or shape mismatch. When False,
            load what fits and return the names that were skipped. Default: True.

    Raises:
        CheckpointError: no valid checkpoint there.
        CheckpointMismatchError: ``strict`` and the weights do not fit the model.
    """
    path = Path(checkpoint)
    store = CheckpointStore(path if not path.name.startswith("ckpt-") else path.parent)
    if path.name.startswith("ckpt-"):
        info = store.require(path)
    else:
        info = next((i for i in store.scan() if i.valid), None)
        if info is None:
            raise CheckpointError(
                f"No valid checkpoint in {path}. Expected ckpt-* directories written by ResumeCkpt. "
                f"Received: checkpoint={str(checkpoint)!r}"
            )
    network = target.network if isinstance(target, paddle.Model) else target
    return _load_network(network, read_tensors(info.path / "model.safetensors"), strict=strict)


def _load_network(network: paddle.nn.Layer, saved: dict[str, Any], *, strict: bool) -> list[str]:
    current = network.state_dict()
    bad = [k for k in current if k not in saved or list(saved[k].shape) != list(current[k].shape)]
    bad += [k for k in saved if k not in current]
    if bad and strict:
        raise CheckpointMismatchError(
            f"The checkpoint's weights do not fit this model: {len(bad)} tensors differ in name or shape "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). Build the model the checkpoint was "
            "written with, or load with weights_only=True / strict=False to take what fits."
        )
    fitting = {k: v for k, v in saved.items() if k in current and list(v.shape) == list(current[k].shape)}
    if not fitting:
        raise CheckpointMismatchError("No tensor of the checkpoint fits this model. Build the matching model.")
    network.set_state_dict(fitting)
    return sorted(set(bad))


class ResumeCkpt(paddle.callbacks.Callback):
    """Exact checkpoint/resume for ``paddle.Model.fit``.

    Args:
        save_dir (str|PathLike): the run's checkpoint directory.
        every_n_epochs (int, optional): checkpoint after every N-th epoch (the
            last epoch is always saved). Default: 1.
        every_n_steps (int, optional): also checkpoint mid-epoch every N
            optimizer steps; resuming then continues mid-epoch. Default: None.
        keep_last (int, optional): newest checkpoints to keep. Default: 2.
        monitor (str, optional): an evaluation metric (``'acc'``, ``'loss'``);
            the ``keep_best`` best checkpoints by it are kept too. Default: None.
        keep_best (int, optional): how many best checkpoints to keep. Default: 1.
        resume (bool, optional): continue from the newest valid checkpoint in
            ``save_dir``. With False, a ``save_dir`` that already holds
            checkpoints is an error (nothing is overwritten). Default: True.
        weights_only (bool, optional): on resume, load only the model weights
            that fit (e.g. after changing the model or optimizer) and start
            training from epoch 0. Default: False.

    Attributes:
        report (dict): what the last resume did (checkpoint, epoch, skipped ones and why).
        global_step (int): training batches done in this run, across resumes.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        *,
        every_n_epochs: int = 1,
        every_n_steps: int | None = None,
        keep_last: int = 2,
        monitor: str | None = None,
        keep_best: int = 1,
        resume: bool = True,
        weights_only: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("keep_last", keep_last), ("keep_best", keep_best)):
            check_int(name, value, 1)
        if every_n_steps is not None:
            check_int("every_n_steps", every_n_steps, 1)
        self.store = CheckpointStore(save_dir)
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.keep_last, self.keep_best = keep_last, keep_best
        self.monitor = monitor
        self.monitor_mode: Literal["min", "max"] | None = infer_mode(monitor) if monitor else None
        self.resume, self.weights_only = resume, weights_only
        self.report: dict[str, Any] = {}
        self.global_step = 0
        self.last_saved: Path | None = None

    @property
    def save_dir(self) -> Path:
        return self.store.save_dir

    # ------------------------------------------------------------ public helpers
    def best_path(self) -> Path | None:
        """The valid checkpoint with the best ``monitor`` value, or None."""
        scored = [i for i in self.store.scan() if i.valid and i.state.get("monitor_value") is not None]
        if not scored or self.monitor_mode is None:
            return None
        sign = 1 if self.monitor_mode == "min" else -1
        return min(scored, key=lambda i: (sign * i.state["monitor_value"], -i.global_step)).path

    def latest_path(self) -> Path | None:
        """The newest valid checkpoint, or None."""
        return next((i.path for i in self.store.scan() if i.valid), None)

    def restore_last_good(self) -> dict[str, Any]:
        """Reload model, optimizer, LR schedule and RNG from the newest valid checkpoint.

        Epoch and step counters of the running ``fit`` are not moved back (used
        by ``NaNGuard(on_nan='rollback')``).

        Raises:
            CheckpointError: there is no valid checkpoint yet.
        """
        info = next((i for i in self.store.scan() if i.valid), None)
        if info is None:
            raise CheckpointError(f"No valid checkpoint in {self.save_dir} to roll back to.")
        self._restore_tensors(info)
        S.set_rng_state(info.state["rng"])
        log.warning("Rolled back model and optimizer to %s", info.path)
        return {"checkpoint": str(info.path), "epoch": info.state["epoch"], "global_step": info.global_step}

    # ------------------------------------------------------------ hapi hooks
    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        run_preflight(self)
        self._loop = hapi_loop.find_fit_loop()
        self._sampler = hapi_loop.batch_sampler_of(self._loop.train_loader)
        if self._sampler is None:
            raise ConfigError(
                "ResumeCkpt needs to control the data order, so train_data must be a paddle.io.Dataset, a "
                "paddle.io.DataLoader or an InMemoryLoader (anything with a `batch_sampler`). "
                f"Received: {type(self._loop.train_loader).__name__}"
            )
        self._steps_per_epoch = len(self._sampler)
        self._others = list(self._loop.callbacks.callbacks)
        self._stateful = stateful_callbacks(self._others)
        self._muted = False
        self._pending = False
        self._eval_logs: dict[str, Any] | None = None
        self._epoch, self._step_in_epoch, self.global_step = 0, 0, 0
        self._start_epoch, self._start_step = 0, 0
        self._finished_noop = False
        self._epoch_numpy_state: list[Any] | None = None
        self._resume_numpy = (None, None)
        self._saved_metrics: list[dict[str, Any]] | None = None
        self.model.stop_training = False  # hapi keeps it from an earlier fit
        accumulate = int(getattr(self.model, "_accumulate", 1) or 1)
        self._mid_epoch_ok = accumulate == 1 or self._steps_per_epoch % accumulate == 0
        if self.every_n_steps and not self._mid_epoch_ok:
            log.warning(
                "ResumeCkpt: mid-epoch checkpoints are off: %d batches per epoch is not a multiple of "
                "accumulate_grad_batches=%d. Epoch checkpoints are still written.",
                self._steps_per_epoch,
                accumulate,
            )
        dataset = getattr(self._sampler, "dataset", None)
        self._fingerprint = S.fingerprint(
            self.model,
            batch_size=getattr(self._sampler, "batch_size", None),
            dataset_len=len(dataset) if dataset is not None else None,
            world_size=paddle.distributed.ParallelEnv().nranks,
        )
        if is_rank0():
            self.store.clean_tmp()
        self.report = {"resumed_from": None, "start_epoch": 0, "start_step": 0, "skipped": []}
        if self.resume:
            self._resume()
        elif any(info.valid for info in self.store.scan()):
            raise CheckpointError(
                f"{self.save_dir} already holds checkpoints of a run, and resume=False would overwrite them. "
                "Use another save_dir for a new run, delete the old checkpoints, or resume=True to continue. "
                f"Received: save_dir={str(self.save_dir)!r}, resume=False"
            )
        if self._start_epoch > 0 or self._finished_noop:
            self._mute()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._flush()
        train, evaluation = self._loop.train_loader, self._loop.eval_loader
        skipping = epoch < self._start_epoch or self._finished_noop
        if skipping:
            hapi_loop.install(train, hapi_loop.ResumableSampler(self._sampler, epoch, empty=True))
            eval_sampler = hapi_loop.batch_sampler_of(evaluation) if evaluation is not None else None
            if eval_sampler is not None:
                hapi_loop.install(evaluation, hapi_loop.ResumableSampler(eval_sampler, 0, empty=True))
            if self._finished_noop:
                self.model.stop_training = True
            return
        if evaluation is not None:
            hapi_loop.uninstall(evaluation)
        self._epoch, self._step_in_epoch = epoch, 0
        skip = self._start_step if epoch == self._start_epoch else 0
        if skip:
            self._step_in_epoch = skip
            start_state, ckpt_state = self._resume_numpy
            before = lambda: (S.set_numpy_rng_state(start_state), self._capture_epoch_numpy())  # noqa: E731
            after = lambda: S.set_numpy_rng_state(ckpt_state)  # noqa: E731
            hapi_loop.install(train, hapi_loop.ResumableSampler(self._sampler, epoch, skip, before, after))
            if self._saved_metrics is not None:
                S.set_metric_states(self.model._metrics, self._saved_metrics)
        else:
            hapi_loop.install(train, hapi_loop.ResumableSampler(self._sampler, epoch, 0, self._capture_epoch_numpy))
        if self._muted:
            self._unmute()
            for callback in self._others:
                if callback is not self:
                    callback.on_epoch_begin(epoch, logs)

    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self._flush()

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.global_step += 1
        self._step_in_epoch += 1
        if (
            self.every_n_steps
            and self._mid_epoch_ok
            and self.global_step % self.every_n_steps == 0
            and self._step_in_epoch < self._steps_per_epoch
        ):
            self._pending = True

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch < self._start_epoch or self._finished_noop:
            return
        self._epoch, self._step_in_epoch = epoch + 1, 0
        self._eval_logs = None
        if (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 >= self._loop.epochs:
            self._pending = True

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._muted:
            self._eval_logs = dict(logs or {})

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.model.stop_training and not self._finished_noop:
            self._pending = True  # record that training stopped early
        self._flush()
        hapi_loop.uninstall(self._loop.train_loader)
        if self._loop.eval_loader is not None:
            hapi_loop.uninstall(self._loop.eval_loader)
        if self._muted:
            self._unmute()
            for callback in self._others:
                if callback is not self:
                    callback.on_train_end(logs)
        if self._finished_noop:
            self.model.stop_training = False

    # ------------------------------------------------------------ internals
    def _capture_epoch_numpy(self) -> None:
        self._epoch_numpy_state = S.numpy_rng_state()

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

    def _flush(self) -> None:
        if not self._pending:
            return
        self._pending = False
        if not is_rank0():
            return
        network, optimizer = self.model.network, self.model._optimizer
        model_tensors = dict(network.state_dict())
        if not all(bool(paddle.isfinite(t).all()) for t in model_tensors.values() if paddle.is_floating_point(t)):
            log.error("ResumeCkpt: the model has NaN/Inf values; this state is not checkpointed.")
            return
        finished = self._epoch >= self._loop.epochs or bool(self.model.stop_training)
        monitor_value = self._monitor_value()
        state = {
            "epoch": self._epoch,
            "step_in_epoch": self._step_in_epoch,
            "global_step": self.global_step,
            "finished": finished and self._step_in_epoch == 0,
            "stop_training": bool(self.model.stop_training),
            "lr": S.lr_state(optimizer) if optimizer is not None else None,
            "rng": S.rng_state(),
            "epoch_start_numpy": self._epoch_numpy_state if self._step_in_epoch else None,
            "metrics": S.metric_states(self.model._metrics) if self._step_in_epoch else None,
            "amp_scaler": S.scaler_state(self.model),
            "callbacks": {key: cb.state_dict() for key, cb in self._stateful.items()},
            "eval": log_values(self._eval_logs),
            "monitor": self.monitor,
            "monitor_value": monitor_value,
            "fingerprint": self._fingerprint,
            "versions": {"paddle": paddle.__version__},
        }
        tensors = {"model": model_tensors}
        if optimizer is not None:
            tensors["optimizer"] = S.optimizer_tensors(optimizer, network)
        callback_tensors = {
            f"{key}/{name}": tensor for key, cb in self._stateful.items() for name, tensor in cb.state_tensors().items()
        }
        if callback_tensors:
            tensors["callbacks"] = callback_tensors
        self.last_saved = self.store.write(self.global_step, tensors, state)
        self._prune()

    def _prune(self) -> None:
        valid = [i for i in self.store.scan() if i.valid]
        keep = {i.path for i in valid[: self.keep_last]}
        best = self.best_path()
        if best is not None:
            sign = 1 if self.monitor_mode == "min" else -1
            scored = [i for i in valid if i.state.get("monitor_value") is not None]
            scored.sort(key=lambda i: (sign * i.state["monitor_value"], -i.global_step))
            keep |= {i.path for i in scored[: self.keep_best]}
        self.store.prune(keep)

    def _restore_tensors(self, info: CheckpointInfo) -> None:
        network, optimizer = self.model.network, self.model._optimizer
        _load_network(network, read_tensors(info.path / "model.safetensors"), strict=True)
        if optimizer is not None:
            optimizer_file = info.path / "optimizer.safetensors"
            saved = read_tensors(optimizer_file) if optimizer_file.is_file() else {}
            S.load_optimizer_tensors(optimizer, network, saved)
            S.set_lr_state(optimizer, info.state.get("lr"))

    def _resume(self) -> None:
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
            return
        state = chosen.state
        diff = S.fingerprint_diff(state.get("fingerprint", {}), self._fingerprint)
        if self.weights_only:
            skipped = _load_network(self.model.network, read_tensors(chosen.path / "model.safetensors"), strict=False)
            self.report.update(resumed_from=str(chosen.path), weights_only=True, weights_skipped=skipped)
            log.info("ResumeCkpt: loaded weights only from %s (skipped: %s)", chosen.path, skipped or "none")
            return
        if diff:
            raise CheckpointMismatchError(
                f"The newest checkpoint {chosen.path} belongs to a different setup: " + "; ".join(diff) + ". "
                "Resume with the same model, optimizer, schedule, batch size, data and world size; or use another "
                "save_dir to start a new run; or pass ResumeCkpt(..., weights_only=True) to load the weights alone."
            )
        self._restore_tensors(chosen)
        S.set_rng_state(state["rng"])
        S.set_scaler_state(self.model, state.get("amp_scaler"))
        callbacks_file = chosen.path / "callbacks.safetensors"
        saved_tensors = read_tensors(callbacks_file) if callbacks_file.is_file() else {}
        restored, fresh = [], []
        for key, callback in self._stateful.items():
            if key in state.get("callbacks", {}):
                prefix = f"{key}/"
                callback.load_state_tensors(
                    {k[len(prefix) :]: v for k, v in saved_tensors.items() if k.startswith(prefix)}
                )
                callback.load_state_dict(state["callbacks"][key])
                restored.append(key)
            else:
                fresh.append(key)
        self.global_step = state["global_step"]
        self._start_epoch, self._start_step = state["epoch"], state["step_in_epoch"]
        self._epoch, self._step_in_epoch = self._start_epoch, self._start_step
        if self._start_step:
            self._resume_numpy = (state["epoch_start_numpy"], state["rng"]["numpy"])
            self._saved_metrics = state.get("metrics")
        self._finished_noop = bool(state.get("finished")) and (
            state.get("stop_training") or self._start_epoch >= self._loop.epochs
        )
        if not self._finished_noop and self._start_epoch >= self._loop.epochs:
            self._finished_noop = True
        self.report.update(
            resumed_from=str(chosen.path),
            start_epoch=self._start_epoch,
            start_step=self._start_step,
            global_step=self.global_step,
            callbacks_restored=restored,
            callbacks_fresh=fresh,
            finished=self._finished_noop,
        )
        if self._finished_noop:
            log.warning(
                "ResumeCkpt: training already finished (%s: epoch %d of %d%s); nothing left to train.",
                chosen.path,
                self._start_epoch,
                self._loop.epochs,
                ", stopped early" if state.get("stop_training") else "",
            )
        else:
            log.info(
                "ResumeCkpt: resuming from %s at epoch %d, batch %d (global step %d); restored callbacks: %s",
                chosen.path,
                self._start_epoch + 1,
                self._start_step,
                self.global_step,
                ", ".join(restored) or "none",
            )
