"""Drop-in: scripts written for ``paddle.callbacks`` run unchanged with ours, and do the same.

The fit runs below follow Paddle 3.3's own unit tests for these callbacks
(``test/legacy_test/test_callback_*.py``, the class docstrings), with the
library's real MNIST in place of the downloading ``paddle.vision.datasets.MNIST``
+ ``Transpose``/``Normalize`` (the same images), and run Paddle's callback and
ours on the same fit to compare what they do. Paddle's test files themselves run
with ours in ``tests/paddle_upstream/``.
"""

from __future__ import annotations

import contextlib
import inspect
import random
import warnings
from types import SimpleNamespace

import numpy as np
import paddle
import pytest
from fit_helpers import Recorder, first
from paddle.hapi.callbacks import config_callbacks
from paddle.metric import Accuracy
from paddle.nn import CrossEntropyLoss
from paddle.static import InputSpec
from paddle.vision.models import LeNet

from paddle_mnist_hapi import callbacks
from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi.data import MNIST

SAME_NAME = ["EarlyStopping", "ReduceLROnPlateau", "VisualDL"]


@pytest.mark.parametrize("name", SAME_NAME)
def test_same_name_means_a_subclass_with_paddles_signature_first_and_extras_keyword_only(name):
    ours, theirs = getattr(callbacks, name), getattr(paddle.callbacks, name)
    assert issubclass(ours, theirs)
    paddle_params = list(inspect.signature(theirs.__init__).parameters.values())[1:]
    our_params = list(inspect.signature(ours.__init__).parameters.values())[1:]
    positional = [p for p in our_params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in positional] == [p.name for p in paddle_params]
    for mine, paddles in zip(positional, paddle_params, strict=True):
        if paddles.default is not inspect.Parameter.empty:
            assert mine.default == paddles.default, mine.name
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in our_params[len(paddle_params) :])


def test_hapi_config_callbacks_treats_ours_as_paddles(tmp_path):
    stop, stepper = callbacks.EarlyStopping(), callbacks.LRStepper()
    built = list(config_callbacks([stop, stepper, callbacks.VisualDL()], save_dir=str(tmp_path), verbose=0))
    assert stop.save_dir == str(tmp_path)  # what save_best_model writes under
    assert [c for c in built if isinstance(c, paddle.callbacks.LRScheduler)] == [stepper]  # no second LR stepper


def _feed_both(paddle_cb, our_cb, values, key):
    """Feed the same evaluation values to Paddle's callback and ours; return what each did after each one."""
    trace = []
    for cb in (paddle_cb, our_cb):
        model = SimpleNamespace(stop_training=False)
        cb.set_model(model)
        cb.on_train_begin()
        seen = []
        for epoch, value in enumerate(values):
            cb.on_epoch_end(epoch)
            cb.on_eval_end({key: [value]})
            seen.append((model.stop_training, cb.wait_epoch, cb.best_value))
            if model.stop_training:
                break
        trace.append(seen)
    return trace


@pytest.mark.parametrize("seed", range(40))
def test_early_stopping_stops_where_paddles_does(seed):
    rng = random.Random(seed)
    mode = rng.choice(["min", "max", "auto"])
    kwargs = {
        "patience": rng.randint(1, 4),
        "min_delta": rng.choice([0, 0.05]),
        "baseline": rng.choice([None, 0.5]),
        "verbose": 0,
    }
    values = [rng.choice([0.3, 0.4, 0.5, 0.6, 0.7]) for _ in range(12)]
    key = "acc" if seed % 2 else "loss"
    theirs = paddle.callbacks.EarlyStopping(key, mode, **kwargs)
    ours = callbacks.EarlyStopping(key, mode, **kwargs)
    paddles, mine = _feed_both(theirs, ours, values, key)
    assert mine == paddles
    if paddles[-1][0]:
        assert ours.stopped_epoch == len(paddles) == theirs.stopped_epoch  # the epoch it stopped after, from 1


def _constant_lr_model(lr: float) -> paddle.Model:
    net = paddle.nn.Linear(2, 2)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(lr, parameters=net.parameters()))
    return model


