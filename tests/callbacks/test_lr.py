"""LR schedules, ``LRStepper`` (per optimizer update) and ``ReduceLROnPlateau`` on top of a schedule."""

from __future__ import annotations

import json
from types import SimpleNamespace

import paddle
import pytest
from fit_helpers import Recorder, first, lenet

from paddle_mnist_hapi.callbacks import LRStepper, ReduceLROnPlateau, ResumeCkpt
from paddle_mnist_hapi.callbacks.lr import ScaledLR, current_lr
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.schedules import one_cycle, piecewise, polynomial_decay, total_updates, warmup_cosine


def run(schedule: paddle.optimizer.lr.LRScheduler, updates: int) -> list[float]:
    values = []
    for _ in range(updates):
        values.append(schedule())
        schedule.step()
    return values


def test_polynomial_decay_is_the_course_schedule_over_the_whole_run():
    # The classic course: 0.01 -> 0.001 linearly over all updates of the run.
    values = run(polynomial_decay(epochs=2, steps_per_epoch=5), 11)
    assert values[0] == pytest.approx(0.01)
    assert values[5] == pytest.approx(0.0055)
    assert values[10] == pytest.approx(0.001)


def test_total_updates_counts_the_partial_accumulation_group():
    assert total_updates(3, 10) == 30
    assert total_updates(3, 10, accumulate_grad_batches=4) == 9  # 4 + 4 + 2 per epoch: 3 updates


def test_warmup_cosine_peaks_after_warmup_and_ends_at_end_lr():
    values = run(warmup_cosine(0.1, epochs=2, steps_per_epoch=10, warmup_steps=4, end_lr=0.01), 21)
    assert values[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert values[4:20] == sorted(values[4:20], reverse=True)
    assert values[20] == pytest.approx(0.01)


def test_piecewise_boundaries_are_in_epochs():
    values = run(piecewise([0.1, 0.01, 0.001], boundaries_epochs=[1, 3], steps_per_epoch=4), 16)
    assert values == [0.1] * 4 + [0.01] * 8 + [0.001] * 4


def test_one_cycle_rises_to_max_then_falls():
    values = run(one_cycle(0.1, epochs=1, steps_per_epoch=20, warmup_fraction=0.25), 20)
    peak = values.index(max(values))
    assert max(values) == pytest.approx(0.1)
    assert peak in (4, 5)
    assert values[0] == pytest.approx(0.004)
    assert values[-1] < 0.001


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: polynomial_decay(epochs=0, steps_per_epoch=5), "epochs must be an integer >= 1"),
        (lambda: polynomial_decay(epochs=1, steps_per_epoch=5, start_lr=-1), "start_lr must be a finite number > 0"),
        (lambda: warmup_cosine(0.1, epochs=1, steps_per_epoch=5, warmup_steps=5), "warmup_steps must be"),
        (lambda: warmup_cosine(0.1, epochs=1, steps_per_epoch=5, end_lr=0.2), "end_lr must not exceed peak_lr"),
        (lambda: piecewise([0.1], boundaries_epochs=[1], steps_per_epoch=5), "one more value than boundaries"),
        (lambda: piecewise([0.1, 0.2, 0.3], [3, 1], steps_per_epoch=5), "boundaries_epochs must be increasing"),
        (lambda: one_cycle(0.1, epochs=1, steps_per_epoch=5, warmup_fraction=1.5), "warmup_fraction"),
        (lambda: LRStepper(by="batch"), "Received: by='batch'"),
        (lambda: ReduceLROnPlateau(factor=1.5), "does not support a factor >= 1.0"),
        (lambda: ReduceLROnPlateau(factor=0), "factor must be between 0 and 1"),
        (lambda: ReduceLROnPlateau(min_lr=-1), "min_lr must be a number >= 0"),
        (lambda: ReduceLROnPlateau(patience=-1), "patience must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_config_errors(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_lr_stepper_steps_only_when_hapi_updates():
    # 7 batches per epoch, accumulate 3: hapi updates after batches 3, 6 and 7 (the last, partial group).
    schedule = paddle.optimizer.lr.StepDecay(0.1, step_size=1)
    stepper = LRStepper()
    stepper.set_model(SimpleNamespace(_optimizer=SimpleNamespace(_learning_rate=schedule), _accumulate=3))
    stepper.set_params({"steps": 7})
    stepped_after = []
    for step in range(7):
        before = schedule.last_epoch
        stepper.on_train_batch_end(step, {})
        if schedule.last_epoch != before:
            stepped_after.append(step + 1)
    assert stepped_after == [3, 6, 7]


def test_lr_stepper_by_epoch_steps_at_epoch_end_only():
    schedule = paddle.optimizer.lr.StepDecay(0.1, step_size=1)
    stepper = LRStepper(by="epoch")
    stepper.set_model(SimpleNamespace(_optimizer=SimpleNamespace(_learning_rate=schedule), _accumulate=1))
    stepper.set_params({"steps": 3})
    for epoch in range(2):
        for step in range(3):
            stepper.on_train_batch_end(step, {})
        stepper.on_epoch_end(epoch, {})
    assert schedule.last_epoch == 2


def test_fit_with_accumulation_steps_the_schedule_once_per_update(mnist_train_small):
    # 512 images, batch 64: 8 batches per epoch; accumulate 2: 4 updates per epoch.
    data = first(mnist_train_small, 512)
    ours = polynomial_decay(epochs=2, steps_per_epoch=8, accumulate_grad_batches=2)
    model = lenet(ours)
    recorder = Recorder()
    model.fit(
        data,
        batch_size=64,
        epochs=2,
        verbose=0,
        shuffle=False,
        accumulate_grad_batches=2,
        callbacks=[LRStepper(), recorder],
    )
    assert ours.last_epoch == 8 == total_updates(2, 8, 2)
    # The schedule ends exactly at the end of the run: the last update used the last value before end_lr.
    assert recorder.lrs[-1] == pytest.approx(0.01 - (0.01 - 0.001) * 7 / 8)
    # Each pair of micro-batches (one update) saw the same learning rate.
    assert recorder.lrs[0::2] == recorder.lrs[1::2]

    hapis = polynomial_decay(epochs=2, steps_per_epoch=8, accumulate_grad_batches=2)
    lenet(hapis).fit(data, batch_size=64, epochs=2, verbose=0, accumulate_grad_batches=2)
    assert hapis.last_epoch == 16  # Paddle's default callback steps every micro-batch: the schedule ran out halfway


def test_reduce_on_plateau_counts_patience_and_cooldown():
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=2, cooldown=2, verbose=0)
    scales = []
    for loss in (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7):
        plateau.on_eval_end({"loss": [loss]})
        scales.append(plateau.scale)
    # reduce after 2 bad evals; cooldown=2 then leaves one eval uncounted (Paddle and Keras count the
    # cooldown down before they check it), then 2 more bad evals
    assert scales == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    plateau.on_eval_end({"loss": [0.1]})
    assert plateau.best == 0.1


