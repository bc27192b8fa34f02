"""``VisualDL``: a training board with learning rate, throughput, sample predictions and weights.

Paddle's built-in ``paddle.callbacks.VisualDL`` writes the loss and metrics
every batch (ignoring ``log_freq``), no learning rate, and restarts its step
at every ``fit``. This one writes, on one global step that continues across
``fit`` calls and resumes (its resumable state):

- ``train/loss``, ``train/<metric>``, ``train/lr``, ``train/samples_per_sec`` every ``log_freq`` batches;
- ``epoch/loss`` (the epoch's mean training loss), ``epoch/<metric>`` and
  ``epoch/lr`` (the rate of its last batch) at every epoch end, like Keras's
  ``epoch_*`` tags, so even a short run draws its curves;
- ``health/*`` (gradient and parameter norms) when a ``TrainingHealth`` callback publishes them;
- ``eval/<metric>`` after each evaluation (``eval/loss`` is the mean over the
  evaluation set), and ``eval/samples``: a grid of test images with their true
  and predicted labels, misclassified ones first (red);
- ``weights/<parameter>`` histograms every ``histogram_freq`` epochs;
- the run's hyper-parameters (VisualDL's HYPER PARAMETERS page, and as text).

All of a run goes to one log file (VisualDL shows one file per run
directory): later ``fit`` calls append to it, and a resumed run first drops
what the interrupted run wrote after its checkpoint. Only rank 0 writes; the
writer is opened on first use (``import visualdl`` creates ``~/.visualdl``)
and closed at the end of training. See the board with
``visualdl --logdir LOG_DIR --host 127.0.0.1 -L en --disable-telemetry``.

Examples:
    >>> import tempfile
    >>> board = VisualDL(tempfile.mkdtemp(), log_freq=20, histogram_freq=1, hparams={"seed": 0})
    >>> board.global_step, board.state_dict()
    (0, {'global_step': 0, 'epoch': 0, 'file': None, 'epoch_loss': [0.0, 0.0]})
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi._private import hapi_loop, static_graph
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
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["VisualDL", "prediction_grid", "trim_log"]

log = logging.getLogger(__name__)

#: How many evaluation images are scanned for the sample grid, at most.
MAX_SCANNED = 1024


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)


def _to_picture(image: np.ndarray) -> np.ndarray | None:
    """One input sample as a uint8 ``(H, W)`` or ``(H, W, 3)`` picture, or None if it is not an image."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 1 and array.size == 784:  # a flattened MNIST image
        array = array.reshape(28, 28)
    elif array.ndim == 3 and array.shape[0] == 1:  # CHW, grey
        array = array[0]
    elif array.ndim == 3 and array.shape[0] == 3:  # CHW, colour
        array = array.transpose(1, 2, 0)
    elif array.ndim != 2:
        return None
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return (scaled * 255).round().astype(np.uint8)