@pytest.mark.parametrize("seed", range(40))
def test_reduce_lr_on_plateau_reduces_where_paddles_does(seed):
    rng = random.Random(seed)
    kwargs = {
        "factor": rng.choice([0.1, 0.5]),
        "patience": rng.randint(0, 3),
        "cooldown": rng.randint(0, 2),
        "min_delta": rng.choice([1e-4, 0.05]),
        "min_lr": rng.choice([0, 0.01]),
        "mode": rng.choice(["auto", "min", "max"]),
        "verbose": 0,
    }
    values = [rng.choice([0.3, 0.4, 0.5, 0.6]) for _ in range(15)]
    lrs = []
    for cls in (paddle.callbacks.ReduceLROnPlateau, callbacks.ReduceLROnPlateau):
        model = _constant_lr_model(0.1)
        plateau = cls("acc" if seed % 2 else "loss", **kwargs)
        plateau.set_model(model)
        plateau.on_train_begin()
        seen = []
        for value in values:
            plateau.on_eval_end({plateau.monitor: [value]})
            seen.append(model._optimizer.get_lr())
        lrs.append(seen)
    assert lrs[1] == pytest.approx(lrs[0], rel=1e-9)


# -- Paddle's own unit tests and docstring examples, on the real MNIST ----------------------------------------------


def _paddle_style_model(seed: int = 2020) -> paddle.Model:
    paddle.seed(seed)
    net = LeNet()
    optim = paddle.optimizer.Adam(learning_rate=0.001, parameters=net.parameters())
    inputs = [InputSpec([None, 1, 28, 28], "float32", "x")]
    labels = [InputSpec([None, 1], "int64", "label")]
    model = paddle.Model(net, inputs=inputs, labels=labels)
    model.prepare(optim, loss=CrossEntropyLoss(reduction="sum"), metrics=[Accuracy()])
    return model


class _Epochs(paddle.callbacks.Callback):
    """The epochs that ran (works in static-graph mode too)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.append(epoch)


@contextlib.contextmanager
def _graph_mode(dynamic: bool):
    """Dygraph, or static-graph mode with a program, scope and names of its own (every run: the same weights)."""
    if dynamic:
        yield
        return
    paddle.enable_static()
    try:
        with (
            paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()),
            paddle.static.scope_guard(paddle.static.Scope()),
            paddle.utils.unique_name.guard(),
        ):
            yield
    finally:
        paddle.disable_static()


def _paddles_early_stopping_test(lib, save_dir, train, val, dynamic):
    """Paddle's ``test_earlystopping``, with ``lib`` = ``paddle.callbacks`` or ours; returns the epochs that ran."""
    with _graph_mode(dynamic):
        model = _paddle_style_model()
        recorder = _Epochs()
        callbacks_0 = lib.EarlyStopping(
            "loss", mode="min", patience=1, verbose=1, min_delta=0, baseline=None, save_best_model=True
        )
        callbacks_1 = lib.EarlyStopping(
            "acc", mode="auto", patience=1, verbose=1, min_delta=0, baseline=0, save_best_model=True
        )
        callbacks_2 = lib.EarlyStopping(
            "loss", mode="auto_", patience=1, verbose=1, min_delta=0, baseline=None, save_best_model=True
        )
        callbacks_3 = lib.EarlyStopping(
            "acc_", mode="max", patience=1, verbose=1, min_delta=0, baseline=0, save_best_model=True
        )
        model.fit(
            train,
            val,
            batch_size=64,
            save_freq=10,
            save_dir=str(save_dir),
            epochs=10,
            verbose=0,
            callbacks=[callbacks_0, callbacks_1, callbacks_2, callbacks_3, recorder],
        )
        model.fit(
            train, batch_size=64, save_freq=10, save_dir=str(save_dir), epochs=10, verbose=0, callbacks=[callbacks_0]
        )
    return recorder


