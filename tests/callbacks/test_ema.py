"""``EMA``: the average against a hand computation, per optimizer update, evaluated, kept, exported, resumed."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from fit_helpers import first, lenet

from paddle_mnist_hapi.callbacks import EMA, ResumeCkpt
from paddle_mnist_hapi.errors import ConfigError


class Weights(paddle.callbacks.Callback):
    """Records the network's weights before the first batch and after every batch, and during evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.initial: dict[str, np.ndarray] | None = None
        self.after_batch: list[dict[str, np.ndarray]] = []
        self.during_eval: list[dict[str, np.ndarray]] = []

    def _now(self) -> dict[str, np.ndarray]:
        return {k: v.numpy().astype(np.float64) for k, v in self.model.network.state_dict().items()}

    def on_train_batch_begin(self, step, logs=None):
        if self.initial is None:
            self.initial = self._now()

    def on_train_batch_end(self, step, logs=None):
        self.after_batch.append(self._now())

    def on_eval_batch_begin(self, step, logs=None):
        self.during_eval.append(self._now())


def test_the_average_matches_a_hand_computation_per_optimizer_update(mnist_train_small):
    model = lenet(0.01, name="linear")
    weights, ema = Weights(), EMA(decay=0.9, keep="trained")
    # 5 batches, accumulate 2: hapi updates after batches 2, 4 and 5 (the last batch of the epoch)
    model.fit(first(mnist_train_small, 320), batch_size=64, epochs=1, verbose=0, accumulate_grad_batches=2,
              callbacks=[weights, ema])  # fmt: skip
    assert ema.updates == 3
    expected = dict(weights.initial)
    for n, index in enumerate((1, 3, 4)):
        decay = min(0.9, (1 + n) / (10 + n))
        expected = {k: decay * v + (1 - decay) * weights.after_batch[index][k] for k, v in expected.items()}
    averaged = ema.averaged_weights()
    for name, value in expected.items():
        np.testing.assert_allclose(averaged[name], value, rtol=1e-5, atol=1e-7)
    assert not np.allclose(averaged["layers.0.weight"], weights.after_batch[-1]["layers.0.weight"])


def test_evaluation_runs_on_the_average_and_training_goes_on_with_the_trained_weights(
    mnist_train_small, mnist_test_small
):
    model = lenet(0.01, name="linear")
    weights, ema = Weights(), EMA(decay=0.9, keep="trained")
    train, test = first(mnist_train_small, 256), first(mnist_test_small, 128)
    model.fit(train, test, batch_size=64, epochs=2, verbose=0, callbacks=[weights, ema])
    assert len(weights.during_eval) == 4  # 2 evaluations x 2 batches
    trained = {k: v.numpy() for k, v in model.network.state_dict().items()}
    averaged = ema.averaged_weights()
    np.testing.assert_array_equal(weights.during_eval[-1]["layers.0.weight"], averaged["layers.0.weight"])
    np.testing.assert_array_equal(trained["layers.0.weight"], weights.after_batch[-1]["layers.0.weight"])
    # epoch 2 trained on from the trained weights, not from the average swapped in for evaluation 1
    assert not np.array_equal(weights.after_batch[3]["layers.0.weight"], weights.during_eval[0]["layers.0.weight"])

    on_average = model.evaluate(test, batch_size=64, verbose=0, callbacks=[ema])
    plain = model.evaluate(test, batch_size=64, verbose=0)
    with ema.swapped():
        by_hand = model.evaluate(test, batch_size=64, verbose=0)
    assert on_average["acc"] == by_hand["acc"] and on_average["loss"] == by_hand["loss"]
    assert on_average["loss"] != plain["loss"]
    np.testing.assert_array_equal(model.network.state_dict()["layers.0.weight"].numpy(), trained["layers.0.weight"])


@pytest.mark.parametrize("keep", ["ema", "trained"])
def test_the_user_chooses_the_weights_the_model_keeps_and_exports(tmp_path, mnist_train_small, keep):
    model = lenet(0.01, name="linear")
    ema = EMA(decay=0.9, keep=keep)
    model.fit(first(mnist_train_small, 256), batch_size=64, epochs=1, verbose=0, callbacks=[ema])
    kept = model.network.state_dict()["layers.0.weight"].numpy()
    averaged = ema.averaged_weights()["layers.0.weight"]
    assert np.array_equal(kept, averaged) == (keep == "ema")
    model.save(str(tmp_path / "inference"), training=False)
    exported = paddle.jit.load(str(tmp_path / "inference"))
    x = paddle.rand([4, 1, 28, 28])
    model.network.eval()
    np.testing.assert_allclose(exported(x).numpy(), model.network(x).numpy(), rtol=1e-5, atol=1e-6)
    if keep == "trained":  # export the average anyway
        with ema.swapped():
            model.save(str(tmp_path / "averaged"), training=False)
            expected = model.network(x).numpy()
        np.testing.assert_allclose(paddle.jit.load(str(tmp_path / "averaged"))(x).numpy(), expected, rtol=1e-5)
        assert np.array_equal(model.network.state_dict()["layers.0.weight"].numpy(), kept)


def test_a_resumed_run_continues_the_same_average(tmp_path, mnist_train_small, mnist_test_small):
    train, test = first(mnist_train_small, 256), first(mnist_test_small, 64)

    def run(save_dir, epochs):
        ema = EMA(decay=0.8, keep="trained")
        model = lenet(0.01, name="linear")
        model.fit(train, test, batch_size=64, epochs=epochs, verbose=0, callbacks=[ResumeCkpt(save_dir), ema])
        return ema

    straight = run(tmp_path / "straight", 3)
    run(tmp_path / "resumed", 1)  # "killed" after epoch 1 ...
    resumed = run(tmp_path / "resumed", 3)  # ... and the same script run again
    assert resumed.updates == straight.updates == 12
    for name, value in straight.averaged_weights().items():
        np.testing.assert_array_equal(resumed.averaged_weights()[name], value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"decay": 1.0}, "decay must be a number in \\[0, 1\\)"), ({"keep": "best"}, "keep must be 'ema' or 'trained'")],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EMA(**kwargs)


def test_swapping_before_training_is_a_clear_error():
    with pytest.raises(ConfigError, match="no averaged weights yet"), EMA().swapped():
        pass
