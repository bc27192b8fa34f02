"""Sentences of docs/monitoring.md that no other test checked, each with the outcome it promises."""

from __future__ import annotations

import logging

import paddle
import pytest

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import EMA, EarlyStopping, ResumeCkpt, TrainingHealth, VisualDL


@pytest.fixture(scope="module")
def data():
    return MNIST("train", limit=64)


def _model() -> paddle.Model:
    net = create_model("linear")
    model = paddle.Model(net, *specs_for("linear"))
    model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    return model


@pytest.mark.parametrize("late", [ResumeCkpt, VisualDL, EarlyStopping])
def test_ema_warns_when_a_callback_that_should_come_first_comes_after_it(tmp_path, data, late, caplog):
    """'Put it last ...; it logs a warning when ResumeCkpt, VisualDL or EarlyStopping come after it.'"""
    after = late(str(tmp_path / "x")) if late is not EarlyStopping else late(monitor="loss", verbose=0)
    with caplog.at_level(logging.WARNING, logger="paddle_mnist_hapi"):
        _model().fit(data, batch_size=32, verbose=0, callbacks=[EMA(0.9), after])
    assert f"EMA comes before {late.__name__} in the callback list: put EMA last" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="paddle_mnist_hapi"):
        _model().fit(data, batch_size=32, verbose=0, callbacks=[after, EMA(0.9)])
    assert "EMA comes before" not in caplog.text


def test_training_health_says_it_does_not_measure_an_optimizer_with_parameter_groups(data, caplog):
    """'Optimizers built with parameter groups are not measured (a warning says so).' hapi's fit cannot train
    with them anyway in Paddle 3.3 (Optimizer.minimize takes a flat list): the warning comes first."""
    net = create_model("linear")
    model = paddle.Model(net, *specs_for("linear"))
    groups = [{"params": net.parameters()[:1]}, {"params": net.parameters()[1:], "learning_rate": 0.5}]
    model.prepare(paddle.optimizer.Adam(1e-3, parameters=groups), paddle.nn.CrossEntropyLoss())
    with caplog.at_level(logging.WARNING, logger="paddle_mnist_hapi"), pytest.raises(TypeError, match="list of Tensor"):
        model.fit(data, batch_size=32, verbose=0, callbacks=[TrainingHealth(log_freq=1)])
    assert "TrainingHealth: an optimizer with parameter groups is not measured" in caplog.text
