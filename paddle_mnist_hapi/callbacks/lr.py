"""Learning-rate callbacks: step a schedule per optimizer update, reduce it on a plateau.

hapi's default ``LRScheduler`` callback steps the schedule after every batch,
also after the micro-batches of ``fit(accumulate_grad_batches=k)`` that do not
update the weights, so a schedule sized in updates ends ``k`` times too early.
:class:`LRStepper` steps exactly when hapi updates. Paddle's own
``ReduceLROnPlateau`` does nothing when the learning rate is a scheduler;
:class:`ReduceLROnPlateau` here multiplies the scheduler's output by a factor,
so it works on top of any schedule (and on a constant learning rate).

Examples:
    >>> import paddle
    >>> from paddle_mnist_hapi.callbacks import LRStepper, ReduceLROnPlateau
    >>> callbacks = [LRStepper(), ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1)]
    >>> isinstance(callbacks[0], paddle.callbacks.LRScheduler)  # so hapi adds no default one
    True
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import paddle

from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.callbacks.base import run_preflight
from paddle_mnist_hapi.callbacks.monitor import Mode, MonitorCallback
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["LRStepper", "ReduceLROnPlateau", "ScaledLR", "current_lr"]

log = logging.getLogger(__name__)


def current_lr(model: paddle.Model) -> float | None:
    """The learning rate the optimizer applies now (after any plateau factor), or None without one.

    Examples:
        >>> import paddle
        >>> net = paddle.nn.Linear(2, 2)
        >>> model = paddle.Model(net)
        >>> model.prepare(paddle.optimizer.SGD(0.05, parameters=net.parameters()))
        >>> current_lr(model)
        0.05
    """
    optimizer = getattr(model, "_optimizer", None)
    if optimizer is None:
        return None
    return float(optimizer.get_lr())


class ScaledLR(paddle.optimizer.lr.LRScheduler):
    """A schedule whose output is another schedule's times ``factor``.

    It saves and loads exactly the wrapped schedule's state, so checkpoints of
    the optimizer keep their format; the factor is the state of the callback
    that owns it (:class:`ReduceLROnPlateau`).

    Args:
        inner (paddle.optimizer.lr.LRScheduler): the schedule to scale.
        factor (float, optional): the multiplier. Default: 1.0.

    Examples:
        >>> lr = ScaledLR(paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.5), factor=0.1)
        >>> round(lr(), 6), lr.step(), round(lr(), 6)
        (0.01, None, 0.005)
    """

    def __init__(self, inner: paddle.optimizer.lr.LRScheduler, factor: float = 1.0) -> None:
        # No super().__init__: it would step the inner schedule once.
        self.inner = inner
        self._factor = float(factor)  # underscored: not part of the schedule's configuration
        self.base_lr = inner.base_lr
        self.verbose = False

    @property
    def factor(self) -> float:
        return self._factor

    @factor.setter
    def factor(self, value: float) -> None:
        self._factor = float(value)

    @property  # type: ignore[override]
    def last_lr(self) -> float:
        return float(self.inner()) * self.factor

    @last_lr.setter
    def last_lr(self, value: float) -> None:  # the base class assigns it; the value is derived
        pass

    @property  # type: ignore[override]
    def last_epoch(self) -> int:
        return self.inner.last_epoch

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        self.inner.last_epoch = value

    def __call__(self) -> float:
        return self.last_lr

    def get_lr(self) -> float:
        return self.last_lr

    def step(self, epoch: int | None = None) -> None:
        self.inner.step(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def set_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.set_state_dict(state_dict)

    set_dict = set_state_dict

    def __repr__(self) -> str:
        return f"ScaledLR({type(self.inner).__name__}, factor={self.factor:g})"


class LRStepper(paddle.callbacks.LRScheduler):
    """Step the optimizer's schedule once per optimizer update, or once per epoch.

    With ``fit(accumulate_grad_batches=k)`` hapi updates the weights after
    every ``k``-th batch and after the last batch of an epoch; ``by='update'``
    steps the schedule exactly then. Being an ``LRScheduler`` subclass, it
    replaces the default one hapi adds to every ``fit``.

    Args:
        by (str, optional): ``'update'`` or ``'epoch'``. Default: ``'update'``.

    Examples:
        >>> stepper = LRStepper(by="epoch")
        >>> stepper.by_epoch, stepper.by_step
        (True, False)
    """

    def __init__(self, by: Literal["update", "epoch"] = "update") -> None:
        if by not in ("update", "epoch"):
            raise ConfigError(
                f"LRStepper steps the schedule per optimizer update or per epoch. Pass by='update' or "
                f"by='epoch'. Received: by={by!r}"
            )
        self.by = by
        super().__init__(by_step=by == "update", by_epoch=by == "epoch")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        run_preflight(self)

    def _schedule(self) -> paddle.optimizer.lr.LRScheduler | None:
        optimizer = getattr(self.model, "_optimizer", None)
        lr = getattr(optimizer, "_learning_rate", None)
        return lr if isinstance(lr, paddle.optimizer.lr.LRScheduler) else None

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        if self.by != "update":
            return
        accumulate = max(1, int(getattr(self.model, "_accumulate", 1) or 1))
        steps = (self.params or {}).get("steps")
        updated = (step + 1) % accumulate == 0 or (steps is not None and step + 1 == steps)
        schedule = self._schedule()
        if updated and schedule is not None:
            schedule.step()


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving, on top of any schedule.

    The schedule keeps running; its output is scaled by the accumulated factor
    (see :class:`ScaledLR`). The factor, the patience counter and the best
    value are resumable state.

    Args:
        monitor (str, optional): metric in hapi's eval logs (``'loss'``, ``'acc'``). Default: ``'loss'``.
        factor (float, optional): multiplier per reduction, between 0 and 1. Default: 0.1.
        patience (int, optional): evaluations without improvement to tolerate; the next one
            reduces (as in ``EarlyStopping``). Default: 2.
        min_factor (float, optional): the accumulated factor never goes below this. Default: 1e-3.
        cooldown (int, optional): evaluations after a reduction that are not counted. Default: 0.
        min_delta (float, optional): smallest change that counts as an improvement. Default: 0.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'``. Default: ``'auto'``.

    Examples:
        >>> plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0)
        >>> for loss in (1.0, 0.8, 0.9, 0.85):
        ...     plateau.on_eval_end({"loss": [loss]})
        >>> plateau.scale, plateau.wait
        (0.25, 0)
    """

    def __init__(
        self,
        monitor: str = "loss",
        factor: float = 0.1,
        patience: int = 2,
        min_factor: float = 1e-3,
        cooldown: int = 0,
        min_delta: float = 0.0,
        mode: Mode = "auto",
    ) -> None:
        if not isinstance(factor, (int, float)) or not 0 < factor < 1:
            raise ConfigError(f"factor must be between 0 and 1 (exclusive). Received: factor={factor!r}")
        check_int("patience", patience)
        check_int("cooldown", cooldown)
        if not isinstance(min_factor, (int, float)) or not 0 <= min_factor <= 1 or math.isnan(min_factor):
            raise ConfigError(f"min_factor must be between 0 and 1. Received: min_factor={min_factor!r}")
        self.factor = float(factor)
        self.patience = patience
        self.cooldown = cooldown
        self.min_factor = float(min_factor)
        self._float_lr: tuple[Any, float] | None = None  # (optimizer, its unscaled constant lr)
        super().__init__(monitor=monitor, mode=mode, min_delta=min_delta)

    def reset_state(self) -> None:
        super().reset_state()
        self.scale = 1.0
        self.wait = 0
        self.cooldown_left = 0
        self.reductions = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "scale": self.scale,
            "wait": self.wait,
            "cooldown_left": self.cooldown_left,
            "reductions": self.reductions,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.scale = float(state["scale"])
        self.wait = int(state["wait"])
        self.cooldown_left = int(state["cooldown_left"])
        self.reductions = int(state["reductions"])
        self._apply()

    def _apply(self) -> None:
        """Make the optimizer use ``self.scale`` (idempotent)."""
        optimizer = getattr(getattr(self, "model", None), "_optimizer", None)
        if optimizer is None:
            return
        lr = optimizer._learning_rate
        if isinstance(lr, ScaledLR):
            lr.factor = self.scale
        elif isinstance(lr, paddle.optimizer.lr.LRScheduler):
            optimizer._learning_rate = ScaledLR(lr, self.scale)
        else:  # a constant learning rate
            if self._float_lr is None or self._float_lr[0] is not optimizer:
                self._float_lr = (optimizer, float(lr))
            optimizer.set_lr(self._float_lr[1] * self.scale)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self._state_loaded:  # a new fit: fresh counters, but the learning rate stays reduced
            scale, reductions = self.scale, self.reductions
            self.reset_state()
            self.scale, self.reductions = scale, reductions
        self._apply()

    def on_monitor(self, value: float, improved: bool, logs: dict[str, Any]) -> None:
        if improved:
            self.wait = 0
        if self.cooldown_left > 0:  # evaluations right after a reduction do not count
            self.cooldown_left -= 1
            return
        if improved:
            return
        self.wait += 1
        if self.wait > self.patience and self.scale > self.min_factor:
            self.scale = max(self.scale * self.factor, self.min_factor)
            self.reductions += 1
            self.wait = 0
            self.cooldown_left = self.cooldown
            self._apply()
            log.info(
                "ReduceLROnPlateau: %s did not improve on %.6g; learning rate scale is now %.6g",
                self.monitor,
                self.best if self.best is not None else float("nan"),
                self.scale,
            )
