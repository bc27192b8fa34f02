"""``MetricsLog``: one JSON-lines metrics file per run, and PNG plots of it.

Each line is one record: ``{"kind": "step" | "epoch" | "eval", "step": <global
step>, "epoch": <epoch>, "loss": ..., "acc": ..., "lr": ...}``. ``step`` counts
training batches over the whole run (across ``fit`` calls and resumes) and is
the callback's resumable state: when a run resumes from a checkpoint taken at
step ``S``, the records the interrupted run wrote after ``S`` are dropped, so
the file of a resumed run equals the file of the uninterrupted one. Records
hold no wall-clock times for the same reason.

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
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import StatefulCallback, is_rank0, log_values
from paddle_mnist_hapi.callbacks.lr import current_lr
from paddle_mnist_hapi.errors import ConfigError, DataCorruptError

__all__ = ["MetricsLog", "plot_metrics", "read_metrics"]

log = logging.getLogger(__name__)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics file; an unfinished last line (a killed writer) is ignored.

    Raises:
        DataCorruptError: a line other than the last is not a JSON record.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.jsonl"
        >>> _ = path.write_text('{"kind": "step", "step": 1}\\n{"kind": "st')
        >>> read_metrics(path)
        [{'kind': 'step', 'step': 1}]
    """
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise DataCorruptError(
                f"Line {number} of the metrics file is not a JSON record, so the file is damaged. Delete the "
                f"line or the file. Received: path={str(path)!r}, line={line[:80]!r}"
            ) from exc
    return records


class MetricsLog(StatefulCallback):
    """Write training and evaluation metrics to a JSON-lines file; plot them at the end of training.

    Args:
        path (str | PathLike): the ``.jsonl`` file. Its directory is created.
        log_freq (int, optional): write a ``step`` record every this many batches. Default: 10.
        plots_dir (str | PathLike, optional): where :func:`plot_metrics` writes its
            PNGs at the end of training; None writes no plots. Default: None.

    Examples:
        >>> MetricsLog("runs/x/metrics.jsonl", log_freq=50).log_freq
        50
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        log_freq: int = 10,
        plots_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigError(f"path must be a file path for the metrics. Received: path={path!r}")
        check_int("log_freq", log_freq, 1)
        if plots_dir is not None and not isinstance(plots_dir, (str, os.PathLike)):
            raise ConfigError(f"plots_dir must be a directory path or None. Received: plots_dir={plots_dir!r}")
        self.path = Path(path)
        self.log_freq = log_freq
        self.plots_dir = None if plots_dir is None else Path(plots_dir)
        self._file: IO[str] | None = None
        self._started = False  # this instance has opened its file once (later fits append)
        self._resumed_at: int | None = None  # the global step of a loaded checkpoint, until the file is trimmed to it
        self._lr: float | None = None
        super().__init__()

    def reset_state(self) -> None:
        self.global_step = 0
        self.epoch = 0

    def state_dict(self) -> dict[str, Any]:
        return {"global_step": self.global_step, "epoch": self.epoch}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self._close()
        self._resumed_at = self.global_step

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # The step continues across fit calls: no reset here (state was set at construction or loaded).
        pass

    def _open(self) -> IO[str]:
        if self._file is None:
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
        if self.global_step % self.log_freq == 0:
            self._write("step", self._with_lr(log_values(logs)), self.epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._write("epoch", self._with_lr(log_values(logs)), self.epoch)
        self.epoch += 1  # evaluation, which follows, belongs to the epoch just finished

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.model is None or getattr(self.model, "_test_dataloader", None) is None:
            return  # a stand-alone model.evaluate(), not the evaluation inside fit
        values = log_values(logs)
        if values:
            self._write("eval", values, self.epoch - 1)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close()
        if self.plots_dir is not None and is_rank0() and self.path.exists():
            plot_metrics(self.path, self.plots_dir)
        super().on_train_end(logs)


def _series(records: Iterable[dict[str, Any]], kind: str, key: str, x: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for record in records:
        if record.get("kind") == kind and isinstance(record.get(key), (int, float)) and math.isfinite(record[key]):
            xs.append(record[x])
            ys.append(record[key])
    return xs, ys


def plot_metrics(metrics_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Plot a metrics file as ``loss.png``, ``accuracy.png`` and ``lr.png`` (per step and per epoch).

    Each PNG has two panels: the ``step`` records against the global step, and
    the ``epoch`` and ``eval`` records against the epoch. A quantity absent from
    the file gets no PNG.

    Examples:
        >>> import json, tempfile, pathlib
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> rows = [{"kind": "step", "step": s, "epoch": 0, "loss": 1 / s, "lr": 0.1} for s in (1, 2, 3)]
        >>> _ = (tmp / "m.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
        >>> [p.name for p in plot_metrics(tmp / "m.jsonl", tmp / "plots")]
        ['loss.png', 'lr.png']
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    records = read_metrics(metrics_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = {k for r in records for k in r if k not in ("kind", "step", "epoch")}
    acc = sorted(k for k in keys if k.startswith("acc"))
    written = []
    for name, key, title in (
        ("loss", "loss", "loss"),
        ("accuracy", acc[0] if acc else None, "accuracy"),
        ("lr", "lr", "learning rate"),
    ):
        if key is None:
            continue
        per_step = _series(records, "step", key, "step")
        per_epoch = {kind: _series(records, kind, key, "epoch") for kind in ("epoch", "eval")}
        if not per_step[0] and not any(xs for xs, _ in per_epoch.values()):
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        running = "" if key in ("loss", "lr") else " (epoch so far)"  # hapi's metrics accumulate over the epoch
        left.plot(*per_step, color="tab:blue", label=f"train {key}{running}")
        left.set(xlabel="global step", ylabel=title, title=f"{title} per step")
        for kind, marker, label in (("epoch", "o-", "train"), ("eval", "s--", "eval")):
            xs, ys = per_epoch[kind]
            if xs:
                right.plot([x + 1 for x in xs], ys, marker, label=f"{label} {key}")
        right.set(xlabel="epoch", ylabel=title, title=f"{title} per epoch")
        right.xaxis.set_major_locator(MaxNLocator(integer=True))
        for axes in (left, right):
            axes.grid(alpha=0.3)
            if axes.get_legend_handles_labels()[0]:
                axes.legend()
        if name == "lr":
            left.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(path)
    log.info("MetricsLog: wrote %s", ", ".join(str(p) for p in written) or "no plots (no metrics yet)")
    return written