def test_factor_of_one_or_more_is_a_value_error_as_in_paddle():
    with pytest.raises(ValueError, match=r"factor >= 1\.0"):
        ReduceLROnPlateau(factor=2.0)


def test_min_lr_bounds_the_reductions_of_a_constant_learning_rate():
    net = paddle.nn.Linear(2, 2)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()))
    plateau = ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.005, verbose=0)
    plateau.set_model(model)
    plateau.on_train_begin()
    lrs = []
    for loss in (1.0, 1.0, 1.0, 1.0):
        plateau.on_eval_end({"loss": loss})
        lrs.append(current_lr(model))
    assert lrs == pytest.approx([0.1, 0.01, 0.005, 0.005])
    assert plateau.reductions == 2  # at min_lr it stops reducing


def test_min_lr_bounds_the_reductions_but_not_the_schedule_underneath():
    schedule = paddle.optimizer.lr.StepDecay(0.1, step_size=1, gamma=0.1)
    lr = ScaledLR(schedule, factor=0.01, floor=0.005)
    assert lr() == pytest.approx(0.005)  # 0.1 * 0.01 is below min_lr
    schedule.step()
    assert lr() == pytest.approx(0.005)
    schedule.step()
    assert lr() == pytest.approx(0.001)  # the schedule itself is at 0.001: the floor does not raise it


