"""``StatefulCallback``: the contract between callbacks and ``ResumeCkpt``.

A stateful callback returns its state as JSON-serializable data from
``state_dict()`` and takes it back in ``load_state_dict()``. State that is
tensors (best weights, averaged weights) goes through ``state_tensors()`` /
``load_state_tensors()`` instead and is stored as safetensors, never pickled. ``ResumeCkpt``
finds every stateful callback of the same ``fit`` and saves and restores
them under their ``key``, without the user wiring anything.

A callback resets its state in ``on_train_begin`` unless state was loaded for
this ``fit`` (``ResumeCkpt`` may run before or after it in the list).

Two more things every library callback shares: ``set_model`` makes the model's
evaluations report the mean loss over the evaluation set (``eval_loss``), and
:func:`publish_scalars` / :func:`published_scalars` let a producer of extra
per-batch scalars (``TrainingHealth``) reach the writers (``VisualDL``,
``MetricsLog``) whatever their order in the list.

Examples:
    >>> class Counter(StatefulCallback):
    ...     def reset_state(self):
    ...         self.batches = 0
    ...     def on_train_batch_end(self, step, logs=None):
    ...         self.batches += 1
    ...     def state_dict(self):
    ...         return {"batches": self.batches}
    ...     def _load_state(self, state):
    ...         self.batches = state["batches"]
    >>> c = Counter()
    >>> c.load_state_dict({"batches": 7}); c.on_train_begin(); c.batches
    7
"""

from __future__ import annotations

import functools
from typing import Any

import paddle

from paddle_mnist_hapi.errors import ConfigError

__all__ = [
    "RunningMean",
    "StatefulCallback",
    "fit_callbacks",
    "is_rank0",
    "log_values",
    "publish_scalars",
    "published_scalars",
    "run_preflight",
    "scalar",
    "stateful_callbacks",
]


def is_rank0() -> bool:
    """Whether this process writes files: always in one process, rank 0 under ``paddle.distributed.launch``.

    Examples:
        >>> is_rank0()
        True
    """
    return paddle.distributed.ParallelEnv().local_rank == 0


def fit_callbacks() -> list[Any]:
    """The callbacks of the running ``paddle.Model.fit`` (empty outside one).

    Examples:
        >>> fit_callbacks()
        []
    """
    from paddle_mnist_hapi._private import hapi_loop
    from paddle_mnist_hapi.errors import CheckpointError

    try:
        return list(hapi_loop.find_fit_loop().callbacks.callbacks)
    except CheckpointError:
        return []


def stateful_callbacks(callbacks: Any) -> dict[str, StatefulCallback]:
    """The stateful callbacks among ``callbacks``, by ``key``.

    Raises:
        ConfigError: two of them share a key, so a checkpoint could not tell them apart.

    Examples:
        >>> stateful_callbacks([paddle.callbacks.ProgBarLogger()])
        {}
    """
    found: dict[str, StatefulCallback] = {}
    for callback in callbacks:
        if isinstance(callback, StatefulCallback):
            if callback.key in found:
                raise ConfigError(
                    f"Two stateful callbacks share the state key {callback.key!r}, so a checkpoint could not "
                    f"tell them apart. Give one of them another `state_key`. Received: {found[callback.key]!r} "
                    f"and {callback!r}"
                )
            found[callback.key] = callback
    return found


def scalar(value: Any) -> float:
    """hapi's log values (one-element lists, numpy scalars) as a float.

    Examples:
        >>> import numpy as np
        >>> scalar([0.5]), scalar(np.float64(2))
        (0.5, 2.0)
    """
    while isinstance(value, (list, tuple)):
        value = value[0]
    return float(value)


_NOT_METRICS = frozenset({"step", "batch_size", "steps", "metrics"})


def log_values(logs: dict[str, Any] | None) -> dict[str, float]:
    """The numeric values in hapi's ``logs`` (loss, metrics), as floats.

    Examples:
        >>> import numpy as np
        >>> log_values({"loss": [0.25], "acc": np.float64(0.5), "step": 3, "batch_size": 64})
        {'loss': 0.25, 'acc': 0.5}
    """
    values: dict[str, float] = {}
    for key, value in (logs or {}).items():
        if key in _NOT_METRICS:
            continue
        try:
            values[key] = scalar(value)
        except (TypeError, ValueError, IndexError):
            continue
    return values


_SCALARS_ATTRIBUTE = "_paddle_mnist_hapi_scalars"


