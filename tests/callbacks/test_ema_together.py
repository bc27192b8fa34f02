"""``EMA`` together with the callbacks that also decide the weights: ``EarlyStopping(restore_best_weights=True)``
(the model ends with the weights that scored best, in any order), ``NaNGuard``'s rollback (the average goes
back with the weights), and AMP O2's float16 weights (the average stays float32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest
from fit_helpers import first, lenet
from test_nan_guard import poisoned_data

from paddle_mnist_hapi.callbacks import EMA, EarlyStopping, NaNGuard, ResumeCkpt, nonfinite_parameters
from paddle_mnist_hapi.checkpoint.store import read_tensors


class ScriptedScore(paddle.callbacks.Callback):
    """First in the list: sets each evaluation's ``score``; the same logs reach every callback after it."""

    def __init__(self, scores):
        super().__init__()
        self.scores, self.evals = list(scores), 0

    def on_eval_end(self, logs=None):
        logs["score"] = self.scores[self.evals]
        self.evals, self.logs = self.evals + 1, logs

    def on_train_end(self, logs=None):
        if self.evals:  # hapi reuses one logs dict for every fit in the process: leave no score in it
            self.logs.pop("score", None)


class EvaluatedWeights(paddle.callbacks.Callback):
    """The weights each evaluation ran on, read while it runs (whatever swaps them in and out around it)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_eval_batch_end(self, step, logs=None):
        if step == 0:
            self.weights.append({k: v.numpy().copy() for k, v in self.model.network.state_dict().items()})


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.network.state_dict().items()}


@pytest.mark.parametrize("keep", ["ema", "trained"])
@pytest.mark.parametrize("ema_first", [False, True])
@pytest.mark.parametrize("scores", [(0.5, 0.9, 0.6, 0.7), (0.5, 0.6, 0.7, 0.9)], ids=["best 2nd", "best last"])
def test_early_stopping_with_ema_ends_with_the_weights_that_scored_best(mnist_train_small, mnist_test_small, keep,
                                                                        ema_first, scores):  # fmt: skip
    model = lenet(name="linear")
    stop = EarlyStopping("score", "max", patience=9, verbose=0, restore_best_weights=True)
    ema, seen = EMA(decay=0.9, keep=keep), EvaluatedWeights()
    ordered = [ema, stop] if ema_first else [stop, ema]
    model.fit(first(mnist_train_small, 256), first(mnist_test_small, 64), batch_size=64, epochs=4, verbose=0,
              callbacks=[ScriptedScore(scores), *ordered, seen])  # fmt: skip
    best = int(np.argmax(scores))
    assert len(seen.weights) == 4 and stop.best_epoch == best
    final = _weights(model)
    assert all(np.array_equal(final[k], seen.weights[best][k]) for k in final)  # the average evaluated then
    last_trained = ema.averaged_weights()  # ... not the trained weights, nor the newest average
    assert best == 3 or not np.array_equal(final["layers.0.weight"], last_trained["layers.0.weight"])


def test_without_early_stopping_keep_still_decides(mnist_train_small, mnist_test_small):
    model = lenet(name="linear")
    ema = EMA(decay=0.9, keep="ema")
    model.fit(first(mnist_train_small, 256), first(mnist_test_small, 64), batch_size=64, epochs=2, verbose=0,
              callbacks=[EarlyStopping("acc", patience=9, verbose=0), ema])  # fmt: skip
    assert all(np.array_equal(v, ema.averaged_weights()[k]) for k, v in _weights(model).items())


class AtRollback(paddle.callbacks.Callback):
    """Last in the list: the EMA state right after a batch in which NaNGuard rolled back."""

    def __init__(self, guard, ema):
        super().__init__()
        self.guard, self.ema, self.seen = guard, ema, []

    def on_train_batch_end(self, step, logs=None):
        if len(self.guard.events) > len(self.seen):
            path = Path(self.guard.events[-1]["restored"]["checkpoint"])  # read now: retention prunes it later
            saved = {k: v.numpy() for k, v in read_tensors(path / "callbacks.safetensors").items()}
            count = json.loads((path / "state.json").read_text())["callbacks"]["EMA"]["updates"]
            self.seen.append(((saved, count), (self.ema.averaged_weights(), self.ema.updates)))


@pytest.mark.parametrize("ema_first", [True, False])
def test_a_nan_rollback_puts_the_checkpoints_average_back(tmp_path, mnist_train_small, ema_first):
    model = lenet(name="linear")
    ckpt = ResumeCkpt(tmp_path / "ckpt")
    guard, ema = NaNGuard(on_nan="rollback", checkpoint=ckpt), EMA(decay=0.9)
    probe = AtRollback(guard, ema)
    ordered = [ema, guard] if ema_first else [guard, ema]
    model.fit(poisoned_data(mnist_train_small), batch_size=64, epochs=3, shuffle=False, verbose=0,
              callbacks=[ckpt, *ordered, probe])  # fmt: skip
    assert guard.rollbacks == 2 and len(probe.seen) == 2
    for (saved, count), (average, updates) in probe.seen:  # the checkpoint's average and count, no step further
        assert updates == count
        assert all(np.array_equal(average[k], saved[f"EMA/{k}"]) for k in average)
    assert nonfinite_parameters(model.network) == []  # keep="ema" put back a finite average
    assert all(np.isfinite(v).all() for v in ema.averaged_weights().values())


def test_float16_weights_are_averaged_in_float32():
    """AMP O2 casts the network to float16 (on a GPU); here the network is cast by hand, as O2 does."""
    paddle.seed(0)
    net = paddle.nn.Linear(3, 2)
    net.to(dtype="float16")
    ema = EMA(decay=0.999, warmup=False)
    ema.set_model(paddle.Model(net))
    start = {k: v.numpy().astype(np.float32) for k, v in net.state_dict().items()}
    expected = dict(start)
    for step in range(3):
        ema.on_train_batch_begin(step)
        with paddle.no_grad():
            for p in net.parameters():
                p.set_value((p.astype("float32") + 0.01).astype("float16"))
        ema.on_train_batch_end(step)
        now = {k: v.numpy().astype(np.float32) for k, v in net.state_dict().items()}
        expected = {k: expected[k] + np.float32(0.001) * (now[k] - expected[k]) for k in expected}
    average = ema.averaged_weights()
    assert {v.dtype for v in average.values()} == {np.dtype("float32")}
    for k in average:  # moves by 0.001 of each 0.01 step; in float16 those 1e-5 steps would round away
        np.testing.assert_allclose(average[k], expected[k], rtol=0, atol=1e-6)
        assert not np.array_equal(average[k], start[k])
    ema.on_train_end()  # keep="ema": the network holds the average, in its own dtype
    assert net.weight.dtype == paddle.float16
    np.testing.assert_array_equal(net.weight.numpy(), average["weight"].astype(np.float16))