def test_reduce_on_plateau_scales_any_schedule_and_keeps_its_checkpoint_format():
    net = paddle.nn.Linear(2, 2)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=10)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Adam(schedule, parameters=net.parameters()))
    saved_format = set(model._optimizer.state_dict()["LR_Scheduler"])
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.1, patience=0, verbose=0)
    plateau.set_model(model)
    plateau.on_train_begin()
    plateau.on_eval_end({"loss": 1.0})
    plateau.on_eval_end({"loss": 2.0})
    for _ in range(3):
        model._optimizer._learning_rate.step()
    assert current_lr(model) == pytest.approx(schedule() * 0.1)
    assert schedule.last_epoch == 3  # the schedule keeps running underneath
    assert set(model._optimizer.state_dict()["LR_Scheduler"]) == saved_format

    # Resumable: a new callback and a fresh optimizer get the same factor back from JSON state.
    state = json.loads(json.dumps(plateau.state_dict()))
    model2 = paddle.Model(net)
    model2.prepare(
        paddle.optimizer.Adam(paddle.optimizer.lr.CosineAnnealingDecay(0.1, T_max=10), parameters=net.parameters())
    )
    restored = ReduceLROnPlateau(monitor="loss", factor=0.1, patience=0, verbose=0)
    restored.set_model(model2)
    restored.load_state_dict(state)
    restored.on_train_begin()
    assert isinstance(model2._optimizer._learning_rate, ScaledLR)
    assert current_lr(model2) == pytest.approx(0.01)
    assert restored.state_dict() == plateau.state_dict()


def test_reduce_on_plateau_scales_a_constant_learning_rate():
    net = paddle.nn.Linear(2, 2)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.5, parameters=net.parameters()))
    plateau = ReduceLROnPlateau(monitor="acc", factor=0.5, patience=0, verbose=0)
    plateau.set_model(model)
    for acc in (0.5, 0.4, 0.3):
        plateau.on_eval_end({"acc": acc})
    assert current_lr(model) == pytest.approx(0.125)
    plateau.on_train_begin()  # a second fit does not apply the factor twice
    assert current_lr(model) == pytest.approx(0.125)


def test_fit_reduces_the_learning_rate_on_top_of_a_cosine_schedule(mnist_train_small, mnist_test_small):
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(0.002, T_max=24)
    model = lenet(schedule)
    recorder = Recorder()
    # min_delta=10 makes every evaluation after the first a plateau: reductions after epochs 2 and 3.
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0, verbose=0)
    model.fit(
        first(mnist_train_small, 512),
        first(mnist_test_small, 128),
        batch_size=64,
        epochs=3,
        verbose=0,
        callbacks=[LRStepper(), plateau, recorder],
    )
    assert plateau.reductions == 2
    assert schedule.last_epoch == 24  # the cosine schedule ran its full course underneath
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(0.002, T_max=24)
    expected = []
    for epoch_scale in (1.0, 1.0, 0.5):
        for _ in range(8):
            expected.append(cosine() * epoch_scale)
            cosine.step()
    assert recorder.lrs == pytest.approx(expected)
    assert current_lr(model) == pytest.approx(cosine() * 0.25)


def plateau_run(tmp_path, train, test, epochs: int, run: str) -> tuple[list[float], ReduceLROnPlateau]:
    recorder = Recorder()
    plateau = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0, verbose=0)
    model = lenet(paddle.optimizer.lr.CosineAnnealingDecay(0.002, T_max=32))
    callbacks = [ResumeCkpt(tmp_path / run), LRStepper(), plateau, recorder]
    model.fit(train, test, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)
    return recorder.lrs, plateau


def test_a_resumed_run_keeps_the_reduced_learning_rate(tmp_path, mnist_train_small, mnist_test_small):
    train, test = first(mnist_train_small, 512), first(mnist_test_small, 128)
    straight, _ = plateau_run(tmp_path, train, test, epochs=4, run="straight")
    first_part, _ = plateau_run(tmp_path, train, test, epochs=2, run="resumed")  # "killed" after epoch 2
    rest, plateau = plateau_run(tmp_path, train, test, epochs=4, run="resumed")  # same script again
    assert plateau.reductions == 3
    assert len(first_part) == len(rest) == 16
    assert first_part + rest == pytest.approx(straight, rel=1e-12)
    assert rest[0] == pytest.approx(straight[16]) and straight[16] < straight[15] * 0.6  # halved at the resume point