def prediction_grid(
    images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, columns: int = 8, scale: int = 3
) -> np.ndarray:
    """Tile images with ``true->predicted`` captions; misclassified tiles are framed in red.

    Pixel values are min-max scaled per image, so any normalization displays.

    Args:
        images (np.ndarray): ``(N, 1, H, W)``, ``(N, H, W)``, ``(N, 3, H, W)`` or ``(N, 784)``.
        labels (np.ndarray): ``N`` true class indices.
        predictions (np.ndarray): ``N`` predicted class indices.
        columns (int, optional): tiles per row. Default: 8.
        scale (int, optional): pixel upscaling per tile. Default: 3.

    Returns:
        np.ndarray: an RGB uint8 ``(height, width, 3)`` image.

    Examples:
        >>> grid = prediction_grid(np.zeros((10, 1, 28, 28)), np.arange(10), np.arange(10) % 9, columns=5)
        >>> grid.shape, grid.dtype
        ((216, 450, 3), dtype('uint8'))
    """
    from PIL import Image, ImageDraw, ImageFont

    labels, predictions = np.ravel(labels), np.ravel(predictions)
    pictures = [_to_picture(image) for image in images]
    if not pictures or any(p is None for p in pictures):
        raise ConfigError(
            "prediction_grid needs images shaped (N, H, W), (N, 1 or 3, H, W) or (N, 784). "
            f"Received: images.shape={np.shape(images)}"
        )
    height, width = pictures[0].shape[:2]  # type: ignore[union-attr]
    tile_w, tile_h, caption, pad = width * scale, height * scale, 18, 3
    try:
        font: Any = ImageFont.load_default(size=15)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    rows = -(-len(pictures) // columns)
    cell_w, cell_h = tile_w + 2 * pad, tile_h + caption + 2 * pad
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (picture, true, predicted) in enumerate(zip(pictures, labels, predictions, strict=True)):
        x, y = (index % columns) * cell_w, (index // columns) * cell_h
        tile = Image.fromarray(picture).convert("RGB").resize((tile_w, tile_h), Image.NEAREST)
        wrong = int(true) != int(predicted)
        color = (220, 30, 30) if wrong else (40, 150, 60)
        draw.rectangle([x, y, x + cell_w - 1, y + tile_h + 2 * pad - 1], fill=color if wrong else "white")
        canvas.paste(tile, (x + pad, y + pad))
        draw.text((x + pad, y + tile_h + pad), f"{int(true)}->{int(predicted)}", fill=color, font=font)
    return np.asarray(canvas)


def trim_log(path: str | os.PathLike[str], max_step: int) -> int:
    """Drop the records of a VisualDL log file with a step after ``max_step`` (and a torn last record).

    Meta-data and hyper-parameter records are kept. Returns how many records were dropped.

    Examples:
        >>> import tempfile
        >>> from visualdl import LogWriter
        >>> logdir = tempfile.mkdtemp()
        >>> with LogWriter(logdir=logdir, file_name="vdlrecords.1.log") as writer:
        ...     for step in (1, 2, 3):
        ...         writer.add_scalar("train/loss", 1.0 / step, step)
        >>> trim_log(os.path.join(logdir, "vdlrecords.1.log"), max_step=2)
        1
    """
    from google.protobuf.message import DecodeError
    from visualdl.proto import record_pb2

    path = Path(path)
    data = path.read_bytes()
    kept, offset, dropped = [], 0, 0
    while offset + 8 <= len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        end = offset + 8 + length
        if end > len(data):
            dropped += 1
            break
        try:
            record = record_pb2.Record.FromString(data[offset + 8 : end])
        except DecodeError:
            dropped += 1
            break
        late = [v.id > max_step and v.WhichOneof("one_value") not in ("meta_data", "hparam") for v in record.values]
        if late and all(late):
            dropped += 1
        else:
            kept.append(data[offset:end])
        offset = end
    if dropped:
        partial = path.with_name(path.name + ".tmp")
        partial.write_bytes(b"".join(kept))
        os.replace(partial, path)
    return dropped


def _hparam_value(value: Any) -> str | int | float:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float, str)):
        return value
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


class _PaddleVisualDL(paddle.callbacks.VisualDL):
    """Paddle's VisualDL as a base class: its ``__init__`` needs a ``log_dir`` that ours may decide later."""

    def __init__(self) -> None:
        paddle.callbacks.Callback.__init__(self)
        self.epochs = self.steps = None


