"""``TrainingHealth``: gradient and parameter norms against a hand computation, per optimizer update, in the
metrics file and on the board whatever the callback order, with the user's gradient clip left in place."""

from __future__ import annotations

import numpy as np
import paddle
import pytest
from fit_helpers import first

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi.callbacks import MetricsLog, TrainingHealth, VisualDL, read_metrics
from paddle_mnist_hapi.errors import ConfigError

LR = 0.1


class Weights(paddle.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.before: list[dict[str, np.ndarray]] = []
        self.after: list[dict[str, np.ndarray]] = []

    def _now(self) -> dict[str, np.ndarray]:
        return {k: v.numpy().astype(np.float64) for k, v in self.model.network.state_dict().items()}

    def on_train_batch_begin(self, step, logs=None):
        self.before.append(self._now())

    def on_train_batch_end(self, step, logs=None):
        self.after.append(self._now())


def sgd_model(grad_clip=None) -> paddle.Model:
    paddle.seed(0)
    net = create_model("linear")
    model = paddle.Model(net, *specs_for("linear"))
    model.prepare(
        paddle.optimizer.SGD(LR, parameters=net.parameters(), grad_clip=grad_clip), paddle.nn.CrossEntropyLoss()
    )
    return model


def norm(tensors: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum((t**2).sum() for t in tensors.values())))


@pytest.mark.parametrize("accumulate", [1, 2])
def test_norms_match_a_hand_computation_at_every_log_freq_th_update(tmp_path, mnist_train_small, accumulate):
    model, weights = sgd_model(), Weights()
    metrics = MetricsLog(tmp_path / "m.jsonl", log_freq=1000)  # writes step records only for the health values
    health = TrainingHealth(log_freq=2, per_layer=True)
    model.fit(first(mnist_train_small, 512), batch_size=64, verbose=0, accumulate_grad_batches=accumulate,
              callbacks=[metrics, health, weights])  # fmt: skip
    records = [r for r in read_metrics(metrics.path) if r["kind"] == "step"]
    # 8 batches: updates after every batch (accumulate 1) or every 2nd (accumulate 2); measured every 2nd update
    assert [r["step"] for r in records] == ([2, 4, 6, 8] if accumulate == 1 else [4, 8])
    assert health.updates == 8 // accumulate
    for record in records:
        index = record["step"] - 1
        start = weights.before[index - accumulate + 1]  # the weights before the accumulated update
        grads = {k: (start[k] - weights.after[index][k]) / LR for k in start}  # SGD: w -= lr * g
        assert record["grad_norm"] == pytest.approx(norm(grads), rel=1e-3)
        assert record["param_norm"] == pytest.approx(norm(start), rel=1e-5)
        assert record["grad_norm/layers.0.weight"] == pytest.approx(norm({"w": grads["layers.0.weight"]}), rel=1e-3)


def test_the_users_gradient_clip_still_applies_and_is_given_back(tmp_path, mnist_train_small):
    clip = paddle.nn.ClipGradByGlobalNorm(clip_norm=1e-3)
    model, weights = sgd_model(clip), Weights()
    health = TrainingHealth(log_freq=1)
    model.fit(first(mnist_train_small, 128), batch_size=64, verbose=0, callbacks=[health, weights])
    assert model._optimizer._grad_clip is clip
    applied = {k: weights.before[-1][k] - weights.after[-1][k] for k in weights.after[-1]}
    assert norm(applied) == pytest.approx(LR * 1e-3, rel=1e-3)  # the update was clipped ...
    assert health.last["grad_norm"] > 100 * 1e-3  # ... and the measured norm is the gradient before clipping


def test_the_board_gets_the_norms_whatever_the_callback_order(tmp_path, mnist_train_small):
    from visualdl import LogReader

    board = VisualDL(tmp_path / "vdl", log_freq=100, images=0)
    sgd_model().fit(
        first(mnist_train_small, 256), batch_size=64, verbose=0, callbacks=[board, TrainingHealth(log_freq=2)]
    )  # the writer runs before the producer
    (file,) = (tmp_path / "vdl").iterdir()
    reader = LogReader(file_path=str(file))
    assert [r.id for r in reader.get_data("scalar", "health/grad_norm")] == [2, 4]
    assert all(r.value > 0 for r in reader.get_data("scalar", "health/param_norm"))


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="log_freq must be an integer >= 1"):
        TrainingHealth(log_freq=0)
