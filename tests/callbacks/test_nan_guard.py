"""``NaNGuard``: stop right after the batch that went non-finite, or roll back to the last good checkpoint."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from fit_helpers import ArrayDataset, Recorder, first, lenet

from paddle_mnist_hapi.callbacks import NaNGuard, ResumeCkpt, load_weights, nonfinite_parameters
from paddle_mnist_hapi.errors import CheckpointError, ConfigError


class PoisonedAfterFirstRead(ArrayDataset):
    """Sample ``index`` turns into NaN pixels from its second read on (i.e. from the second epoch).

    The tests train the linear model: LeNet's ReLUs would turn NaN inputs into zeros.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: int) -> None:
        super().__init__(images, labels)
        self.index, self.reads = index, 0

    def __getitem__(self, index: int):
        image, label = super().__getitem__(index)
        if index == self.index:
            self.reads += 1
            if self.reads > 1:
                image = np.full_like(image, np.nan)
        return image, label


def fake_model():
    return SimpleNamespace(stop_training=False, network=paddle.nn.Linear(2, 1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_loss_stops_after_this_batch(bad):
    guard = NaNGuard()
    model = fake_model()
    guard.set_model(model)
    guard.on_train_batch_end(0, {"loss": [1.5]})
    assert not model.stop_training and not guard.triggered
    guard.on_train_batch_end(1, {"loss": [bad]})
    assert model.stop_training and model.num_iters == 1  # hapi ends the epoch after this batch
    assert guard.triggered
    assert guard.events == [{"batch": 2, "step": 1, "what": "loss", "value": repr(bad), "action": "stop"}]
    state = json.loads(json.dumps(guard.state_dict()))
    again = NaNGuard()
    again.load_state_dict(state)
    assert again.triggered and again.events == guard.events


def test_parameters_are_checked_every_n_batches():
    guard = NaNGuard(check_parameters_every=2)
    model = fake_model()
    guard.set_model(model)
    model.network.bias.set_value(paddle.to_tensor([float("nan")]))
    guard.on_train_batch_end(0, {"loss": [1.0]})  # batch 1: parameters not checked
    assert not guard.triggered
    guard.on_train_batch_end(1, {"loss": [1.0]})  # batch 2: checked
    assert guard.triggered and guard.events[0]["what"] == "parameters" and guard.events[0]["value"] == "bias"


class FakeCheckpoint:
    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, 0

    def restore_last_good(self):
        self.calls += 1
        if self.fail:
            raise CheckpointError("No valid checkpoint in /x to roll back to.")
        return {"checkpoint": "/x/ckpt-000000008", "global_step": 8}


def test_rollback_until_max_rollbacks_then_stop():
    checkpoint = FakeCheckpoint()
    guard = NaNGuard(on_nan="rollback", checkpoint=checkpoint, max_rollbacks=2)
    model = fake_model()
    guard.set_model(model)
    for step in range(3):
        guard.on_train_batch_end(step, {"loss": [float("nan")]})
    assert checkpoint.calls == 2
    assert [e["action"] for e in guard.events] == ["rollback", "rollback", "stop"]
    assert guard.events[0]["restored"]["global_step"] == 8
    assert model.stop_training and guard.triggered


def test_rollback_without_a_checkpoint_stops_cleanly():
    guard = NaNGuard(on_nan="rollback", checkpoint=FakeCheckpoint(fail=True))
    model = fake_model()
    guard.set_model(model)
    guard.on_train_batch_end(0, {"loss": [float("nan")]})
    assert model.stop_training
    assert guard.events[0]["action"] == "stop" and "No valid checkpoint" in guard.events[0]["reason"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_nan": "ignore"}, "on_nan must be 'stop' or 'rollback'. Received: on_nan='ignore'"),
        ({"on_nan": "rollback"}, "needs the checkpoint callback to roll back with"),
        ({"check_parameters_every": -1}, "check_parameters_every must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        NaNGuard(**kwargs)


def poisoned_data(mnist_train_small) -> PoisonedAfterFirstRead:
    # 512 images, batch 64, no shuffle: sample 200 is in batch 3 (0-based) of every epoch.
    data = first(mnist_train_small, 512)
    return PoisonedAfterFirstRead(data.images, data.labels, index=200)


def test_fit_stops_at_the_nan_batch_and_no_nan_is_checkpointed(tmp_path, mnist_train_small):
    model = lenet(name="linear")
    ckpt, guard, recorder = ResumeCkpt(tmp_path / "ckpt"), NaNGuard(), Recorder()
    model.fit(
        poisoned_data(mnist_train_small),
        batch_size=64,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[ckpt, guard, recorder],
    )
    assert recorder.batches == {0: 8, 1: 4}  # stopped right after the 4th batch of epoch 2, not at its end
    assert guard.triggered and guard.events[0]["batch"] == 12 and guard.events[0]["action"] == "stop"
    assert nonfinite_parameters(model.network)  # the weights did go bad ...
    assert ckpt.latest_path().name.endswith("000000008")  # ... but the newest checkpoint is from before
    restored = lenet(name="linear")
    load_weights(restored, ckpt.latest_path())
    assert nonfinite_parameters(restored.network) == []


def test_fit_rolls_back_to_the_last_good_checkpoint_and_finishes(tmp_path, mnist_train_small):
    model = lenet(name="linear")
    ckpt = ResumeCkpt(tmp_path / "ckpt")
    guard, recorder = NaNGuard(on_nan="rollback", checkpoint=ckpt), Recorder()
    model.fit(
        poisoned_data(mnist_train_small),
        batch_size=64,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[ckpt, guard, recorder],
    )
    assert recorder.batches == {0: 8, 1: 8, 2: 8}
    assert guard.rollbacks == 2 and not guard.triggered
    assert [e["restored"]["global_step"] for e in guard.events] == [8, 16]  # each time the epoch-end checkpoint
    assert nonfinite_parameters(model.network) == []