class VisualDL(StatefulCallback, _PaddleVisualDL):
    """Write a VisualDL board during ``fit`` (see the module docstring for what it holds).

    A drop-in for ``paddle.callbacks.VisualDL(log_dir)`` (it is one, for hapi), with more on the board.

    Args:
        log_dir (str | PathLike, optional): the run's log directory (one run on the board).
            None: ``vdl/`` under ``fit(save_dir=...)``, else under ``runs/<script name>``
            (resolved when training starts, and logged). Default: None.
        log_freq (int, optional): keyword-only. Write the training scalars every this many batches. Default: 10.
        histogram_freq (int, optional): keyword-only. Weight histograms every this many epochs;
            0: never. Default: 0.
        images (int, optional): keyword-only. Images in the ``eval/samples`` grid; 0: no grid. Default: 16.
        hparams (dict, optional): keyword-only. Hyper-parameters to record besides the ones read
            from the model (network, optimizer, learning rate, batch size, epochs). Default: None.

    Examples:
        >>> VisualDL("runs/x/vdl", images=0).images
        0
        >>> VisualDL().log_dir is None  # decided by the fit it runs in
        True
    """

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        log_freq: int = 10,
        histogram_freq: int = 0,
        images: int = 16,
        hparams: dict[str, Any] | None = None,
    ) -> None:
        if log_dir is not None and (not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir)):
            raise ConfigError(f"log_dir must be a directory path or None. Received: log_dir={log_dir!r}")
        check_int("log_freq", log_freq, 1)
        check_int("histogram_freq", histogram_freq)
        check_int("images", images)
        if hparams is not None and not isinstance(hparams, dict):
            raise ConfigError(f"hparams must be a dict of names to values. Received: hparams={hparams!r}")
        super().__init__()
        self.log_dir: Path | None = Path(log_dir) if log_dir is not None else None
        self.log_freq = log_freq
        self.histogram_freq = histogram_freq
        self.images = images
        self.hparams = dict(hparams or {})
        self._writer: Any = None
        self._file_name: str | None = None  # one log file per run, appended to by later fits
        self._resumed_at: int | None = None  # the step of a loaded checkpoint, until the file is trimmed to it
        self._hparams_written = False
        self._batch_size: int | None = None
        self._window = (time.perf_counter(), 0)
        self._lr: float | None = None

    def _resolve_log_dir(self) -> None:
        """``log_dir=None``: ``default_run_dir() / 'vdl'``, decided once, inside the running ``fit``."""
        if self.log_dir is None:
            self.log_dir = hapi_loop.default_run_dir() / "vdl"
            if is_rank0():
                log.info("VisualDL: writing the board to %s", self.log_dir.resolve())

    # Paddle's VisualDL hooks that keep its own counters; this class counts in its state instead.
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_eval_begin(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def reset_state(self) -> None:
        self.global_step = 0
        self.epoch = 0
        self._epoch_loss = RunningMean()

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "file": self._file_name,
            "epoch_loss": self._epoch_loss.state(),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self._close()
        self.global_step = int(state["global_step"])
        self.epoch = int(state["epoch"])
        self._file_name = state.get("file")
        self._epoch_loss = RunningMean(state.get("epoch_loss"))
        self._resumed_at = self.global_step

    # -- writing -------------------------------------------------------------------------------------

    def writer(self) -> Any:
        """The ``visualdl.LogWriter`` of this run on rank 0 (opened on first use), None on other ranks."""
        if not is_rank0():
            return None
        if self._writer is None:
            from visualdl import LogWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            if self._file_name is None:  # a new run: a new file, newer than any other (the board shows the newest)
                stamp = int(time.time())
                while (self.log_dir / f"vdlrecords.{stamp:010d}.log").exists():
                    stamp += 1
                self._file_name = f"vdlrecords.{stamp:010d}.log"
            path = self.log_dir / self._file_name
            if self._resumed_at is not None and path.exists():
                dropped = trim_log(path, self._resumed_at)
                log.info(
                    "VisualDL: resumed at step %d; dropped %d later record(s) of %s", self._resumed_at, dropped, path
                )
            self._resumed_at = None
            with contextlib.redirect_stdout(io.StringIO()):  # visualdl prints when it appends to a file
                self._writer = LogWriter(logdir=str(self.log_dir), file_name=self._file_name)
            if not self._hparams_written:
                self._write_hparams()
        return self._writer

    def run_hparams(self) -> dict[str, str | int | float]:
        """The hyper-parameters recorded for this run: read from the model, then ``hparams``."""
        found: dict[str, Any] = {}
        model = self.model
        if model is not None:
            found["network"] = type(model.network).__name__
            optimizer = getattr(model, "_optimizer", None)
            if optimizer is not None:
                found["optimizer"] = type(optimizer).__name__
                schedule = getattr(optimizer, "_learning_rate", None)
                schedule = getattr(schedule, "inner", schedule)
                if isinstance(schedule, paddle.optimizer.lr.LRScheduler):
                    found["lr_schedule"] = type(schedule).__name__
                    found["lr"] = float(schedule.base_lr)
                else:
                    found["lr"] = float(optimizer.get_lr())
            loss = getattr(model, "_loss", None)
            if loss is not None:
                found["loss_fn"] = type(loss).__name__
        if self._batch_size:  # hapi does not pass batch_size to callbacks; the first batch tells
            found["batch_size"] = self._batch_size
        if (self.params or {}).get("epochs") is not None:
            found["epochs"] = self.params["epochs"]
        found.update(self.hparams)
        return {key: _hparam_value(value) for key, value in found.items()}

    def _write_hparams(self) -> None:
        hparams = self.run_hparams()
        metric_names = getattr(self.model, "_metrics_name", None)
        names = metric_names() if callable(metric_names) else ["loss"]
        self._writer.add_hparams(hparams, [f"eval/{name}" for name in names])
        self._writer.add_text("hparams", json.dumps(hparams, sort_keys=True), step=self.global_step)
        self._hparams_written = True

    def _scalars(self, prefix: str, values: dict[str, float]) -> None:
        writer = self.writer()
        if writer is None:
            return
        for name, value in values.items():
            writer.add_scalar(f"{prefix}/{name}", float(value), self.global_step)

    # -- hooks ---------------------------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._resolve_log_dir()
        # The step continues across fit calls: no reset here (state was set at construction or loaded).
        self._window = (time.perf_counter(), 0)

    def on_train_batch_begin(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self._lr = current_lr(self.model) if self.model is not None else None

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        self.global_step += 1
        started, samples = self._window
        batch_size = int((logs or {}).get("batch_size", 0))
        self._batch_size = self._batch_size or batch_size
        samples += batch_size
        self._window = (started, samples)
        loss = (logs or {}).get("loss")
        if loss is not None:
            self._epoch_loss.add(scalar(loss), float(batch_size or 1))
        extra = published_scalars(self.model)
        if extra:
            self._scalars("health", extra)
        if self.global_step % self.log_freq:
            return
        now = time.perf_counter()
        values = log_values(logs)
        if self._lr is not None:
            values["lr"] = self._lr
        if now > started and samples:
            values["samples_per_sec"] = samples / (now - started)
        self._scalars("train", values)
        self._window = (now, 0)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = log_values(logs)
        mean = self._epoch_loss.value
        if mean is not None:
            values["loss"] = mean  # hapi's epoch logs hold the last batch's loss
        if self._lr is not None:
            values["lr"] = self._lr
        self._scalars("epoch", values)
        self._epoch_loss = RunningMean()
        self.epoch += 1
        if self.histogram_freq and self.epoch % self.histogram_freq == 0 and self.model is not None:
            writer = self.writer()
            if writer is not None:
                weights = static_graph.network_arrays(self.model.network)  # numpy, in either mode
                for name, _ in self.model.network.named_parameters():
                    writer.add_histogram(f"weights/{name}", weights[name].ravel(), self.global_step, buckets=30)

    def on_eval_end(self, logs: dict[str, Any] | None = None) -> None:
        loader = getattr(self.model, "_test_dataloader", None)
        if loader is None:
            return  # a stand-alone model.evaluate(), not the evaluation inside fit
        self._scalars("eval", log_values(logs))
        writer = self.writer()
        if writer is not None and self.images:
            grid = self._sample_grid(loader)
            if grid is not None:
                writer.add_image("eval/samples", grid, self.global_step)
        if writer is not None:
            writer.flush()

    def _sample_grid(self, loader: Any) -> np.ndarray | None:
        """Predict up to ``MAX_SCANNED`` evaluation images; grid the misclassified first, then correct ones."""
        network = self.model.network
        n_inputs = len(self.model._inputs or []) or 1
        was_training = network.training
        network.eval()
        wrong: list[tuple[np.ndarray, int, int]] = []
        right: list[tuple[np.ndarray, int, int]] = []
        scanned = 0
        try:
            with paddle.no_grad():
                for batch in loader:
                    data = paddle.utils.flatten(batch)
                    if len(data) <= n_inputs:
                        return None  # no labels in the evaluation data
                    if static_graph.is_static(self.model):  # a program, not a callable: hapi's evaluation program
                        outputs = static_graph.predict(self.model, data[:n_inputs], data[n_inputs:])
                    else:
                        outputs = network(
                            *[paddle.to_tensor(x) if isinstance(x, np.ndarray) else x for x in data[:n_inputs]]
                        )
                    logits = _numpy(paddle.utils.flatten(outputs)[0])
                    predicted = logits.reshape(len(logits), -1).argmax(1)
                    images, labels = _numpy(data[0]), _numpy(data[n_inputs]).reshape(-1)
                    for image, true, guess in zip(images, labels, predicted, strict=False):
                        (wrong if true != guess else right).append((image, int(true), int(guess)))
                    scanned += len(labels)
                    if scanned >= MAX_SCANNED or (len(wrong) >= self.images // 2 and len(right) >= self.images):
                        break
        finally:
            if was_training:
                network.train()
        chosen = wrong[: self.images // 2]
        chosen += right[: self.images - len(chosen)]
        if not chosen or _to_picture(chosen[0][0]) is None:
            return None
        images, labels, predictions = (np.stack([c[i] for c in chosen]) for i in range(3))
        return prediction_grid(images, labels, predictions)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._close()
        super().on_train_end(logs)
