"""The recipe's two-cycle schedule and its options (the full recipe runs in bench/, not here)."""

from __future__ import annotations

import itertools

import paddle
import pytest

from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.recipe import TrainConfig, TwoCycleCosine, build_model


def _rates(schedule: paddle.optimizer.lr.LRScheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(float(schedule()))
        schedule.step()
    return out


def test_one_cycle_is_the_earlier_recipes_cosine() -> None:
    ours = _rates(TwoCycleCosine(0.002, first_steps=0, total_steps=40), 40)
    paddles = _rates(paddle.optimizer.lr.CosineAnnealingDecay(0.002, T_max=40), 40)
    assert ours == pytest.approx(paddles, abs=1e-12)


def test_two_cycles_restart_at_the_peak_and_end_near_zero() -> None:
    rates = _rates(TwoCycleCosine(0.003, first_steps=20, total_steps=80), 80)
    assert rates[0] == rates[20] == 0.003
    assert rates[19] < 0.0001 and rates[79] < 0.00001
    assert all(a >= b for a, b in itertools.pairwise(rates[20:]))  # the second cycle only decays


def test_a_resumed_schedule_continues_where_it_stopped() -> None:
    running = TwoCycleCosine(0.003, first_steps=20, total_steps=80)
    _rates(running, 33)
    resumed = TwoCycleCosine(0.003, first_steps=20, total_steps=80)
    resumed.set_state_dict(running.state_dict())
    assert _rates(resumed, 10) == _rates(running, 10)


def test_a_run_no_longer_than_the_fast_epochs_is_one_cycle_without_augmentation() -> None:
    short = build_model(TrainConfig(model="linear", epochs=2, fast_epochs=2), steps_per_epoch=10)
    assert short._optimizer._learning_rate.first_steps == 0
    default = build_model(TrainConfig(model="linear"), steps_per_epoch=10)
    assert default._optimizer._learning_rate.first_steps == 20
    assert default._optimizer._learning_rate.total_steps == 100  # the default 10 epochs


@pytest.mark.parametrize("fast_epochs", [-1, 1.5, True])
def test_bad_fast_epochs_are_refused(fast_epochs) -> None:
    with pytest.raises(ConfigError, match="fast_epochs"):
        TrainConfig(fast_epochs=fast_epochs).validate()
