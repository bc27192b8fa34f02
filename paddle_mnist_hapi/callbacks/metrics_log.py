"""``MetricsLog``: one JSON-lines metrics file per run, and PNG plots of it.

Each line is one record: ``{"kind": "step" | "epoch" | "eval", "step": <global
step>, "epoch": <epoch>, "loss": ..., "acc": ..., "lr": ...}``. ``step``
records come every ``log_freq`` batches; an ``epoch`` record at every epoch
end holds the epoch's mean training loss, its metrics and the learning rate of
its last batch; an ``eval`` record follows each evaluation inside ``fit`` (its
``loss`` is the mean over the evaluation set). ``step`` counts training
batches over the whole run (across ``fit`` calls and resumes) and is the
callback's resumable state: when a run resumes from a checkpoint taken at step
``S``, the records the interrupted run wrote after ``S`` are dropped, so the
file of a resumed run equals the file of the uninterrupted one. Records hold
no wall-clock times for the same reason.

Examples:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> metrics = MetricsLog(path, log_freq=1)
    >>> metrics.on_train_begin()
    >>> metrics.on_train_batch_begin(0); metrics.on_train_batch_end(0, {"loss": [0.5], "acc": 0.75})
    >>> metrics.on_train_end()
    >>> json.loads(path.read_text())
    {'kind': 'step', 'step': 1, 'epoch': 0, 'loss': 0.5, 'acc': 0.75}
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import paddle_mnist_hapi
from paddle_mnist_hapi._private import hapi_loop
from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import (
    RunningMean,
    StatefulCallback,
    is_rank0,
    log_values,
    published_scalars,
    scalar,
)
from paddle_mnist_hapi.callbacks.lr import current_lr
from paddle_mnist_hapi.errors import ConfigError, PaddleMnistError
from paddle_mnist_hapi.metrics_file import plot_metrics, read_metrics

__all__ = ["MetricsLog", "plot_metrics", "read_metrics"]

log = logging.getLogger(__name__)


class MetricsLog(StatefulCallback):
    """Write training and evaluation metrics to a JSON-lines file; plot them at the end of training.

    Args:
        path (str | PathLike, optional): the ``.jsonl`` file; its directory is created.
            None: ``metrics.jsonl`` in the run directory, ``fit(save_dir=...)`` or
            ``runs/<script name>`` (resolved when training begins). Default: None.
        log_freq (int, optional): write a ``step`` record every this many batches. Default: 10.
        plots_dir (str | PathLike, optional): where :func:`plot_metrics` writes its PNGs at
            the end of each ``fit``, in a background process (see :meth:`wait_plots`);
            None writes no plots. Default: None.

    Examples:
        >>> MetricsLog("runs/x/metrics.jsonl", log_freq=50).log_freq
        50
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        log_freq: int = 10,
        plots_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if path is not None and (not isinstance(path, (str, os.PathLike)) or not str(path)):
            raise ConfigError(f"path must be a file path for the metrics, or None. Received: path={path!r}")
        check_int("log_freq", log_freq, 1)
        if plots_dir is not None and not isinstance(plots_dir, (str, os.PathLike)):
            raise ConfigError(f"plots_dir must be a directory path or None. Received: plots_dir={plots_dir!r}")
        self.path: Path | None = None if path is None else Path(path)
        self.log_freq = log_freq
        self.plots_dir = None if plots_dir is None else Path(plots_dir)
        self._file: IO[str] | None = None
        self._started = False  # this instance has opened its file once (later fits append)
        self._resumed_at: int | None = None  # the global step of a loaded checkpoint, until the file is trimmed to it
        self._lr: float | None = None
        self._plotter: subprocess.Popen[str] | None = None
        super().__init__()

    def reset_state(self) -> None:
        self.global_step = 0
        self.epoch = 0
        self._epoch_loss = RunningMean()

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "epoch": self.epoch, "epoch_loss": self._epoch_loss.state()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self._epoch_loss = RunningMean(state.get("epoch_loss"))
        self._close()
        self._resumed_at = self.global_step

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # The step continues across fit calls: no reset here (state was set at construction or loaded).
        if self.path is None:
            self.path = hapi_loop.default_run_dir() / "metrics.jsonl"

    def _open(self) -> IO[str]:
        if self._file is None:
            if self.path is None:
                raise ConfigError("MetricsLog(path=None) resolves its file when training begins; train first.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._resumed_at is not None:
                if self.path.exists():
                    kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= self._resumed_at]
                    self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            elif not self._started:
                self.path.write_text("")
            self._file = self.path.open("a")
            self._started, self._resumed_at = True, None
        return self._file

    def _write(self, kind: str, values: dict[str, float], epoch: int) -> None:
        if not is_rank0():
            return
        record = {"kind": kind, "step": self.global_step, "epoch": epoch, **values}
        file = self._open()
        file.write(json.dumps(record) + "\n")
        file.flush()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self._lr = current_lr(self.model) if self.model is not None else None

    def _with_lr(self, values: dict[str, float]) -> dict[str, float]:
        return values if self._lr is None else {**values, "lr": self._lr}

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.global_step += 1
        loss = (logs or {}).get("loss")
        if loss is not None:
            self._epoch_loss.add(scalar(loss), float((logs or {}).get("batch_size") or 1))
        extra = published_scalars(self.model)
        if self.global_step % self.log_freq == 0 or extra:
            self._write("step", {**self._with_lr(log_values(logs)), **extra}, self.epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = log_values(logs)
        mean = self._epoch_loss.value
        if mean is not None:
            values["loss"] = mean  # hapi's epoch logs hold the last batch's loss
        self._write("epoch", self._with_lr(values), self.epoch)
        self._epoch_loss = RunningMean()
        self.epoch += 1  # evaluation, which follows, belongs to the epoch just finished

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.model is None or getattr(self.model, "_test_dataloader", None) is None:
            return  # a stand-alone model.evaluate(), not the evaluation inside fit
        values = log_values(logs)
        if values:
            self._write("eval", values, self.epoch - 1)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close()
        if self.plots_dir is not None and is_rank0() and self.path is not None and self.path.exists():
            self._start_plots()
        super().on_train_end(logs)

    # -- plots, off the training thread ---------------------------------------------------------------

    def _start_plots(self) -> None:
        self.wait_plots()  # one plotting process at a time
        package_root = str(Path(paddle_mnist_hapi.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
        command = [sys.executable, "-m", "paddle_mnist_hapi.metrics_file", str(self.path), str(self.plots_dir)]
        try:
            self._plotter = subprocess.Popen(
                command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
            )
        except OSError as exc:  # no way to start a process here (an embedded interpreter, say): draw in this one
            log.warning("MetricsLog: drawing the plots in the training process (%s)", exc)
            plot_metrics(self.path, self.plots_dir)

    def wait_plots(self, timeout: float | None = None) -> list[Path]:
        """Wait for the plots of the last ``fit`` (drawn in a background process); return their paths.

        Returns an empty list when no plots are being drawn.

        Raises:
            PaddleMnistError: the plotting process failed (its error output is in the message).
        """
        plotter, self._plotter = self._plotter, None
        if plotter is None:
            return []
        out, err = plotter.communicate(timeout=timeout)
        if plotter.returncode != 0:
            raise PaddleMnistError(
                f"MetricsLog could not draw the plots of {self.path} into {self.plots_dir}: the plotting process "
                f"exited with {plotter.returncode}. Draw them by hand with plot_metrics(path, out_dir) to see why. "
                f"Its error output: {err.strip()[-1000:]}"
            )
        return [Path(line) for line in out.splitlines() if line]
