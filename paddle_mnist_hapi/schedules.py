"""Learning-rate schedules from a few arguments, sized in optimizer updates.

Each builder returns a ``paddle.optimizer.lr`` scheduler whose length is
``epochs * updates_per_epoch``: step it once per optimizer update with
:class:`paddle_mnist_hapi.callbacks.LRStepper` (the default), or once per epoch
with ``LRStepper(by='epoch')`` and ``steps_per_epoch=1``.

Examples:
    >>> lr = polynomial_decay(epochs=5, steps_per_epoch=782)  # the classic course: 0.01 -> 0.001
    >>> lr.decay_steps, round(lr(), 6), lr.end_lr
    (3910, 0.01, 0.001)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import paddle

from paddle_mnist_hapi._private.checks import check_int
from paddle_mnist_hapi.errors import ConfigError

__all__ = ["one_cycle", "piecewise", "polynomial_decay", "total_updates", "warmup_cosine"]

LR = paddle.optimizer.lr


def _positive_int(name: str, value: object) -> int:
    return check_int(name, value, 1)


def _rate(name: str, value: object, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}. Received: {name}={value!r}")
    return float(value)  # type: ignore[arg-type]


def total_updates(epochs: int, steps_per_epoch: int, accumulate_grad_batches: int = 1) -> int:
    """Optimizer updates in a run: ``epochs * ceil(steps_per_epoch / accumulate_grad_batches)``.

    hapi updates after every ``accumulate_grad_batches`` batches and after the
    last batch of an epoch, so a partial group at the end still counts.

    Examples:
        >>> total_updates(epochs=2, steps_per_epoch=10, accumulate_grad_batches=4)
        6
    """
    epochs = _positive_int("epochs", epochs)
    steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
    accumulate = _positive_int("accumulate_grad_batches", accumulate_grad_batches)
    return epochs * -(-steps_per_epoch // accumulate)


def polynomial_decay(
    epochs: int,
    steps_per_epoch: int,
    start_lr: float = 0.01,
    end_lr: float = 0.001,
    power: float = 1.0,
    accumulate_grad_batches: int = 1,
) -> LR.PolynomialDecay:
    """``PolynomialDecay`` from ``start_lr`` to ``end_lr`` over the whole run.

    The defaults are the classic Paddle MNIST course's: 0.01 to 0.001, linear.

    Examples:
        >>> lr = polynomial_decay(epochs=1, steps_per_epoch=4)
        >>> values = []
        >>> for _ in range(5):
        ...     values.append(round(lr(), 5)); lr.step()
        >>> values
        [0.01, 0.00775, 0.0055, 0.00325, 0.001]
    """
    steps = total_updates(epochs, steps_per_epoch, accumulate_grad_batches)
    start_lr, end_lr = _rate("start_lr", start_lr), _rate("end_lr", end_lr, allow_zero=True)
    power = _rate("power", power)
    return LR.PolynomialDecay(learning_rate=start_lr, decay_steps=steps, end_lr=end_lr, power=power)


def warmup_cosine(
    peak_lr: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    end_lr: float = 0.0,
    accumulate_grad_batches: int = 1,
) -> LR.LRScheduler:
    """Linear warmup from 0 to ``peak_lr`` over ``warmup_steps`` updates, then cosine down to ``end_lr``.

    Examples:
        >>> lr = warmup_cosine(0.1, epochs=1, steps_per_epoch=6, warmup_steps=2)
        >>> values = []
        >>> for _ in range(7):
        ...     values.append(round(lr(), 4)); lr.step()
        >>> values
        [0.0, 0.05, 0.1, 0.0854, 0.05, 0.0146, 0.0]
    """
    peak_lr = _rate("peak_lr", peak_lr)
    end_lr = _rate("end_lr", end_lr, allow_zero=True)
    steps = total_updates(epochs, steps_per_epoch, accumulate_grad_batches)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or not 0 <= warmup_steps < steps:
        raise ConfigError(
            f"warmup_steps must be an integer from 0 to the run's {steps} updates minus one. "
            f"Received: warmup_steps={warmup_steps!r}"
        )
    if end_lr > peak_lr:
        raise ConfigError(f"end_lr must not exceed peak_lr. Received: peak_lr={peak_lr!r}, end_lr={end_lr!r}")
    cosine = LR.CosineAnnealingDecay(peak_lr, T_max=steps - warmup_steps, eta_min=end_lr)
    if warmup_steps == 0:
        return cosine
    return LR.LinearWarmup(cosine, warmup_steps=warmup_steps, start_lr=0.0, end_lr=peak_lr)


def piecewise(
    values: Sequence[float],
    boundaries_epochs: Sequence[int],
    steps_per_epoch: int,
    accumulate_grad_batches: int = 1,
) -> LR.PiecewiseDecay:
    """``values[i]`` until epoch ``boundaries_epochs[i]``, the last value after.

    Boundaries are given in epochs and converted to optimizer updates.

    Examples:
        >>> lr = piecewise([0.1, 0.01], boundaries_epochs=[1], steps_per_epoch=2)
        >>> values = []
        >>> for _ in range(4):
        ...     values.append(lr()); lr.step()
        >>> values
        [0.1, 0.1, 0.01, 0.01]
    """
    values = [_rate("values[]", v) for v in values]
    if len(values) != len(boundaries_epochs) + 1:
        raise ConfigError(
            "piecewise needs one more value than boundaries (a value before the first boundary and after each). "
            f"Received: values={values!r}, boundaries_epochs={list(boundaries_epochs)!r}"
        )
    bounds = [_positive_int("boundaries_epochs[]", b) for b in boundaries_epochs]
    if bounds != sorted(set(bounds)):
        raise ConfigError(f"boundaries_epochs must be increasing. Received: boundaries_epochs={bounds!r}")
    per_epoch = total_updates(1, steps_per_epoch, accumulate_grad_batches)
    return LR.PiecewiseDecay(boundaries=[b * per_epoch for b in bounds], values=values)


def one_cycle(
    max_lr: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.3,
    divide_factor: float = 25.0,
    accumulate_grad_batches: int = 1,
) -> LR.OneCycleLR:
    """One-cycle: up from ``max_lr / divide_factor`` to ``max_lr`` over ``warmup_fraction`` of the run, then down.

    Examples:
        >>> lr = one_cycle(0.1, epochs=1, steps_per_epoch=10)
        >>> round(lr(), 4), lr.total_steps
        (0.004, 10)
    """
    max_lr = _rate("max_lr", max_lr)
    if not isinstance(warmup_fraction, (int, float)) or not 0 < warmup_fraction < 1:
        raise ConfigError(f"warmup_fraction must be between 0 and 1. Received: warmup_fraction={warmup_fraction!r}")
    if not isinstance(divide_factor, (int, float)) or not divide_factor >= 1:
        raise ConfigError(f"divide_factor must be a number >= 1. Received: divide_factor={divide_factor!r}")
    steps = total_updates(epochs, steps_per_epoch, accumulate_grad_batches)
    return LR.OneCycleLR(
        max_learning_rate=max_lr,
        total_steps=steps,
        divide_factor=float(divide_factor),
        end_learning_rate=max_lr / divide_factor / 1e4,
        phase_pct=float(warmup_fraction),
    )
