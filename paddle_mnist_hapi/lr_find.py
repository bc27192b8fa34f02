"""``lr_find``: a learning-rate range test on the user's own model and data.

A short sweep (Smith 2015, as fastai's and Lightning's ``lr_find``): one
training batch per learning rate, the rates growing exponentially from
``start_lr`` to ``end_lr``, the loss recorded and smoothed, the sweep stopped
once the loss diverges. The suggested rate is a tenth of the rate at the
smoothed loss's minimum (fastai's rule). Afterwards the network's weights, the
optimizer (its moments, created or not, and its learning rate or schedule),
hapi's metrics, the data's shuffle position and the random-number generators
are exactly as before, so the ``fit`` that follows is the same as without the
sweep. A PNG of loss against learning rate is written when ``plot_path`` is
given.

Examples:
    >>> import paddle, tempfile, pathlib
    >>> from paddle_mnist_hapi import MNIST, create_model, specs_for
    >>> net = create_model("linear")
    >>> model = paddle.Model(net, *specs_for("linear"))
    >>> model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    >>> before = net.state_dict()["layers.0.weight"].numpy().copy()
    >>> result = lr_find(model, MNIST("train", limit=1024), num_steps=30,
    ...                  plot_path=pathlib.Path(tempfile.mkdtemp()) / "lr_find.png")
    >>> 1e-6 <= result.suggestion <= 1.0, result.plot.name, len(result.lrs) <= 30
    (True, 'lr_find.png', True)
    >>> bool((net.state_dict()["layers.0.weight"].numpy() == before).all())  # the model is restored
    True
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["LRFindResult", "lr_find"]

log = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    """What :func:`lr_find` measured.

    Attributes:
        lrs (list[float]): the learning rate of each sweep step.
        losses (list[float]): the training loss of each step.
        smoothed (list[float]): ``losses`` smoothed by a centred moving average over a tenth of the
            sweep (centred, so the curve does not lag behind the rate).
        suggestion (float | None): a tenth of the rate at the smoothed loss's minimum; None when it never fell.
        plot (Path | None): the PNG, when one was written.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float | None = None
    plot: Path | None = None


class _SweepLR(paddle.optimizer.lr.LRScheduler):
    """Stands in for the optimizer's schedule during the sweep: the rate is set from outside."""

    def __init__(self, value: float) -> None:
        super().__init__(learning_rate=value)

    def set(self, value: float) -> None:
        self.last_lr = float(value)

    def get_lr(self) -> float:
        return float(self.last_lr)


class _Snapshot:
    """Everything a sweep changes, copied before it and put back after it."""

    def __init__(self, model: paddle.Model) -> None:
        self.model = model
        optimizer = model._optimizer
        self.learning_rate = optimizer._learning_rate
        self.schedule_state = (
            self.learning_rate.state_dict() if isinstance(self.learning_rate, paddle.optimizer.lr.LRScheduler) else None
        )
        self._save_weights()
        self.paddle_rng = paddle.get_rng_state()
        self.numpy_rng = np.random.get_state()
        self.python_rng = random.getstate()

    def _save_weights(self) -> None:
        """The network's state, the optimizer's accumulators and master weights."""
        model, optimizer = self.model, self.model._optimizer
        self.network = {name: t.detach().clone() for name, t in model.network.state_dict().items()}
        self.accumulators = {
            acc: {param: (t, t.detach().clone()) for param, t in per_param.items()}
            for acc, per_param in optimizer._accumulators.items()
        }
        self.created = set(optimizer._already_create_accumulator)
        self.master_weights = {k: (t, t.detach().clone()) for k, t in getattr(optimizer, "_master_weights", {}).items()}

    def _put_back_weights(self) -> None:
        model, optimizer = self.model, self.model._optimizer
        live = model.network.state_dict()
        with paddle.no_grad():
            for name, saved in self.network.items():
                live[name].copy_(saved, False)
            for per_param in self.accumulators.values():
                for tensor, saved in per_param.values():
                    tensor.copy_(saved, False)
            for tensor, saved in self.master_weights.values():
                tensor.copy_(saved, False)
        # accumulators the sweep created (a fresh optimizer) are dropped: the optimizer creates them again
        for acc in list(optimizer._accumulators):
            kept = {param: pair[0] for param, pair in self.accumulators.get(acc, {}).items()}
            if kept:
                optimizer._accumulators[acc] = kept
            else:
                del optimizer._accumulators[acc]
        optimizer._already_create_accumulator = set(self.created)
        if hasattr(optimizer, "_master_weights"):
            optimizer._master_weights = {k: pair[0] for k, pair in self.master_weights.items()}
        if self.schedule_state is None:
            optimizer.set_lr(float(self.learning_rate))

    def restore(self) -> None:
        model, optimizer = self.model, self.model._optimizer
        optimizer._learning_rate = self.learning_rate
        self._put_back_weights()
        if self.schedule_state is not None:
            self.learning_rate.set_state_dict(self.schedule_state)
        for metric in model._metrics:
            metric.reset()
        paddle.set_rng_state(self.paddle_rng)
        np.random.set_state(self.numpy_rng)
        random.setstate(self.python_rng)