@pytest.mark.parametrize("dynamic", [True, False], ids=["dygraph", "static_graph"])
def test_paddles_early_stopping_unit_test_runs_unchanged_and_does_the_same(tmp_path, capsys, dynamic):
    # Paddle's test runs the same script in dygraph mode, then under paddle.enable_static().
    train, val = first(MNIST("train", limit=100), 100), first(MNIST("test", limit=100), 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paddles_run = _paddles_early_stopping_test(paddle.callbacks, tmp_path / "paddle", train, val, dynamic)
        paddles_lines = [line for line in capsys.readouterr().out.splitlines() if "Early stopping" in line]
        caught.clear()
        our_run = _paddles_early_stopping_test(callbacks, tmp_path / "ours", train, val, dynamic)
        our_lines = [line for line in capsys.readouterr().out.splitlines() if "Early stopping" in line]
    messages = [str(w.message) for w in caught]
    assert any("mode 'auto_' is unknown, fallback to auto mode" in m for m in messages)
    assert any("monitors 'acc_'" in m for m in messages)  # the missing metric is named, as Paddle warns

    assert our_run.batches == paddles_run.batches and len(our_run.batches) < 10  # stopped at the same epoch
    assert our_lines and [line.split(" (")[0].rstrip(".") for line in our_lines] == [
        line.rstrip(".") for line in paddles_lines
    ]
    # save_best_model: best_model under fit's save_dir, the same weights Paddle's saved
    theirs = paddle.load(str(tmp_path / "paddle" / "best_model.pdparams"))
    mine = paddle.load(str(tmp_path / "ours" / "best_model.pdparams"))
    assert sorted(mine) == sorted(theirs) and mine
    assert all(np.array_equal(np.asarray(mine[k]), np.asarray(theirs[k])) for k in theirs)
    assert paddle.in_dynamic_mode()


class _CustomMnist(paddle.io.Dataset):
    """Paddle's ``CustomMnist`` ("accelerate unittest"): the first 8 images of a split."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.data = MNIST(mode, limit=8)

    def __getitem__(self, index):
        return self.data[index]

    def __len__(self) -> int:
        return 8


def _paddles_reduce_lr_test(lib):
    """Paddle's ``test_reduce_lr_on_plateau``, with ``lib`` = ``paddle.callbacks`` or ours."""
    paddle.seed(0)
    net = LeNet()
    optim = paddle.optimizer.Adam(learning_rate=0.001, parameters=net.parameters())
    inputs = [InputSpec([None, 1, 28, 28], "float32", "x")]
    labels = [InputSpec([None, 1], "int64", "label")]
    model = paddle.Model(net, inputs=inputs, labels=labels)
    model.prepare(optim, loss=CrossEntropyLoss(), metrics=[Accuracy()])
    recorder = Recorder()
    cb = lib.ReduceLROnPlateau(patience=1, verbose=1, cooldown=1)
    model.fit(
        _CustomMnist("train"),
        _CustomMnist("test"),
        batch_size=8,
        log_freq=1,
        save_freq=10,
        epochs=10,
        verbose=0,
        callbacks=[cb, recorder],
    )
    return model, recorder.lrs, cb


def test_paddles_reduce_lr_unit_test_runs_unchanged_and_really_reduces(capsys):
    _, paddles, _ = _paddles_reduce_lr_test(paddle.callbacks)
    capsys.readouterr()
    model, ours, plateau = _paddles_reduce_lr_test(callbacks)
    out = capsys.readouterr().out
    # Until the first reduction both runs are the same run, so the first reduction comes at the same epoch.
    first_cut = next(i for i, lr in enumerate(paddles) if lr < 0.001)
    assert ours[: first_cut + 1] == pytest.approx(paddles[: first_cut + 1], rel=1e-6)
    assert out.count("ReduceLROnPlateau reducing learning rate") == plateau.reductions > 1
    # The learning rate it reports is the one the optimizer applies. (Paddle 3.3's assigns
    # optimizer._learning_rate, which dygraph Adam no longer reads after its first step.)
    applied = float(model._optimizer._global_learning_rate())
    assert applied == pytest.approx(model._optimizer.get_lr()) and applied < 0.001


def test_paddles_reduce_lr_unit_test_in_static_graph_mode_reduces_where_paddles_does_and_applies_it(capsys):
    with _graph_mode(dynamic=False):
        _, paddles, _ = _paddles_reduce_lr_test(paddle.callbacks)
    capsys.readouterr()
    with _graph_mode(dynamic=False):
        model, ours, plateau = _paddles_reduce_lr_test(callbacks)
        applied = static_graph.read(static_graph.require_learning_rate_name(model)).item()
    out = capsys.readouterr().out
    first_cut = next(i for i, lr in enumerate(paddles) if lr < 0.001)
    assert ours[: first_cut + 1] == pytest.approx(paddles[: first_cut + 1], rel=1e-6)
    assert out.count("ReduceLROnPlateau reducing learning rate") == plateau.reductions > 1
    # ... and the rate it reports is the one the program trains with (Paddle's sets the optimizer's
    # _learning_rate, which the built program does not read)
    assert applied == pytest.approx(model._optimizer.get_lr(), rel=1e-6) and applied < 0.001


def test_paddles_reduce_lr_warn_or_error_test_runs_unchanged():
    with pytest.raises(ValueError):
        callbacks.ReduceLROnPlateau(factor=2.0)
    with pytest.warns(UserWarning, match="mode '1' is unknown"):
        callbacks.ReduceLROnPlateau(mode="1", patience=3, verbose=1)

    paddle.seed(0)
    net = LeNet()
    model = paddle.Model(net, [InputSpec([None, 1, 28, 28], "float32", "x")], [InputSpec([None, 1], "int64", "label")])
    model.prepare(paddle.optimizer.Adam(0.001, parameters=net.parameters()), CrossEntropyLoss(), Accuracy())
    cb = callbacks.ReduceLROnPlateau(monitor="miou", patience=3, verbose=1)
    assert cb.mode == "max"  # IoU: higher is better (Paddle's 'auto' would pick 'min': no 'acc' in the name)
    with pytest.warns(UserWarning, match="monitors 'miou'"):
        model.fit(_CustomMnist("train"), _CustomMnist("test"), batch_size=8, log_freq=1, epochs=1, callbacks=[cb])

    # Paddle's only warns here (the learning rate is a schedule); ours reduces on top of the schedule.
    # (Paddle's test passes PiecewiseDecay([0.001, 0.0001], [5, 10]), which Paddle 3.3 itself refuses.)
    schedule = paddle.optimizer.lr.PiecewiseDecay([5, 10], [0.001, 0.0001, 0.00001])
    model.prepare(paddle.optimizer.Adam(schedule, parameters=net.parameters()), CrossEntropyLoss(), Accuracy())
    cb = callbacks.ReduceLROnPlateau(monitor="acc", mode="max", patience=3, verbose=1, cooldown=1)
    model.fit(_CustomMnist("train"), _CustomMnist("test"), batch_size=8, log_freq=1, epochs=3, callbacks=[cb])
    assert cb.epoch == 3 and isinstance(model._optimizer._learning_rate, callbacks.lr.ScaledLR)


def test_paddles_visualdl_unit_test_runs_unchanged(tmp_path, monkeypatch):
    from visualdl import LogReader

    monkeypatch.chdir(tmp_path)
    inputs = [InputSpec([-1, 1, 28, 28], "float32", "image")]
    labels = [InputSpec([None, 1], "int64", "label")]
    net = LeNet()
    model = paddle.Model(net, inputs, labels)
    optim = paddle.optimizer.Adam(0.001, parameters=net.parameters())
    model.prepare(optimizer=optim, loss=paddle.nn.CrossEntropyLoss(), metrics=paddle.metric.Accuracy())
    callback = callbacks.VisualDL(log_dir="visualdl_log_dir")
    model.fit(MNIST("train", limit=1280), MNIST("test", limit=128), batch_size=64, callbacks=callback, verbose=0)
    (log_file,) = (tmp_path / "visualdl_log_dir").glob("vdlrecords.*.log")
    tags = LogReader(file_path=str(log_file)).get_tags()["scalar"]
    assert {"train/loss", "train/acc", "eval/loss", "eval/acc"} <= set(tags)  # Paddle's tag names, and more


def test_visualdl_without_a_directory_writes_under_fits_save_dir_or_the_default_run_dir(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="paddle_mnist_hapi")
    net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(784, 10))
    model = paddle.Model(net, [InputSpec([None, 1, 28, 28], "float32", "x")], [InputSpec([None, 1], "int64", "y")])
    model.prepare(paddle.optimizer.SGD(0.01, parameters=net.parameters()), CrossEntropyLoss())
    board = callbacks.VisualDL(log_freq=1, images=0)
    model.fit(MNIST("train", limit=64), batch_size=32, save_dir=str(tmp_path / "run"), verbose=0, callbacks=[board])
    assert board.log_dir == tmp_path / "run" / "vdl"
    assert list(board.log_dir.glob("vdlrecords.*.log"))
    assert f"writing the board to {board.log_dir.resolve()}" in caplog.text

    board = callbacks.VisualDL(log_freq=1, images=0)
    model.fit(MNIST("train", limit=64), batch_size=32, verbose=0, callbacks=[board])
    assert board.log_dir.resolve().parent.parent == (tmp_path / "runs").resolve()  # runs/<script name>/vdl
    assert list(board.log_dir.glob("vdlrecords.*.log"))
