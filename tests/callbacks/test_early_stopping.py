"""``EarlyStopping``: patience, baseline, best weights, and state that survives a JSON round trip."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from fit_helpers import Recorder, first, lenet

from paddle_mnist_hapi.callbacks import EarlyStopping
from paddle_mnist_hapi.errors import ConfigError


def feed(stop: EarlyStopping, values, key="loss") -> list[bool]:
    """Run epochs with the given eval values until training stops; return model.stop_training after each."""
    model = stop.model if stop.model is not None else SimpleNamespace(stop_training=False)
    stop.set_model(model)
    flags = []
    for value in values:
        stop.on_epoch_end(stop.epoch + 1)
        stop.on_eval_end({key: [value]})
        flags.append(model.stop_training)
        if model.stop_training:
            break
    return flags


@pytest.mark.parametrize(
    ("patience", "stops_after"),
    [(0, 2), (1, 2), (2, 3), (3, 4)],  # losses 1.0 then 1.0 1.0 1.0 ...: never improves after the first
)
def test_patience_is_the_number_of_evaluations_without_improvement(patience, stops_after):
    stop = EarlyStopping(monitor="loss", patience=patience, verbose=0)
    flags = feed(stop, [1.0] * 6)
    assert flags == [False] * (stops_after - 1) + [True]
    assert stop.stopped_epoch == stops_after  # counted from 1, as Paddle prints it
    assert stop.best_epoch == 0


def test_min_delta_and_mode_max():
    stop = EarlyStopping(monitor="acc", patience=1, min_delta=0.01, verbose=0)
    flags = feed(stop, [0.90, 0.92, 0.925], key="acc")  # +0.005 is not an improvement
    assert flags == [False, False, True]
    assert stop.best == stop.best_value == 0.92 and stop.best_epoch == 1


def test_baseline_must_be_beaten_first():
    stop = EarlyStopping(monitor="acc", patience=2, baseline=0.95, verbose=0)
    assert stop.best_value == 0.95
    flags = feed(stop, [0.90, 0.93, 0.97], key="acc")
    assert flags == [False, True]
    assert stop.best is None and stop.wait_epoch == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patience": -1}, "patience must be an integer >= 0. Received: patience=-1"),
        ({"patience": 1.5}, "Received: patience=1.5"),
        ({"patience": "max"}, "Received: patience='max'"),
        ({"restore_best_weights": "yes"}, "restore_best_weights must be True or False"),
        ({"save_best_model": 1}, "save_best_model must be True or False"),
        ({"min_delta": "0.1"}, "min_delta must be a number"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EarlyStopping(**kwargs)


def test_unknown_mode_and_unknown_names_warn_and_fall_back_as_paddle_does():
    with pytest.warns(UserWarning, match="mode 'up' is unknown, fallback to auto mode"):
        assert EarlyStopping("acc", mode="up").mode == "max"
    with pytest.warns(UserWarning, match="Cannot tell whether 'val_thing' should go up or down"):
        assert EarlyStopping("val_thing").mode == "min"


def test_state_round_trips_through_json_and_resumes_identically():
    losses = [1.0, 0.8, 0.85, 0.9, 0.7, 0.75, 0.76, 0.77]
    straight = EarlyStopping(monitor="loss", patience=3, verbose=0)
    straight_flags = feed(straight, losses)

    first_half = EarlyStopping(monitor="loss", patience=3, verbose=0)
    flags = feed(first_half, losses[:5])
    state = json.loads(json.dumps(first_half.state_dict()))  # what a checkpoint stores
    resumed = EarlyStopping(monitor="loss", patience=3, verbose=0)
    resumed.load_state_dict(state)
    resumed.on_train_begin()  # a resumed fit does not reset the loaded state
    flags += feed(resumed, losses[5:])
    assert flags == straight_flags == [False] * 7 + [True]
    assert resumed.state_dict() == straight.state_dict()
    assert resumed.state_dict() == {"best": 0.7, "wait": 3, "epoch": 7, "best_epoch": 4, "stopped_epoch": 8}

    fresh = EarlyStopping(monitor="loss", patience=3, verbose=0)
    fresh.load_state_dict(state)
    fresh.on_train_end()
    fresh.on_train_begin()  # a new fit without a loaded state starts over
    assert fresh.best is None and fresh.wait == 0


def test_restore_best_weights_puts_back_the_best_network():
    net = paddle.nn.Linear(2, 1)
    stop = EarlyStopping(monitor="loss", patience=5, verbose=0, restore_best_weights=True)
    stop.set_model(SimpleNamespace(network=net, stop_training=False))
    for value, weight in ((1.0, 1.0), (0.5, 2.0), (0.7, 3.0)):
        net.weight.set_value(paddle.full([2, 1], weight))
        stop.on_epoch_end(0)
        stop.on_eval_end({"loss": value})
    stop.on_train_end()
    np.testing.assert_array_equal(net.weight.numpy(), np.full([2, 1], 2.0, np.float32))


def test_fit_stops_early_and_restores_the_best_epoch(mnist_train_small, mnist_test_small):
    model = lenet()
    recorder = Recorder()
    # min_delta=10: only the first evaluation counts as an improvement; patience 2 -> stop after epoch 3 of 6.
    stop = EarlyStopping(monitor="loss", patience=2, min_delta=10.0, verbose=0, restore_best_weights=True)
    model.fit(
        first(mnist_train_small, 512),
        first(mnist_test_small, 128),
        batch_size=64,
        epochs=6,
        verbose=0,
        callbacks=[stop, recorder],
    )
    assert sorted(recorder.batches) == [0, 1, 2]  # epochs 4-6 never ran
    assert recorder.evals == 3
    assert (stop.best_epoch, stop.stopped_epoch) == (0, 3)
    best = recorder.weights_after_eval[0]
    final = {k: v.numpy() for k, v in model.network.state_dict().items()}
    assert all(np.array_equal(final[k], best[k]) for k in best)
    assert not np.array_equal(final["features.0.weight"], recorder.weights_after_eval[-1]["features.0.weight"])


def test_without_eval_data_it_warns_that_it_cannot_stop(mnist_train_small, caplog):
    stop = EarlyStopping(monitor="loss", patience=0, verbose=0)
    lenet().fit(first(mnist_train_small, 128), batch_size=64, epochs=2, verbose=0, callbacks=[stop])
    assert "fit got no eval_data, so it will never stop" in caplog.text
    assert stop.stopped_epoch == 0 and stop.epoch == 1


def test_paddles_positional_order_monitor_mode_patience():
    stop = EarlyStopping("acc", "max", 3)
    assert (stop.monitor, stop.mode, stop.patience, stop.verbose, stop.save_best_model) == ("acc", "max", 3, 1, True)


def _resumable_run(run_dir, train, test, epochs):
    from paddle_mnist_hapi.callbacks import ResumeCkpt

    model = lenet()
    # min_delta=10: only the first evaluation is an improvement; patience 9: it never stops here.
    stop = EarlyStopping("loss", patience=9, min_delta=10.0, verbose=0, restore_best_weights=True)
    model.fit(train, test, batch_size=64, epochs=epochs, verbose=0, callbacks=[ResumeCkpt(run_dir), stop])
    return model, stop


def test_best_weights_survive_a_resume(tmp_path, mnist_train_small, mnist_test_small):
    train, test = first(mnist_train_small, 256), first(mnist_test_small, 64)
    straight, _ = _resumable_run(tmp_path / "straight", train, test, epochs=3)
    _resumable_run(tmp_path / "resumed", train, test, epochs=1)  # interrupted after epoch 1, the best one
    resumed, stop = _resumable_run(tmp_path / "resumed", train, test, epochs=3)  # a new model, same script
    assert stop.best_epoch == 0 and stop.epoch == 2
    final = {k: v.numpy() for k, v in resumed.network.state_dict().items()}
    expected = {k: v.numpy() for k, v in straight.network.state_dict().items()}
    assert all(np.array_equal(final[k], expected[k]) for k in expected)  # the best (epoch 1) weights, restored
    from paddle_mnist_hapi import load_weights

    last = lenet()
    load_weights(last, tmp_path / "resumed")  # the newest checkpoint: epoch 3's weights
    assert not np.array_equal(last.network.state_dict()["features.0.weight"].numpy(), final["features.0.weight"])
