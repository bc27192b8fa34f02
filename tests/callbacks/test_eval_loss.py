"""The evaluation loss is the mean over the whole evaluation set, for every callback in any order, and in
what ``Model.evaluate`` returns (hapi's keys and format kept)."""

from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from fit_helpers import first, lenet

from paddle_mnist_hapi.callbacks import EarlyStopping, MetricsLog, ResumeCkpt, VisualDL, mean_eval_loss, read_metrics


class EvalLogs(paddle.callbacks.Callback):
    """A plain (non-library) callback: what it sees at the end of each evaluation, and per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.at_end: list[float] = []
        self.per_batch: list[float] = []

    def on_eval_batch_end(self, step, logs=None):
        self.per_batch.append(float(logs["loss"][0]))

    def on_eval_end(self, logs=None):
        self.at_end.append(float(logs["loss"][0]))


def mean_by_hand(model: paddle.Model, data) -> float:
    """Cross-entropy of every sample, summed in float64, divided by the number of samples."""
    model.network.eval()
    with paddle.no_grad():
        logits = model.network(paddle.to_tensor(data.images)).numpy().astype(np.float64)
    logits -= logits.max(1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-log_softmax[np.arange(len(data)), data.labels.reshape(-1)].mean())


@pytest.mark.parametrize("probe_first", [True, False])
def test_every_callback_sees_the_mean_over_the_evaluation_set(
    tmp_path, mnist_train_small, mnist_test_small, probe_first
):
    train, test = first(mnist_train_small, 256), first(mnist_test_small, 130)  # eval batches of 64, 64 and 2
    probe, ckpt = EvalLogs(), ResumeCkpt(tmp_path / "ckpt", monitor="loss")
    metrics, stopper = MetricsLog(tmp_path / "m.jsonl"), EarlyStopping(monitor="loss")
    board = VisualDL(tmp_path / "vdl", images=0)
    library = [ckpt, metrics, stopper, board]
    callbacks = [probe, *library] if probe_first else [*library, probe]
    model = lenet(0.01)
    model.fit(train, test, batch_size=64, epochs=1, verbose=0, callbacks=callbacks)
    expected = mean_by_hand(model, test)

    assert len(probe.per_batch) == 3 and probe.per_batch[-1] != pytest.approx(expected, rel=1e-3)  # hapi's last batch
    assert probe.at_end == [pytest.approx(expected, rel=1e-5)]
    (record,) = [r for r in read_metrics(metrics.path) if r["kind"] == "eval"]
    assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert stopper.best == pytest.approx(expected, rel=1e-5)
    state = json.loads((ckpt.latest_path() / "state.json").read_text())
    assert state["monitor_value"] == pytest.approx(expected, rel=1e-5)
    from visualdl import LogReader

    (file,) = (tmp_path / "vdl").iterdir()
    (value,) = [r.value for r in LogReader(file_path=str(file)).get_data("scalar", "eval/loss")]
    assert value == pytest.approx(expected, rel=1e-5)


def test_evaluate_returns_hapis_keys_with_the_mean_loss(mnist_test_small):
    test = first(mnist_test_small, 130)
    model = lenet(0.01)
    hapi = model.evaluate(test, batch_size=64, verbose=0)
    ours = mean_eval_loss(model).evaluate(test, batch_size=64, verbose=0)
    assert list(ours) == list(hapi) == ["loss", "acc"]
    assert isinstance(ours["loss"], list) and len(ours["loss"]) == 1  # hapi's format: one float per loss
    assert ours["acc"] == hapi["acc"]
    assert ours["loss"][0] == pytest.approx(mean_by_hand(model, test), rel=1e-5)
    assert hapi["loss"][0] != pytest.approx(ours["loss"][0], rel=1e-3)  # hapi's is the 2-image last batch
    assert mean_eval_loss(model) is model  # idempotent
    assert model.evaluate(test, batch_size=64, verbose=0)["loss"] == ours["loss"]


def test_evaluate_after_a_fit_with_resume_still_reports_the_mean(tmp_path, mnist_train_small, mnist_test_small):
    """ResumeCkpt's epoch guard wraps hapi's epoch runner for one fit; undoing it keeps the mean-loss wrapper."""
    train, test = first(mnist_train_small, 128), first(mnist_test_small, 130)
    model = lenet(0.01)
    model.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[ResumeCkpt(tmp_path)])
    loss = model.evaluate(test, batch_size=64, verbose=0)["loss"][0]
    assert loss == pytest.approx(mean_by_hand(model, test), rel=1e-5)