class _ScopeSnapshot(_Snapshot):
    """A static-graph model's: its weights, accumulators and learning rate are variables of the global scope."""

    def _save_weights(self) -> None:
        model = self.model
        names = [
            *static_graph.state_names(model.network).values(),
            *static_graph.optimizer_names(model._optimizer, model.network).values(),
            static_graph.require_learning_rate_name(model),
        ]
        self.scope = {name: static_graph.read(name) for name in names}

    def _put_back_weights(self) -> None:
        for name, value in self.scope.items():
            static_graph.write(name, value)


def _batches(train_data: Any, batch_size: int) -> Iterator[list[Any]]:
    if isinstance(train_data, paddle.io.Dataset):
        loader: Any = paddle.io.DataLoader(train_data, batch_size=batch_size, shuffle=True, drop_last=True)
    elif hasattr(train_data, "__iter__"):
        loader = train_data
    else:
        raise ConfigError(
            "lr_find needs train_data as a paddle.io.Dataset, a paddle.io.DataLoader or an InMemoryLoader. "
            f"Received: {type(train_data).__name__}"
        )
    while True:
        produced = False
        for batch in loader:
            produced = True
            yield paddle.utils.flatten(batch)
        if not produced:
            raise ConfigError("lr_find got no batch from train_data. Pass data with at least one full batch.")


def _centred_average(values: list[float], window: int) -> list[float]:
    """A moving average centred on each point (shorter at the ends); non-finite values stay non-finite."""
    data = np.asarray(values, dtype=np.float64)
    half = window // 2
    out = []
    for index in range(len(data)):
        part = data[max(0, index - half) : index + half + 1]
        out.append(float(part.mean()) if np.isfinite(part).all() else float(data[index]))
    return out


