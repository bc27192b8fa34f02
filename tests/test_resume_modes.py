"""ResumeCkpt in hapi's other modes and on the paths a new user takes: the AMP loss scaler, LR schedules
nested in wrappers whose length changed, save_dir values that cannot be a run directory, and what the
report and the log say after a run that finished or stopped early."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi import MNIST, create_model, schedules, specs_for
from paddle_mnist_hapi.callbacks import EarlyStopping, ResumeCkpt
from paddle_mnist_hapi.callbacks.lr import ScaledLR
from paddle_mnist_hapi.errors import CheckpointMismatchError, ConfigError

from conftest import PYTHON, ROOT

LR = paddle.optimizer.lr
STEPS_PER_EPOCH = 2  # 128 images, batch 64


@pytest.fixture(scope="module")
def train_data():
    return MNIST("train", limit=128)


def _model(schedule=0.01, amp=None, name="linear"):
    paddle.seed(0)
    net = create_model(name)
    model = paddle.Model(net, *specs_for(name))
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=net.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
        amp_configs=amp,
    )
    return model


def _weights(model):
    return {k: v.numpy().copy() for k, v in model.network.state_dict().items()}


def _same_weights(a, b):
    a, b = _weights(a), _weights(b)
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- AMP
class StandInGradScaler(paddle.amp.GradScaler):
    """``paddle.amp.GradScaler``'s API and dynamic loss scaling, enabled on a CPU.

    Paddle disables a ``GradScaler`` (and ``auto_cast``) on CPU, so no real scaler can run on this machine:
    a disabled one has an empty ``state_dict()``. This stand-in is the one place a fake is used, for the
    wiring only (``ResumeCkpt`` must create hapi's scaler before loading the checkpointed state into it);
    ``tests/scripts/amp_resume_gpu.py`` checks the real one on a GPU (``test_amp_resume_on_a_gpu``).
    It scales by powers of two, so the gradients it unscales are exactly the unscaled ones.
    """

    def __init__(self, init_loss_scaling=2.0**16, incr_ratio=2.0, decr_ratio=0.5, incr_every_n_steps=2000,
                 decr_every_n_nan_or_inf=1, use_dynamic_loss_scaling=True, enable=True):  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "AmpScaler can only be enabled on CUDAPlace ..."
            super().__init__(enable=False)
        self._enable, self._use_dynamic_loss_scaling = True, use_dynamic_loss_scaling
        self._init_loss_scaling = init_loss_scaling
        self._scale = paddle.to_tensor(np.array([init_loss_scaling], dtype=np.float32))
        self._incr_ratio, self._decr_ratio = incr_ratio, decr_ratio
        self._incr_every_n_steps, self._decr_every_n_nan_or_inf = incr_every_n_steps, decr_every_n_nan_or_inf
        self._incr_count = self._decr_count = 0

    def scale(self, var):
        return var * self._scale

    def minimize(self, optimizer, *args, **kwargs):
        params = [p for p in optimizer._parameter_list if p.grad is not None]
        with paddle.no_grad():
            for p in params:
                p.grad.set_value(p.grad / self._scale)
        if all(bool(paddle.isfinite(p.grad).all()) for p in params):
            optimizer.step()
            self._incr_count, self._decr_count = self._incr_count + 1, 0
            if self._incr_count == self._incr_every_n_steps:
                self._scale, self._incr_count = self._scale * self._incr_ratio, 0
        else:
            self._incr_count, self._decr_count = 0, self._decr_count + 1
            if self._decr_count == self._decr_every_n_nan_or_inf:
                self._scale, self._decr_count = self._scale * self._decr_ratio, 0


def _scaler(model):
    return {k: np.asarray(v).tolist() for k, v in model._scaler.state_dict().items()}


@pytest.mark.parametrize("level", ["O1", "O2"])
def test_the_amp_scaler_state_goes_into_the_scaler_hapi_then_uses(tmp_path, train_data, monkeypatch, level):
    monkeypatch.setattr(paddle.amp, "GradScaler", StandInGradScaler)  # what hapi's train_batch creates
    amp = {"level": level, "init_loss_scaling": 1024.0, "incr_every_n_steps": 3}

    def run(save_dir, epochs):
        model, ckpt = _model(amp=amp), ResumeCkpt(save_dir)
        model.fit(train_data, batch_size=64, epochs=epochs, verbose=0, callbacks=[ckpt])
        return model, ckpt

    straight, _ = run(tmp_path / "straight", 3)  # 6 updates: the scale doubles after the 3rd and the 6th
    assert _scaler(straight)["scale"] == [4096.0] and _scaler(straight)["incr_count"] == 0
    first, _ = run(tmp_path / "resumed", 2)  # 4 updates: 2048, one good step counted
    assert _scaler(first)["scale"] == [2048.0] and _scaler(first)["incr_count"] == 1
    resumed, ckpt = run(tmp_path / "resumed", 3)  # a new model: prepare() left it no scaler
    assert ckpt.report["resumed_from"].endswith("ckpt-000000004")
    assert isinstance(resumed._scaler, StandInGradScaler)
    assert _scaler(resumed) == _scaler(straight)  # not 1024 and 0 again
    assert _same_weights(resumed, straight)


def test_the_stand_in_scaler_trains_like_no_scaler(tmp_path, train_data, monkeypatch):
    """The stand-in changes nothing but the scale: its run equals one without AMP, bit for bit."""
    monkeypatch.setattr(paddle.amp, "GradScaler", StandInGradScaler)
    with_scaler, without = _model(amp={"level": "O1", "incr_every_n_steps": 2}), _model()
    for model in (with_scaler, without):
        model.fit(train_data, batch_size=64, epochs=2, verbose=0)
    assert _scaler(with_scaler)["scale"] == [2.0**18]
    assert _same_weights(with_scaler, without)


def test_resuming_an_amp_run_without_amp_is_refused(tmp_path, train_data):
    _model(amp="O1").fit(train_data, batch_size=64, epochs=1, verbose=0, callbacks=[ResumeCkpt(tmp_path)])
    with pytest.raises(CheckpointMismatchError, match="amp_level: checkpoint O1, now None"):
        _model().fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[ResumeCkpt(tmp_path)])


def test_amp_resume_on_a_gpu(tmp_path, subprocess_env):
    """The real GradScaler, O1 and O2, resumed in a new process: run where Paddle has a GPU."""
    if not (paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0):
        pytest.skip("needs a CUDA GPU and paddlepaddle-gpu (Paddle disables AMP and its scaler on CPU)")
    done = subprocess.run([PYTHON, str(ROOT / "tests/scripts/amp_resume_gpu.py"), str(tmp_path)], env=subprocess_env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "O1: exact" in lines and "O2: exact" in lines, done.stdout


# ---------------------------------------------------------------- LR schedules through their wrappers
# name -> a schedule for a run of `epochs` epochs (STEPS_PER_EPOCH updates each); a longer run changes its length
SCHEDULES = {
    "schedules.polynomial_decay": lambda e: schedules.polynomial_decay(e, STEPS_PER_EPOCH),
    "schedules.warmup_cosine": lambda e: schedules.warmup_cosine(0.01, e, STEPS_PER_EPOCH, warmup_steps=2),
    "schedules.warmup_cosine, no warmup": lambda e: schedules.warmup_cosine(0.01, e, STEPS_PER_EPOCH),
    "schedules.piecewise": lambda e: schedules.piecewise([0.01, 0.001], [e - 1], STEPS_PER_EPOCH),
    "schedules.one_cycle": lambda e: schedules.one_cycle(0.01, e, STEPS_PER_EPOCH),
    "PolynomialDecay": lambda e: LR.PolynomialDecay(0.01, decay_steps=e * STEPS_PER_EPOCH),
    "CosineAnnealingDecay": lambda e: LR.CosineAnnealingDecay(0.01, T_max=e * STEPS_PER_EPOCH),
    "PiecewiseDecay": lambda e: LR.PiecewiseDecay([e * STEPS_PER_EPOCH - 1], [0.01, 0.001]),
    "LinearWarmup(PolynomialDecay)": lambda e: LR.LinearWarmup(
        LR.PolynomialDecay(0.01, decay_steps=e * STEPS_PER_EPOCH - 2), 2, 0.0, 0.01
    ),
    "LinearWarmup(CosineAnnealingDecay)": lambda e: LR.LinearWarmup(
        LR.CosineAnnealingDecay(0.01, T_max=e * STEPS_PER_EPOCH - 2), 2, 0.0, 0.01
    ),
    "LinearWarmup(float), warmup sized by the run": lambda e: LR.LinearWarmup(0.01, e * STEPS_PER_EPOCH, 0.0, 0.01),
    "OneCycleLR": lambda e: LR.OneCycleLR(0.01, total_steps=e * STEPS_PER_EPOCH),
    "LinearLR": lambda e: LR.LinearLR(0.01, total_steps=e * STEPS_PER_EPOCH),
    "MultiStepDecay": lambda e: LR.MultiStepDecay(0.01, milestones=[e * STEPS_PER_EPOCH - 1]),
    "StepDecay": lambda e: LR.StepDecay(0.01, step_size=e * STEPS_PER_EPOCH - 1),
    "CyclicLR": lambda e: LR.CyclicLR(0.001, 0.01, step_size_up=e * STEPS_PER_EPOCH),
    "CosineAnnealingWarmRestarts": lambda e: LR.CosineAnnealingWarmRestarts(0.01, T_0=e * STEPS_PER_EPOCH),
    "ScaledLR(LinearWarmup(CosineAnnealingDecay))": lambda e: ScaledLR(
        LR.LinearWarmup(LR.CosineAnnealingDecay(0.01, T_max=e * STEPS_PER_EPOCH - 2), 2, 0.0, 0.01), factor=0.5
    ),
}


def test_every_builder_of_the_schedules_module_is_covered():
    builders = {name for name in schedules.__all__ if name != "total_updates"}
    assert builders == {name.split(",")[0].split(".")[1] for name in SCHEDULES if name.startswith("schedules.")}


class FirstLR(paddle.callbacks.Callback):
    def on_train_batch_begin(self, step, logs=None):
        self.__dict__.setdefault("lr", float(self.model._optimizer.get_lr()))


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_a_schedule_whose_length_changed_is_noted_and_continues_at_its_step(tmp_path, train_data, caplog, name):
    make = SCHEDULES[name]
    short = _model(make(2))
    short.fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[ResumeCkpt(tmp_path)])
    longer, ckpt, first = _model(make(4)), ResumeCkpt(tmp_path), FirstLR()
    with caplog.at_level(logging.WARNING, logger="paddle_mnist_hapi"):
        longer.fit(train_data, batch_size=64, epochs=4, verbose=0, callbacks=[ckpt, first])
    assert ckpt.report["start_epoch"] == 2 and ckpt.global_step == 8
    assert ckpt.report["schedule_changed"].startswith("lr_schedule: checkpoint")
    assert "the LR schedule changed" in caplog.text
    fresh = make(4)  # the new schedule where the run stands: 4 updates in
    for _ in range(2 * STEPS_PER_EPOCH):
        fresh.step()
    assert first.lr == fresh()  # replayed with the new settings: bit for bit


class LRs(paddle.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_begin(self, step, logs=None):
        self.lrs.append(float(self.model._optimizer.get_lr()))


def test_cosine_warm_restarts_resumes_at_its_place_in_the_cycle(tmp_path, train_data):
    """Its position in the cycle (``T_cur``) is not in its state_dict: the resume replays it."""

    def run(save_dir, epochs):
        lrs = LRs()
        _model(LR.CosineAnnealingWarmRestarts(0.01, T_0=3)).fit(
            train_data, batch_size=64, epochs=epochs, verbose=0, callbacks=[ResumeCkpt(save_dir), lrs]
        )
        return lrs.lrs

    straight = run(tmp_path / "straight", 4)
    assert run(tmp_path / "resumed", 2) + run(tmp_path / "resumed", 4) == straight


def test_a_nested_schedule_of_another_kind_is_refused(tmp_path, train_data):
    cosine = LR.LinearWarmup(LR.CosineAnnealingDecay(0.01, T_max=4), 2, 0.0, 0.01)
    _model(cosine).fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[ResumeCkpt(tmp_path)])
    linear = LR.LinearWarmup(LR.PolynomialDecay(0.01, decay_steps=4), 2, 0.0, 0.01)
    with pytest.raises(CheckpointMismatchError, match="belongs to a different setup: lr_schedule"):
        _model(linear).fit(train_data, batch_size=64, epochs=3, verbose=0, callbacks=[ResumeCkpt(tmp_path)])


# ---------------------------------------------------------------- save_dir that cannot be a run directory
def test_an_existing_file_is_refused_when_built(tmp_path):
    weights = tmp_path / "x.pdparams"
    weights.write_bytes(b"weights")
    with pytest.raises(ConfigError, match=r"ResumeCkpt's save_dir is the directory of one run .* is a file"):
        ResumeCkpt(weights)
    assert weights.read_bytes() == b"weights"


def test_an_unwritable_directory_is_refused_at_the_start_of_fit(train_data):
    model, ckpt = _model(), ResumeCkpt("/proc/nope")
    with pytest.raises(ConfigError, match=r"ResumeCkpt cannot write its checkpoints: creating and writing '/proc/"):
        model.fit(train_data, batch_size=64, epochs=1, verbose=0, callbacks=[ckpt])
    assert not os.path.exists("/proc/nope")


def test_a_checkpoint_directory_is_refused_naming_its_run_and_init_from(tmp_path, train_data):
    run = tmp_path / "runs/x/checkpoints"
    _model().fit(train_data, batch_size=64, epochs=1, verbose=0, callbacks=[ResumeCkpt(run)])
    checkpoint = run / "ckpt-000000002"
    assert checkpoint.is_dir()
    with pytest.raises(ConfigError) as refused:
        ResumeCkpt(checkpoint)
    message = str(refused.value)
    assert f"ResumeCkpt({str(run)!r})" in message and f"init_from={str(checkpoint)!r}" in message
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(  # nothing nested inside it
        ["manifest.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    )


# ---------------------------------------------------------------- finished, stopped early, the report
class ScriptedScore(paddle.callbacks.Callback):
    """Put first in the list: sets each evaluation's ``score`` (the same logs reach the callbacks after it)."""

    def __init__(self, scores):
        super().__init__()
        self.scores, self.evals = list(scores), 0

    def on_eval_end(self, logs=None):
        logs["score"] = self.scores[self.evals]
        self.evals, self.logs = self.evals + 1, logs

    def on_train_end(self, logs=None):
        if self.evals:  # hapi reuses one logs dict for every fit in the process: leave no score in it
            self.logs.pop("score", None)


def test_an_early_stopped_run_is_finished_and_a_longer_rerun_says_how_to_go_on(tmp_path, train_data, caplog):
    test = MNIST("test", limit=64)

    def run(epochs):
        stop = EarlyStopping("score", "max", patience=1, verbose=0)
        ckpt = ResumeCkpt(tmp_path)
        _model().fit(train_data, test, batch_size=64, epochs=epochs, verbose=0,
                     callbacks=[ScriptedScore([0.5, 0.9, 0.8, 0.95, 0.99, 0.99]), ckpt, stop])  # fmt: skip
        return ckpt

    first = run(5)  # stops after epoch 3: no improvement on epoch 2's 0.9
    assert (first.report["finished"], first.report["stopped"], first.global_step) == (True, "callback", 6)
    with caplog.at_level(logging.WARNING, logger="paddle_mnist_hapi"):
        again = run(10)
    assert again.report["finished"] is True and again.global_step == 6
    assert "ended the run at epoch 3" in caplog.text
    assert f"ResumeCkpt('<new save_dir>', init_from={str(tmp_path)!r})" in caplog.text


def test_finished_is_true_after_a_run_that_finished_and_false_after_one_that_was_cut_short(tmp_path, train_data):
    done = ResumeCkpt(tmp_path / "done")
    _model().fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[done])
    assert done.report["finished"] is True and done.report["stopped"] is None
    cut = ResumeCkpt(tmp_path / "cut", max_time=1e-6)  # no time for even one more step
    _model().fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[cut])
    assert cut.report["stopped"] == "max_time" and cut.report["finished"] is False
    rest = ResumeCkpt(tmp_path / "cut")
    _model().fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[rest])
    assert rest.report["finished"] is True and rest.global_step == 4


def test_every_report_field_is_documented(tmp_path, train_data):
    documented = (ROOT / "docs/checkpointing.md").read_text()
    docstring = ResumeCkpt.__doc__
    first, again = ResumeCkpt(tmp_path / "a"), ResumeCkpt(tmp_path / "a")
    _model(LR.PolynomialDecay(0.01, 2)).fit(train_data, batch_size=64, epochs=1, verbose=0, callbacks=[first])
    _model(LR.PolynomialDecay(0.01, 4)).fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[again])
    tuned = ResumeCkpt(tmp_path / "b", init_from=tmp_path / "a")
    _model().fit(train_data, batch_size=64, epochs=1, verbose=0, callbacks=[tuned])
    fields = set(first.report) | set(again.report) | set(tuned.report)
    assert {"schedule_changed", "init_from", "callbacks_restored", "weights_skipped"} <= fields
    for field in fields:
        assert f"`{field}`" in documented and f"``{field}``" in docstring, field
