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
    >>> callbacks = [LRStepper(), ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, verbose=0)]
    >>> isinstance(callbacks[0], paddle.callbacks.LRScheduler)  # so hapi adds no default one
    True
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Literal

import numpy as np
import paddle

from paddle_mnist_hapi._private import static_graph
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
        floor (float, optional): scaling never takes the output below this (nor above the
            schedule's own value). Default: 0.

    Examples:
        >>> lr = ScaledLR(paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.5), factor=0.1)
        >>> round(lr(), 6), lr.step(), round(lr(), 6)
        (0.01, None, 0.005)
    """

    def __init__(self, inner: paddle.optimizer.lr.LRScheduler, factor: float = 1.0, floor: float = 0.0) -> None:
        # No super().__init__: it would step the inner schedule once.
        self.inner = inner
        self._factor = float(factor)  # underscored: not part of the schedule's configuration
        self._floor = float(floor)
        self.base_lr = inner.base_lr
        self.verbose = False

    @property
    def factor(self) -> float:
        return self._factor

    @factor.setter
    def factor(self, value: float) -> None:
        self._factor = float(value)

    @property
    def floor(self) -> float:
        return self._floor

    @floor.setter
    def floor(self, value: float) -> None:
        self._floor = float(value)

    @property  # type: ignore[override]
    def last_lr(self) -> float:
        unscaled = float(self.inner())
        if self.factor >= 1:
            return unscaled * self.factor
        return max(unscaled * self.factor, min(self._floor, unscaled))

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


class ReduceLROnPlateau(MonitorCallback, paddle.callbacks.ReduceLROnPlateau):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving, on top of any schedule.

    A drop-in for ``paddle.callbacks.ReduceLROnPlateau``: Paddle 3.3's arguments in
    Paddle's order and defaults, and for a constant learning rate the same
    reductions at the same evaluations. Paddle's does nothing (it only warns) when
    the learning rate is a schedule; this one keeps the schedule running and
    scales its output by the accumulated factor (see :class:`ScaledLR`). The
    factor, the counters and the best value are resumable state.

    Args:
        monitor (str, optional): metric in hapi's eval logs (``'loss'``, ``'acc'``). Default: ``'loss'``.
        factor (float, optional): multiplier per reduction, ``new_lr = lr * factor``; a factor
            >= 1 raises ``ValueError``. Default: 0.1.
        patience (int, optional): evaluations without improvement after which the learning
            rate is reduced. Default: 10.
        verbose (int, optional): 1 prints each reduction, as Paddle does; 0 logs it at DEBUG level. Default: 1.
        mode (str, optional): ``'min'``, ``'max'`` or ``'auto'`` (``'max'`` for accuracy-like
            names, else ``'min'``); an unknown mode warns and means ``'auto'``. Default: ``'auto'``.
        min_delta (float, optional): smallest change that counts as an improvement. Default: 1e-4.
        cooldown (int, optional): evaluations after a reduction before counting resumes,
            exactly as Paddle (and Keras) count them. Default: 0.
        min_lr (float, optional): reductions never take the learning rate below this (a
            schedule on its own may go lower); once the reduced learning rate (of a schedule:
            its ``base_lr`` times the factor) is down to ``min_lr``, no more reductions. Default: 0.

    Examples:
        >>> plateau = ReduceLROnPlateau("loss", 0.5, 0, verbose=0)
        >>> for loss in (1.0, 0.8, 0.9, 0.85):
        ...     plateau.on_eval_end({"loss": [loss]})
        >>> plateau.scale, plateau.wait
        (0.25, 0)
    """

    def __init__(
        self,
        monitor: str = "loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 1,
        mode: Mode = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta, verbose=verbose)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or math.isnan(factor):
            raise ConfigError(f"factor must be a number between 0 and 1 (exclusive). Received: factor={factor!r}")
        if factor >= 1.0:  # Paddle's ValueError (ConfigError is one)
            raise ConfigError(
                f"ReduceLROnPlateau does not support a factor >= 1.0: it must reduce the learning rate. "
                f"Pass a factor between 0 and 1. Received: factor={factor!r}"
            )
        if factor <= 0:
            raise ConfigError(f"factor must be between 0 and 1 (exclusive). Received: factor={factor!r}")
        check_int("patience", patience)
        check_int("cooldown", cooldown)
        if isinstance(min_lr, bool) or not isinstance(min_lr, (int, float)) or not min_lr >= 0:
            raise ConfigError(f"min_lr must be a number >= 0. Received: min_lr={min_lr!r}")
        self.factor = float(factor)
        self.patience = patience
        self.cooldown = cooldown
        self.min_lr = float(min_lr)
        delta = self.min_delta
        self.monitor_op = (  # Paddle's attribute
            (lambda a, b: np.less(a, b - delta)) if self.mode == "min" else (lambda a, b: np.greater(a, b + delta))
        )
        self._float_lr: tuple[Any, float] | None = None  # (optimizer, its unscaled constant lr)
        self._unreachable_warned = False

    def reset_state(self) -> None:
        super().reset_state()
        self.scale = 1.0
        self.wait = 0
        self.cooldown_counter = 0
        self.reductions = 0
        self.epoch = 0  # evaluations seen, as Paddle counts them

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "scale": self.scale,
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
            "reductions": self.reductions,
            "epoch": self.epoch,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.scale = float(state["scale"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.reductions = int(state["reductions"])
        self.epoch = int(state["epoch"])
        self._apply()

    def _base_lr(self) -> float | None:
        """The unscaled learning rate: the constant one, or the schedule's ``base_lr``; None without a model."""
        optimizer = getattr(getattr(self, "model", None), "_optimizer", None)
        if optimizer is None:
            return None
        lr = optimizer._learning_rate
        if isinstance(lr, paddle.optimizer.lr.LRScheduler):
            return float(lr.base_lr)
        self._apply()  # records the constant
        return self._float_lr[1] if self._float_lr is not None else float(lr)

    def _apply(self) -> None:
        """Make the optimizer use ``self.scale`` (idempotent)."""
        optimizer = getattr(getattr(self, "model", None), "_optimizer", None)
        if optimizer is None:
            return
        if static_graph.is_static(self.model) and static_graph.learning_rate_name(self.model) is None:
            if not self._unreachable_warned:  # hapi's own bug; Paddle's callback only warns too
                self._unreachable_warned = True
                warnings.warn(
                    "ReduceLROnPlateau cannot change the learning rate: hapi built the static-graph training "
                    "program with an earlier optimizer (in the first prepare()) and a later prepare() does not "
                    "rebuild it. Build a new paddle.Model for the new optimizer.",
                    stacklevel=2,
                )
            return
        lr = optimizer._learning_rate
        if isinstance(lr, ScaledLR):
            lr.factor, lr.floor = self.scale, self.min_lr
        elif isinstance(lr, paddle.optimizer.lr.LRScheduler):
            optimizer._learning_rate = ScaledLR(lr, self.scale, floor=self.min_lr)
            if static_graph.is_static(self.model):  # the program reads its schedule, not the optimizer's
                static_graph.use_schedule(self.model, optimizer._learning_rate)
        else:  # a constant learning rate
            if self._float_lr is None or self._float_lr[0] is not optimizer:
                self._float_lr = (optimizer, float(lr))
            base = self._float_lr[1]
            value = max(base * self.scale, min(self.min_lr, base)) if self.scale < 1 else base
            if static_graph.is_static(self.model):
                static_graph.set_learning_rate(self.model, value)
            else:
                optimizer.set_lr(value)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self._state_loaded:  # a new fit: fresh counters, but the learning rate stays reduced
            scale, reductions, epoch = self.scale, self.reductions, self.epoch
            self.reset_state()
            self.scale, self.reductions, self.epoch = scale, reductions, epoch
        self._missing_warned = self._unreachable_warned = False
        self._apply()

    def on_monitor(self, value: float, improved: bool, logs: dict[str, Any]) -> None:
        # Paddle's (and Keras's) counting, step for step.
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if improved:
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                base = self._base_lr()
                if base is None or base * self.scale > np.float32(self.min_lr):  # Paddle: lr > min_lr
                    self.scale *= self.factor
                    self.reductions += 1
                    self.cooldown_counter = self.cooldown
                    self.wait = 0
                    self._apply()
                    new_lr = current_lr(self.model) if self.model is not None else None
                    lr_text = f"{new_lr:.6g}" if new_lr is not None else "its value"
                    if isinstance(getattr(getattr(self.model, "_optimizer", None), "_learning_rate", None), ScaledLR):
                        lr_text += f" ({self.scale:g} x its schedule)"
                    self.report(f"Epoch {self.epoch + 1}: ReduceLROnPlateau reducing learning rate to {lr_text}.")
        self.epoch += 1