def publish_scalars(model: Any, source: str, values: dict[str, float] | None) -> None:
    """Offer this batch's extra scalars (e.g. gradient norms) to the logging callbacks.

    A producer (``TrainingHealth``) publishes under its own ``source`` before the
    batch's ``on_train_batch_end`` (in ``on_train_batch_begin`` or while the batch
    trains) and clears its entry (``values=None``) at the next batch's begin.
    ``VisualDL`` and ``MetricsLog`` read :func:`published_scalars` in
    ``on_train_batch_end``, so their order in the callback list does not matter.

    Examples:
        >>> class Model: pass
        >>> model = Model()
        >>> publish_scalars(model, "health", {"grad_norm": 1.5}); published_scalars(model)
        {'grad_norm': 1.5}
        >>> publish_scalars(model, "health", None); published_scalars(model)
        {}
    """
    board = model.__dict__.setdefault(_SCALARS_ATTRIBUTE, {})
    if values:
        board[source] = dict(values)
    else:
        board.pop(source, None)


def published_scalars(model: Any) -> dict[str, float]:
    """The extra scalars published for the current batch, by name (see :func:`publish_scalars`)."""
    board = getattr(model, "__dict__", {}).get(_SCALARS_ATTRIBUTE) or {}
    return {name: value for values in board.values() for name, value in values.items()}


class RunningMean:
    """A sample-weighted running mean (e.g. of an epoch's batch losses) whose state is two JSON floats.

    Examples:
        >>> mean = RunningMean()
        >>> mean.add(1.0, 64); mean.add(4.0, 32)
        >>> mean.value, mean.state()
        (2.0, [192.0, 96.0])
    """

    def __init__(self, state: list[float] | None = None) -> None:
        self.total, self.weight = (float(state[0]), float(state[1])) if state else (0.0, 0.0)

    def add(self, value: float, weight: float = 1.0) -> None:
        self.total += value * weight
        self.weight += weight

    @property
    def value(self) -> float | None:
        """The mean, or None before anything was added."""
        return self.total / self.weight if self.weight else None

    def state(self) -> list[float]:
        return [self.total, self.weight]


def run_preflight(callback: paddle.callbacks.Callback) -> None:
    """Check the running ``fit``'s samples, labels, loss and InputSpec, once per ``fit``.

    Every callback of this library calls it first thing in ``on_train_begin``
    (see ``paddle_mnist_hapi._private.preflight``); outside ``fit`` it does nothing.

    Examples:
        >>> run_preflight(paddle.callbacks.Callback())  # not inside fit: nothing to check
    """
    from paddle_mnist_hapi._private import preflight

    preflight.check_fit(getattr(callback, "model", None))


def _with_preflight(hook: Any) -> Any:
    @functools.wraps(hook)
    def on_train_begin(self: Any, logs: dict[str, Any] | None = None) -> None:
        run_preflight(self)
        hook(self, logs)

    on_train_begin._runs_preflight = True  # type: ignore[attr-defined]
    return on_train_begin


class StatefulCallback(paddle.callbacks.Callback):
    """Base class of the library's callbacks that have state to resume.

    Subclasses implement ``reset_state``, ``state_dict`` and ``_load_state``.
    ``state_key`` (default: the class name) must be unique among the
    stateful callbacks of one ``fit``.
    """

    state_key: str = ""
    # True: NaNGuard's rollback (ResumeCkpt.restore_last_good) puts this callback's checkpointed state back
    # with the weights, because the state is derived from them (EMA's average). False (the default): the
    # state follows the run's position or history (counters, logs), which a rollback does not move back.
    restored_on_rollback: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every subclass's own on_train_begin first checks fit's inputs (once per fit), whether or not it
        # calls super(): a data or spec mistake is reported when training starts, never as a hang.
        super().__init_subclass__(**kwargs)
        hook = cls.__dict__.get("on_train_begin")
        if hook is not None and not getattr(hook, "_runs_preflight", False):
            cls.on_train_begin = _with_preflight(hook)  # type: ignore[method-assign]

    def __init__(self) -> None:
        super().__init__()
        self._state_loaded = False
        self.reset_state()

    def set_model(self, model: Any) -> None:
        """hapi's hook; also makes the model's evaluations report the mean loss (see ``eval_loss``)."""
        from paddle_mnist_hapi.callbacks.eval_loss import mean_eval_loss

        super().set_model(model)
        mean_eval_loss(model)

    @property
    def key(self) -> str:
        return self.state_key or type(self).__name__

    def reset_state(self) -> None:
        """Set the state a fresh training run starts from."""

    def state_dict(self) -> dict[str, Any]:
        """The state to checkpoint, as JSON-serializable data."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Apply ``state`` (as returned by ``state_dict``)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state``; it survives this fit's ``on_train_begin``."""
        self._load_state(state)
        self._state_loaded = True

    def state_tensors(self) -> dict[str, paddle.Tensor]:
        """Tensor state to checkpoint beside ``state_dict()`` (name -> tensor). Default: none."""
        return {}

    def load_state_tensors(self, tensors: dict[str, paddle.Tensor]) -> None:
        """Restore what ``state_tensors()`` returned; called by ``ResumeCkpt`` before ``load_state_dict``."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        run_preflight(self)
        if not self._state_loaded:
            self.reset_state()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._state_loaded = False