def _suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """A tenth of the rate at the smoothed loss's minimum (fastai's rule): well inside the falling stretch,
    a decade before the loss turns up. The sweep's own rate nearest to it, or None when the loss never fell.
    """
    finite = np.where(np.isfinite(smoothed), smoothed, np.inf)
    lowest = int(np.argmin(finite))
    if lowest < max(2, len(lrs) // 10) or not finite[lowest] < finite[0]:
        return None
    target = math.log10(lrs[lowest] / 10)
    return float(lrs[int(np.argmin(np.abs(np.log10(lrs) - target)))])


def _plot(result: LRFindResult, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots()
    axes.plot(result.lrs, result.losses, color="tab:blue", alpha=0.3, label="loss per batch")
    axes.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    if result.suggestion is not None:
        index = result.lrs.index(result.suggestion)
        axes.plot([result.suggestion], [result.smoothed[index]], "o", color="tab:red", markersize=9,
                  label=f"suggested lr {result.suggestion:.2e}")  # fmt: skip
    axes.set_xscale("log")
    axes.set(xlabel="learning rate (log scale)", ylabel="training loss", title="learning-rate range test")
    finite = [v for v in result.losses if math.isfinite(v)]
    if finite:
        start = max(finite[: max(1, len(finite) // 10)])
        axes.set_ylim(min(finite) * 0.95, min(max(finite), 1.5 * start) * 1.02)
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def lr_find(
    model: paddle.Model,
    train_data: Any,
    *,
    batch_size: int = 64,
    start_lr: float = 1e-6,
    end_lr: float = 1.0,
    num_steps: int = 100,
    plot_path: str | os.PathLike[str] | None = None,
) -> LRFindResult:
    """Sweep the learning rate over ``num_steps`` training batches; restore everything; suggest a rate.

    Args:
        model (paddle.Model): a prepared model (optimizer and loss).
        train_data (Dataset | DataLoader | InMemoryLoader): training data; a Dataset is batched
            with ``batch_size`` and shuffled. Batches are reused when there are fewer than ``num_steps``.
        batch_size (int, optional): for a Dataset. Default: 64.
        start_lr (float, optional): the first rate. Default: 1e-6.
        end_lr (float, optional): the last rate. Default: 1.0.
        num_steps (int, optional): batches in the sweep (fewer when the loss diverges). Default: 100.
        plot_path (str | PathLike, optional): write the loss-against-rate PNG here. Default: None.

    Raises:
        ConfigError: the model is not prepared with an optimizer and a loss, or an argument is out of range.
    """
    if getattr(model, "_optimizer", None) is None or getattr(model, "_loss", None) is None:
        raise ConfigError(
            "lr_find trains the model for a few batches, so it needs model.prepare(optimizer, loss) first."
        )
    check_int("num_steps", num_steps, 2)
    check_int("batch_size", batch_size, 1)
    if not (isinstance(start_lr, (int, float)) and isinstance(end_lr, (int, float)) and 0 < start_lr < end_lr):
        raise ConfigError(f"Need 0 < start_lr < end_lr. Received: start_lr={start_lr!r}, end_lr={end_lr!r}")
    parameters = model._optimizer._parameter_list or []
    if parameters and isinstance(parameters[0], dict):
        raise ConfigError("lr_find does not support optimizers with parameter groups (one rate per group).")

    n_inputs = len(model._inputs or []) or 1
    rates = np.geomspace(start_lr, end_lr, num_steps)
    result = LRFindResult()
    static = static_graph.is_static(model)
    snapshot = _ScopeSnapshot(model) if static else _Snapshot(model)
    sampler = getattr(train_data, "batch_sampler", None)
    sampler_epoch = getattr(sampler, "epoch", None)  # a shuffling sampler's epoch counter moves as it is iterated
    optimizer = model._optimizer
    sweep = _SweepLR(float(rates[0]))
    optimizer._learning_rate = sweep
    undo_sweep, rate_variable = None, None
    if static and static_graph.has_schedule(model):
        undo_sweep = static_graph.use_schedule(model, sweep)  # the program reads its own schedule ...
    elif static:
        rate_variable = static_graph.require_learning_rate_name(model)  # ... or, for a constant rate, this one
    average, best = 0.0, math.inf  # a running (causal) average decides when the loss diverged
    try:
        batches = _batches(train_data, batch_size)
        for index, rate in enumerate(rates):
            sweep.set(float(rate))
            if rate_variable is not None:
                static_graph.write(rate_variable, np.asarray(rate))
            batch = next(batches)
            outputs = model.train_batch(batch[:n_inputs], batch[n_inputs:])
            loss = float(np.ravel(paddle.utils.flatten(outputs)[0])[0])
            average = 0.9 * average + 0.1 * loss
            running = average / (1 - 0.9 ** (index + 1))
            result.lrs.append(float(rate))
            result.losses.append(loss)
            if not math.isfinite(running) or running > 4 * best:
                break  # diverged: larger rates tell nothing more
            best = min(best, running)
    finally:
        if undo_sweep is not None:
            undo_sweep()
        snapshot.restore()
        if sampler_epoch is not None:
            sampler.epoch = sampler_epoch
    result.smoothed = _centred_average(result.losses, max(3, len(result.losses) // 10))
    result.suggestion = _suggest(result.lrs, result.smoothed)
    if plot_path is not None:
        result.plot = _plot(result, Path(plot_path))
    log.info(
        "lr_find: %d steps from %.1e to %.1e; suggested learning rate %s",
        len(result.lrs),
        result.lrs[0],
        result.lrs[-1],
        f"{result.suggestion:.2e}" if result.suggestion else "none (the loss never fell)",
    )
    return result
