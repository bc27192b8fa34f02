"""``lr_find``: the sweep, its suggestion and plot, and a model and optimizer restored exactly afterwards."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from PIL import Image

from paddle_mnist_hapi import InMemoryLoader, create_model, specs_for
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.lr_find import lr_find
from paddle_mnist_hapi.schedules import polynomial_decay


def build(name: str, learning_rate) -> paddle.Model:
    paddle.seed(0)
    net = create_model(name)
    model = paddle.Model(net, *specs_for(name))
    optimizer = paddle.optimizer.Adam(learning_rate=learning_rate, parameters=net.parameters())
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


def weights(model: paddle.Model) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in model.network.state_dict().items()}


@pytest.mark.parametrize("schedule", [False, True])
@pytest.mark.parametrize("trained_before", [False, True])
def test_a_fit_after_the_sweep_equals_a_fit_without_it(mnist_train_small, schedule, trained_before):
    def run(sweep: bool) -> tuple[dict[str, np.ndarray], float]:
        data = InMemoryLoader(mnist_train_small, batch_size=64, shuffle=True)
        model = build("mlp", polynomial_decay(2, len(data), start_lr=0.01) if schedule else 0.003)
        np.random.seed(0)
        if trained_before:  # moments, schedule position and data order already moved
            model.fit(data, epochs=1, verbose=0, num_iters=5)
        if sweep:
            result = lr_find(model, data, num_steps=20)
            assert len(result.lrs) >= 5
        model.fit(data, epochs=1, verbose=0, num_iters=10)
        return weights(model), model._optimizer.get_lr()

    (plain, plain_lr), (swept, swept_lr) = run(False), run(True)
    assert swept_lr == plain_lr
    for name, value in plain.items():
        np.testing.assert_array_equal(swept[name], value)


def test_the_sweep_suggests_a_rate_where_the_loss_falls_and_plots_it(tmp_path, mnist_train_small):
    model = build("lenet5", 0.001)
    result = lr_find(model, mnist_train_small, num_steps=60, plot_path=tmp_path / "lr.png")
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-6) and len(result.lrs) == 60
    assert 1e-4 < result.suggestion < 0.1  # Adam on LeNet-5: the usual 1e-3 neighbourhood
    index = result.lrs.index(result.suggestion)
    assert result.smoothed[index + 3] < result.smoothed[index - 3]  # the loss is falling there
    with Image.open(result.plot) as image:
        assert image.format == "PNG" and image.size[0] > 500
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20


def test_the_sweep_stops_when_the_loss_diverges(mnist_train_small):
    paddle.seed(0)
    net = create_model("lenet5")
    model = paddle.Model(net, *specs_for("lenet5"))
    model.prepare(paddle.optimizer.SGD(0.01, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    result = lr_find(model, mnist_train_small, num_steps=60, start_lr=1e-4, end_lr=1e3)
    assert len(result.lrs) < 60 and result.lrs[-1] < 1e3
    assert not np.isfinite(result.smoothed[-1]) or result.smoothed[-1] > 4 * min(result.smoothed)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"num_steps": 1}, "num_steps must be an integer >= 2"), ({"start_lr": 1.0, "end_lr": 0.1}, "0 < start_lr")],
)
def test_bad_arguments_are_config_errors(mnist_train_small, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        lr_find(build("linear", 0.01), mnist_train_small, **kwargs)


def test_an_unprepared_model_is_a_config_error(mnist_train_small):
    model = paddle.Model(create_model("linear"), *specs_for("linear"))
    with pytest.raises(ConfigError, match=r"needs model\.prepare"):
        lr_find(model, mnist_train_small)
