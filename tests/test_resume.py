"""ResumeCkpt in one process: rebuilt models, corrupt checkpoints, mismatches, retention."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import paddle
import pytest

from paddle_mnist_hapi import MNIST, create_model, lenet, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt, StatefulCallback, load_weights
from paddle_mnist_hapi.callbacks.eval_loss import mean_eval_loss
from paddle_mnist_hapi.checkpoint import CheckpointStore
from paddle_mnist_hapi.checkpoint.store import read_tensors
from paddle_mnist_hapi.errors import CheckpointError, CheckpointMismatchError, ConfigError


@pytest.fixture(scope="module")
def train_data():
    return MNIST("train", limit=256)


@pytest.fixture(scope="module")
def eval_data():
    return MNIST("test", limit=128)


class Counter(StatefulCallback):
    def reset_state(self):
        self.batches = 0

    def on_train_batch_end(self, step, logs=None):
        self.batches += 1

    def state_dict(self):
        return {"batches": self.batches}

    def _load_state(self, state):
        self.batches = state["batches"]


def _model(name="lenet5", lr=0.01):
    net = create_model(name)
    model = paddle.Model(net, *specs_for(name))
    schedule = paddle.optimizer.lr.PolynomialDecay(lr, decay_steps=100, end_lr=lr / 10)
    model.prepare(
        paddle.optimizer.Adam(schedule, parameters=net.parameters()),
        paddle.nn.CrossEntropyLoss(),
        paddle.metric.Accuracy(),
    )
    return model


def _fit(model, data, ckpt, epochs, eval_data=None, batch_size=64, extra=()):
    model.fit(data, eval_data, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[ckpt, *extra])
    return {k: v.numpy().copy() for k, v in model.network.state_dict().items()}


def _equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_in_the_same_process_with_a_rebuilt_model(tmp_path, train_data):
    paddle.seed(0)
    reference = _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=2)

    paddle.seed(0)
    first = _model()
    _fit(first, train_data, ResumeCkpt(tmp_path / "run"), epochs=1)
    second = _model()  # a notebook re-runs the cell: new generated parameter names
    assert second.network.parameters()[0].name != first.network.parameters()[0].name
    ckpt = ResumeCkpt(tmp_path / "run")
    resumed = _fit(second, train_data, ckpt, epochs=2)
    assert ckpt.report["start_epoch"] == 1 and ckpt.report["resumed_from"].endswith("ckpt-000000004")
    assert _equal(resumed, reference)


def test_stateful_callbacks_are_saved_and_restored(tmp_path, train_data):
    counter = Counter()
    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1, extra=[counter])
    assert counter.batches == 4
    state = json.loads(next(tmp_path.glob("ckpt-*/state.json")).read_text())
    assert state["callbacks"] == {"Counter": {"batches": 4}}
    fresh = Counter()
    ckpt = ResumeCkpt(tmp_path)
    _fit(_model(), train_data, ckpt, epochs=2, extra=[fresh])
    assert fresh.batches == 8
    assert ckpt.report["callbacks_restored"] == ["Counter"]


def test_corrupt_newest_checkpoint_is_reported_and_the_previous_used(tmp_path, train_data, caplog):
    paddle.seed(0)
    full = _fit(_model(), train_data, ResumeCkpt(tmp_path, keep_last=5), epochs=2)
    newest = tmp_path / "ckpt-000000008"
    weights = newest / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    ckpt = ResumeCkpt(tmp_path, keep_last=5)
    with caplog.at_level(logging.WARNING):
        resumed = _fit(_model(), train_data, ckpt, epochs=2)
    assert ckpt.report["skipped"] == [
        {"checkpoint": str(newest), "reason": "model.safetensors fails its sha256 checksum (corrupt)"}
    ]
    assert ckpt.report["resumed_from"].endswith("ckpt-000000004")
    assert "fails its sha256 checksum" in caplog.text
    assert _equal(resumed, full)  # epoch 2 was redone exactly


def test_truncated_or_manifestless_checkpoints_are_skipped(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path, keep_last=5), epochs=2)
    (tmp_path / "ckpt-000000008" / "optimizer.safetensors").write_bytes(b"\0" * 10)
    (tmp_path / "ckpt-000000004" / "manifest.json").unlink()
    store = CheckpointStore(tmp_path)
    reasons = {i.name: i.reason for i in store.scan()}
    assert "optimizer.safetensors has 10 bytes" in reasons["ckpt-000000008"]
    assert "manifest missing" in reasons["ckpt-000000004"]
    with pytest.raises(CheckpointError, match="No valid checkpoint"):
        load_weights(_model(), tmp_path)


def test_retention_never_deletes_an_invalid_checkpoint(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path, keep_last=5), epochs=2)
    (tmp_path / "ckpt-000000004" / "manifest.json").unlink()  # invalid: left for a person to inspect
    _fit(_model(), train_data, ResumeCkpt(tmp_path, keep_last=1), epochs=4)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-000000004", "ckpt-000000016"]


class Raise(paddle.callbacks.Callback):
    """Raises ``error`` in hook ``hook`` at the ``at``-th call."""

    def __init__(self, hook: str, at: int, error: BaseException) -> None:
        super().__init__()
        self.calls, self.at, self.error = 0, at, error
        setattr(self, hook, self._maybe_raise)

    def _maybe_raise(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.at:
            raise self.error


def test_ctrl_c_inside_fit_leaves_a_marked_checkpoint_and_the_rerun_is_exact(tmp_path, train_data):
    paddle.seed(0)
    reference = _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=2)
    paddle.seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), train_data, ResumeCkpt(tmp_path / "run"), epochs=2,
             extra=[Raise("on_train_batch_begin", 7, KeyboardInterrupt())])  # fmt: skip
    state = json.loads((tmp_path / "run" / "ckpt-000000006" / "state.json").read_text())
    assert state["crash"]["type"] == "KeyboardInterrupt" and state["global_step"] == 6
    ckpt = ResumeCkpt(tmp_path / "run")
    assert _equal(_fit(_model(), train_data, ckpt, epochs=2), reference)
    assert ckpt.report["resumed_from"].endswith("ckpt-000000006")


def test_an_exception_during_evaluation_writes_nothing_and_the_newest_checkpoint_stands(
    tmp_path, train_data, eval_data, caplog
):
    paddle.seed(0)
    reference = _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=2, eval_data=eval_data)
    paddle.seed(0)
    failing = Raise("on_eval_batch_begin", 3, RuntimeError("bug in a callback"))  # epoch 2's evaluation
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="bug in a callback"):
        _fit(_model(), train_data, ResumeCkpt(tmp_path / "run"), epochs=2, eval_data=eval_data, extra=[failing])
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["ckpt-000000004"]  # epoch 1's, nothing newer
    assert "in the middle of an optimizer step or an evaluation" in caplog.text and "ckpt-000000004" in caplog.text
    ckpt = ResumeCkpt(tmp_path / "run")
    assert _equal(_fit(_model(), train_data, ckpt, epochs=2, eval_data=eval_data), reference)
    assert ckpt.report["resumed_from"].endswith("ckpt-000000004")


@pytest.mark.parametrize("first", [False, True], ids=["after ResumeCkpt", "before ResumeCkpt"])
@pytest.mark.parametrize("hook", ["on_epoch_begin", "on_epoch_end", "on_eval_begin", "on_eval_end"])
def test_an_exception_in_an_epoch_level_hook_undoes_everything_and_the_rerun_is_exact(
    tmp_path, train_data, eval_data, hook, first
):
    """Outside hapi's per-epoch runner too (another callback's epoch or evaluation hook): the signal
    handlers and hapi's patched loop are given back, and the newest checkpoint resumes exactly."""
    import signal

    paddle.seed(0)
    reference = _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=3, eval_data=eval_data)
    paddle.seed(0)
    model, ckpt = _model(), ResumeCkpt(tmp_path / "run")
    failing = Raise(hook, 2, RuntimeError("bug in a callback"))  # in epoch 2 (epoch 1's hook for begin hooks)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="bug in a callback"):
        model.fit(train_data, eval_data, batch_size=64, epochs=3, verbose=0,
                  callbacks=[failing, ckpt] if first else [ckpt, failing])  # fmt: skip
    assert signal.getsignal(signal.SIGTERM) is before  # the handler ResumeCkpt installed is gone
    assert "guard_epochs" not in model._run_one_epoch.__qualname__  # hapi's loop without ResumeCkpt's guard
    # epoch 1's checkpoint is written when epoch 2 begins (not when the failing hook runs before ResumeCkpt's);
    # a failure before ResumeCkpt's on_epoch_end leaves a crash checkpoint of the trained epoch
    written = sorted(p.name for p in (tmp_path / "run").glob("ckpt-*"))
    expected = {("on_epoch_begin", True): [], ("on_epoch_end", True): ["ckpt-000000004", "ckpt-000000008"]}
    assert written == expected.get((hook, first), ["ckpt-000000004"])
    paddle.seed(0)
    rerun = ResumeCkpt(tmp_path / "run")
    assert _equal(_fit(_model(), train_data, rerun, epochs=3, eval_data=eval_data), reference)
    assert (rerun.report["resumed_from"] or "").endswith(written[-1] if written else "")


@pytest.mark.parametrize("signals", [("SIGTERM",), ()], ids=["default", "empty"])
def test_signals_are_caught_only_during_fit_and_empty_signals_leave_them_alone(tmp_path, train_data, signals):
    import signal

    class Handlers(paddle.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            self.during = signal.getsignal(signal.SIGTERM)

    before, seen = signal.getsignal(signal.SIGTERM), Handlers()
    _fit(_model(), train_data, ResumeCkpt(tmp_path, signals=signals), epochs=1, extra=[seen])
    assert (seen.during is before) == (signals == ())
    assert signal.getsignal(signal.SIGTERM) is before  # given back when fit ends


def test_mismatched_batch_size_is_refused_and_nothing_is_lost(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointMismatchError, match="batch_size: checkpoint 64, now 32"):
        _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=2, batch_size=32)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_mismatched_model_names_the_parameters(tmp_path, train_data):
    _fit(_model("lenet5"), train_data, ResumeCkpt(tmp_path), epochs=1)
    with pytest.raises(CheckpointMismatchError, match=r"network: checkpoint LeNet5, now MnistCNN.*init_from="):
        _fit(_model("mnist_cnn"), train_data, ResumeCkpt(tmp_path), epochs=2)


def _setup(optimizer="adam", schedule="polynomial", accumulate=1, limit=256):
    """_model with one thing of the setup changed, and the fit that goes with it."""
    net = create_model("lenet5")
    model = paddle.Model(net, *specs_for("lenet5"))
    lr = {
        "polynomial": paddle.optimizer.lr.PolynomialDecay(0.01, decay_steps=100, end_lr=0.001),
        "cosine": paddle.optimizer.lr.CosineAnnealingDecay(0.01, T_max=100),
    }[schedule]
    make = {"adam": paddle.optimizer.Adam, "momentum": paddle.optimizer.Momentum}[optimizer]
    model.prepare(make(lr, parameters=net.parameters()), paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return lambda save_dir, epochs: model.fit(
        MNIST("train", limit=limit), batch_size=64, epochs=epochs, verbose=0, accumulate_grad_batches=accumulate,
        callbacks=[ResumeCkpt(save_dir)],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"optimizer": "momentum"}, r"optimizer: checkpoint Adam, now Momentum"),
        ({"schedule": "cosine"}, r"lr_schedule: checkpoint \{[^}]*'PolynomialDecay'\}, now \{'type': 'CosineAnn"),
        ({"limit": 192}, r"dataset_len: checkpoint 256, now 192"),
        ({"accumulate": 2}, r"accumulate_grad_batches: checkpoint 1, now 2"),
    ],
    ids=["optimizer", "schedule type", "data size", "accumulate_grad_batches"],
)
def test_a_resume_into_another_setup_is_refused_and_nothing_is_lost(tmp_path, change, match):
    """docs/checkpointing.md: another optimizer, schedule type, data size or accumulate_grad_batches in the same
    directory is refused at the start of fit, naming what differs (batch size, network and world size: the
    tests above and tests/test_resume_distributed.py)."""
    _setup()(tmp_path, 1)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointMismatchError, match=match) as error:
        _setup(**change)(tmp_path, 2)
    assert "init_from=" in str(error.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing written or deleted


def test_init_from_skips_the_weights_that_do_not_fit_and_reports_them(tmp_path, train_data):
    old_dir = tmp_path / "pretrain"
    _fit(_model(), train_data, ResumeCkpt(old_dir), epochs=1)
    saved = {k: v.numpy() for k, v in read_tensors(old_dir / "ckpt-000000004" / "model.safetensors").items()}
    five = np.asarray(train_data.labels).ravel() < 5  # fine-tune a 5-class head on the digits 0-4
    digits = MNIST.from_arrays(train_data.raw_images[five], train_data.labels[five])
    net = lenet.lenet5(num_classes=5)
    model = paddle.Model(net, *specs_for("lenet5"))
    model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())

    class Loaded(paddle.callbacks.Callback):  # the weights as training starts, after ResumeCkpt's on_train_begin
        def on_train_begin(self, logs=None):
            self.weights = {k: v.numpy().copy() for k, v in net.state_dict().items()}

    ckpt, loaded = ResumeCkpt(tmp_path / "finetune", init_from=old_dir), Loaded()
    model.fit(digits, batch_size=64, epochs=1, verbose=0, callbacks=[ckpt, loaded])
    head = sorted(k for k in saved if list(saved[k].shape) != list(loaded.weights[k].shape))
    assert len(head) == 2 and ckpt.report["weights_skipped"] == head  # the last Linear's weight and bias
    assert all(np.array_equal(loaded.weights[k], saved[k]) for k in saved if k not in head)  # the rest, exactly


def test_a_resume_with_another_thread_count_is_recorded_and_warned(tmp_path, train_data, caplog):
    """On some CPUs another thread count changes the sums (docs/scale.md): the checkpoint records the count
    (fingerprint ``cpu_threads``) and a resume with another one says so, never silently different."""
    from paddle_mnist_hapi.parallel import apply_threads

    def state(step):
        return json.loads((tmp_path / f"ckpt-{step:09d}" / "state.json").read_text())

    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1)
    assert state(4)["fingerprint"]["cpu_threads"] == 1
    same = ResumeCkpt(tmp_path)
    _fit(_model(), train_data, same, epochs=2)
    assert same.report["resumed_from"] and "threads_changed" not in same.report
    apply_threads(2)
    try:
        other = ResumeCkpt(tmp_path)
        with caplog.at_level(logging.WARNING, logger="paddle_mnist_hapi"):
            _fit(_model(), train_data, other, epochs=3)
    finally:
        apply_threads(1)
    assert other.report["resumed_from"].endswith("ckpt-000000008")  # resumed, not refused
    assert other.report["threads_changed"] == "cpu_threads: checkpoint 1, now 2"
    assert "cpu_threads: checkpoint 1, now 2" in caplog.text and "OMP_NUM_THREADS" in caplog.text
    assert state(12)["fingerprint"]["cpu_threads"] == 2


def test_init_from_starts_a_separate_run_that_a_rerun_continues(tmp_path, train_data):
    old_dir, new_dir = tmp_path / "pretrain", tmp_path / "finetune"
    saved = _fit(_model(lr=0.01), train_data, ResumeCkpt(old_dir), epochs=2)
    old_files = {p: p.read_bytes() for p in old_dir.rglob("*") if p.is_file()}
    model = _model(lr=0.001)  # another schedule: a new run, not a resume
    ckpt = ResumeCkpt(new_dir, init_from=old_dir, keep_last=1)
    model.fit(train_data, batch_size=64, epochs=1, verbose=0, num_iters=1, callbacks=[ckpt])
    assert ckpt.report["init_from"].endswith("ckpt-000000008") and ckpt.report["resumed_from"] is None
    # one step at a small lr from the loaded weights stays close to them; a fresh init would not
    now = model.network.state_dict()
    assert max(float(np.abs(now[k].numpy() - saved[k]).max()) for k in saved) < 0.05
    assert [p.name for p in new_dir.glob("ckpt-*")] == ["ckpt-000000001"]  # its own step counter, its own dir
    # the re-run of the fine-tuning script continues the fine-tuning run, not the old one
    again = ResumeCkpt(new_dir, init_from=old_dir, keep_last=1)
    _fit(_model(lr=0.001), train_data, again, epochs=1)
    assert again.report["resumed_from"].endswith("ckpt-000000001") and "init_from" not in again.report
    assert [p.name for p in new_dir.glob("ckpt-*")] == ["ckpt-000000004"]
    assert {p: p.read_bytes() for p in old_dir.rglob("*") if p.is_file()} == old_files  # the old run untouched


def test_init_from_inside_save_dir_is_refused(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1)
    with pytest.raises(ConfigError, match="outside this run's save_dir"):
        _fit(_model(), train_data, ResumeCkpt(tmp_path, init_from=tmp_path), epochs=1)


def test_finished_run_trains_no_more_but_other_callbacks_see_begin_and_end(tmp_path, train_data):
    final = _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=2)
    seen = []

    class Spy(paddle.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(f"epoch{epoch}")

        def on_train_end(self, logs=None):
            seen.append("train_end")

    model, ckpt = _model(), ResumeCkpt(tmp_path)
    again = _fit(model, train_data, ckpt, epochs=2, extra=[Spy()])
    assert ckpt.report["finished"] is True
    assert seen == ["train_begin", "train_end"]
    assert _equal(again, final)
    assert model.stop_training is False  # a later fit is not cut short


def test_resume_continues_with_more_epochs_and_skipped_epochs_stay_silent(tmp_path, train_data, eval_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1, eval_data=eval_data)
    epochs, evals = [], []

    class Spy(paddle.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs.append(epoch)

        def on_eval_end(self, logs=None):
            evals.append(dict(logs))

    ckpt = ResumeCkpt(tmp_path)
    _fit(_model(), train_data, ckpt, epochs=3, eval_data=eval_data, extra=[Spy()])
    assert epochs == [1, 2]
    assert len(evals) == 2 and all(e["step"] == 1 and e["acc"] > 0.2 for e in evals)  # real evaluations
    assert ckpt.global_step == 12


def test_keep_last_and_best_k_retention(tmp_path, train_data, eval_data):
    ckpt = ResumeCkpt(tmp_path, keep_last=1, monitor="loss", keep_best=1)
    _fit(_model(lr=0.05), train_data, ckpt, epochs=4, eval_data=eval_data)
    valid = [i for i in ckpt.store.scan() if i.valid]
    newest = max(valid, key=lambda i: i.global_step)
    assert newest.name == "ckpt-000000016"
    losses = {i.name: i.state["monitor_value"] for i in valid}
    best = ckpt.best_path()
    assert best is not None and best.name in losses
    assert len(valid) == (1 if best == newest.path else 2)
    # the best checkpoint loads for evaluation
    model = mean_eval_loss(_model())  # the monitor value is the mean over the evaluation set
    load_weights(model, best)
    assert model.evaluate(eval_data, batch_size=64, verbose=0)["loss"][0] == pytest.approx(losses[best.name], rel=1e-4)


def test_every_n_epochs_and_mid_epoch_steps(tmp_path, train_data):
    ckpt = ResumeCkpt(tmp_path, every_n_epochs=2, every_n_steps=3, keep_last=10)
    _fit(_model(), train_data, ckpt, epochs=3)
    names = sorted(p.name for p in tmp_path.glob("ckpt-*"))
    # steps 3, 6, 9 mid-epoch (not 12: that's an epoch end), epoch 2 (step 8) and the last epoch (step 12)
    assert names == ["ckpt-000000003", "ckpt-000000006", "ckpt-000000008", "ckpt-000000009", "ckpt-000000012"]
    state = json.loads((tmp_path / "ckpt-000000006" / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1)
    files = sorted(p.name for p in next(tmp_path.glob("ckpt-*")).iterdir())
    assert files == ["manifest.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"keep_last": 0}, "keep_last"), ({"every_n_steps": -1}, "every_n_steps"), ({"monitor": "speed"}, "mode")],
)
def test_bad_arguments_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ResumeCkpt(tmp_path, **kwargs)


def test_outside_fit_is_a_clear_error(tmp_path):
    ckpt = ResumeCkpt(tmp_path)
    ckpt.set_model(_model())
    with pytest.raises(CheckpointError, match=r"must run inside paddle\.Model\.fit"):
        ckpt.on_train_begin()


def test_a_non_finite_model_is_never_checkpointed(tmp_path, train_data, caplog):
    class Poison(paddle.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step == 3:  # the last batch of the epoch
                weight = self.model.network.parameters()[0]
                weight.set_value(paddle.full_like(weight, float("nan")))

    ckpt = ResumeCkpt(tmp_path, every_n_steps=2, keep_last=5)
    with caplog.at_level(logging.ERROR):
        _fit(_model(), train_data, ckpt, epochs=1, extra=[Poison()])
    assert [p.name for p in tmp_path.glob("ckpt-*")] == ["ckpt-000000002"]  # the epoch-end one was refused
    assert "NaN/Inf" in caplog.text


def test_restore_last_good_rolls_model_and_optimizer_back(tmp_path, train_data):
    model = _model()
    ckpt = ResumeCkpt(tmp_path)
    saved = _fit(model, train_data, ckpt, epochs=1)
    for param in model.network.parameters():
        param.set_value(paddle.zeros_like(param))
    info = ckpt.restore_last_good()
    assert info["checkpoint"].endswith("ckpt-000000004")
    assert _equal({k: v.numpy() for k, v in model.network.state_dict().items()}, saved)
    with pytest.raises(CheckpointError, match="No valid checkpoint"):
        ResumeCkpt(tmp_path / "empty").restore_last_good()


def test_resume_false_never_overwrites_an_existing_run(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path), epochs=1)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(CheckpointError, match=r"already holds checkpoints.*Received: save_dir="):
        _fit(_model(), train_data, ResumeCkpt(tmp_path, resume=False), epochs=1)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


# ---------------------------------------------------------------- the paths of issue #10, in one process
class _Stream(paddle.io.IterableDataset):
    def __iter__(self):
        data = MNIST("train", limit=64)
        for i in range(len(data)):
            yield data[i]


def _generator():
    data = MNIST("train", limit=64)
    for start in range(0, 64, 32):
        batch = [data[i] for i in range(start, start + 32)]
        yield [np.stack([image for image, _ in batch]), np.stack([label for _, label in batch])]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: paddle.io.DataLoader(_Stream(), batch_size=32), "IterableDataset"),
        (lambda: _generator(), "a generator or a plain iterable cannot be replayed"),
        (
            lambda: paddle.io.DataLoader(
                MNIST("train", limit=64),
                batch_sampler=paddle.io.BatchSampler(
                    sampler=paddle.io.RandomSampler(MNIST("train", limit=64), generator=iter(range(64))),
                    batch_size=32,
                ),
            ),
            "its own `generator`",
        ),
    ],
)
def test_data_whose_order_cannot_be_replayed_is_refused_at_the_start(tmp_path, make, match):
    model, seen = _model(), []

    class Spy(paddle.callbacks.Callback):
        def on_train_batch_begin(self, step, logs=None):
            seen.append(step)

    with pytest.raises(ConfigError, match=match) as error:
        model.fit(make(), epochs=1, verbose=0, callbacks=[ResumeCkpt(tmp_path), Spy()])
    assert "Received:" in str(error.value) and seen == []  # nothing trained
    assert "train_loader" not in model.__dict__
    assert model._run_one_epoch.__name__ != "run_one_epoch"  # resume's epoch guard is undone (the mean-loss one stays)


def test_num_iters_is_the_runs_total_and_a_rerun_with_epochs_continues_mid_epoch(tmp_path, train_data):
    paddle.seed(0)
    reference = _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=2)
    paddle.seed(0)
    model, ckpt = _model(), ResumeCkpt(tmp_path / "run")
    model.fit(train_data, batch_size=64, epochs=2, num_iters=3, verbose=0, callbacks=[ckpt])
    state = json.loads((tmp_path / "run" / "ckpt-000000003" / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["stop"]) == (0, 3, None)  # not a completed epoch
    again = ResumeCkpt(tmp_path / "run")
    _model().fit(train_data, batch_size=64, epochs=2, num_iters=3, verbose=0, callbacks=[again])
    assert again.report["finished"] is True  # the same script again: its 3 batches are done
    counter, rest = Counter(), ResumeCkpt(tmp_path / "run")
    resumed = _fit(_model(), train_data, rest, epochs=2, extra=[counter])
    assert rest.report["start_step"] == 3 and counter.batches == 8 - 3 + 0 and rest.global_step == 8
    assert _equal(resumed, reference)


def test_a_callback_stopping_mid_epoch_is_recorded_mid_epoch_and_ends_the_run(tmp_path, train_data):
    class StopAt(paddle.callbacks.Callback):  # what NaNGuard does
        def on_train_batch_end(self, step, logs=None):
            if step == 2:
                self.model.stop_training, self.model.num_iters = True, 1

    ckpt = ResumeCkpt(tmp_path)
    _fit(_model(), train_data, ckpt, epochs=3, extra=[StopAt()])
    state = json.loads((tmp_path / "ckpt-000000003" / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["stop"]) == (0, 3, "callback")
    again = ResumeCkpt(tmp_path)
    _fit(_model(), train_data, again, epochs=5)
    assert again.report["finished"] is True and again.global_step == 3


def test_mid_epoch_checkpoint_keeps_the_running_metrics_with_their_dtypes(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path, every_n_steps=3, keep_last=5), epochs=1)
    (metrics,) = json.loads((tmp_path / "ckpt-000000003" / "state.json").read_text())["metrics"]
    assert metrics["count"] == [{"__scalar__": 192, "dtype": "int64"}]
    assert metrics["total"][0]["dtype"] == "float32"


def test_accumulation_moves_mid_epoch_checkpoints_to_the_next_update(tmp_path):
    data = MNIST("train", limit=448)  # 7 batches an epoch: the last update group has one batch
    ckpt = ResumeCkpt(tmp_path, every_n_steps=3, keep_last=10)
    _model().fit(data, batch_size=64, epochs=2, accumulate_grad_batches=2, verbose=0, callbacks=[ckpt])
    steps = sorted(int(p.name[5:]) for p in tmp_path.glob("ckpt-*"))
    # wanted at 3, 6, 9, 12; written at the update that follows (batch 4 and 6 of epoch 1, 2 and 6 of
    # epoch 2: global 4, 6, 9, 13); epoch ends at 7 and 14
    assert steps == [4, 6, 7, 9, 13, 14]
    assert all(json.loads((tmp_path / f"ckpt-{s:09d}" / "state.json").read_text())["step_in_epoch"] % 2 == 0
               for s in (4, 6, 9, 13))  # fmt: skip


def test_a_second_fit_in_the_same_process_continues_to_the_new_total(tmp_path, train_data):
    paddle.seed(0)
    reference = _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=3)
    paddle.seed(0)
    model, counter = _model(), Counter()
    ckpt = ResumeCkpt(tmp_path / "run")
    _fit(model, train_data, ckpt, epochs=2, extra=[counter])
    continued = _fit(model, train_data, ckpt, epochs=3, extra=[counter])  # epochs is the run's total
    assert ckpt.report["start_epoch"] == 2 and counter.batches == 12
    assert _equal(continued, reference)


def test_monitor_takes_mode_and_min_delta(tmp_path, train_data, eval_data):
    with pytest.raises(ConfigError, match="mode"):
        ResumeCkpt(tmp_path, monitor="score")
    ckpt = ResumeCkpt(tmp_path, monitor="score", mode="max", min_delta=1.0, keep_last=1, keep_best=1)
    assert ckpt.monitor_mode == "max"
    # with a min_delta larger than any change, the first evaluated checkpoint stays the best
    ckpt = ResumeCkpt(tmp_path, monitor="acc", min_delta=1.0, keep_last=1)
    _fit(_model(), train_data, ckpt, epochs=3, eval_data=eval_data)
    assert ckpt.best_path().name == "ckpt-000000004"
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-000000004", "ckpt-000000012"]


def test_no_argument_uses_fits_save_dir_or_the_default_run_dir(tmp_path, train_data, monkeypatch, caplog):
    with caplog.at_level(logging.INFO):
        ckpt = ResumeCkpt()
        _model().fit(train_data, batch_size=64, epochs=1, verbose=0, save_dir=str(tmp_path / "fit"), callbacks=[ckpt])
    assert ckpt.save_dir == tmp_path / "fit" / "checkpoints" and list(ckpt.save_dir.glob("ckpt-*"))
    assert f"checkpoints go to {tmp_path / 'fit' / 'checkpoints'}" in caplog.text
    monkeypatch.chdir(tmp_path)
    ckpt = ResumeCkpt()
    _fit(_model(), train_data, ckpt, epochs=1)
    assert ckpt.save_dir.parts[0] == "runs" and ckpt.save_dir.name == "checkpoints"
    assert list((tmp_path / ckpt.save_dir).glob("ckpt-*"))


def test_progress_bar_counts_from_the_batch_the_resumed_epoch_is_at(tmp_path, train_data):
    _fit(_model(), train_data, ResumeCkpt(tmp_path, every_n_steps=6), epochs=2)  # ckpt at step 6: epoch 1, batch 2
    shutil.rmtree(tmp_path / "ckpt-000000008")
    seen = []

    class Bar(paddle.callbacks.ProgBarLogger):
        def on_train_batch_end(self, step, logs=None):
            super().on_train_batch_end(step, logs)
            seen.append(self.train_step)

    model = _model()
    model.fit(train_data, batch_size=64, epochs=2, verbose=0, callbacks=[Bar(verbose=0), ResumeCkpt(tmp_path)])
    assert seen == [3, 4]  # batches 3 and 4 of 4, not 1 and 2


def test_callback_tensor_state_round_trips_exactly(tmp_path, train_data):
    class Tensors(StatefulCallback):
        def reset_state(self):
            self.acc = paddle.zeros([3], dtype="float64")

        def on_train_batch_end(self, step, logs=None):
            self.acc = self.acc + paddle.to_tensor([logs["loss"][0], 1.0 / 3, step], dtype="float64")

        def state_tensors(self):
            return {"acc": self.acc}

        def load_state_tensors(self, tensors):
            self.acc = tensors["acc"]

    straight = Tensors()
    paddle.seed(0)
    _fit(_model(), train_data, ResumeCkpt(tmp_path / "ref"), epochs=2, extra=[straight])
    paddle.seed(0)
    _fit(_model(), train_data, ResumeCkpt(tmp_path / "run", every_n_steps=3), epochs=1, extra=[Tensors()])
    shutil.rmtree(tmp_path / "run" / "ckpt-000000004")  # resume mid-epoch 0, from step 3
    resumed = Tensors()
    _fit(_model(), train_data, ResumeCkpt(tmp_path / "run"), epochs=2, extra=[resumed])
    assert resumed.acc.dtype == paddle.float64
    assert np.array_equal(resumed.acc.numpy(), straight.acc.numpy())


def test_checkpoint_cost_bench_measures_every_model(tmp_path):
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("checkpoint_cost", ROOT / "bench" / "checkpoint_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.measure("lenet5", steps=4, rounds=1, every=2, directory=tmp_path)
    assert result["sync"]["saves_per_fit"] == result["async"]["saves_per_fit"] == 2
    assert 0 < result["async"]["stall_s"] and 0 < result["sync"]["write_s"] and result["stall_ratio"] > 0
    assert bench.breakdown("lenet5", tmp_path / "breakdown", saves=2)["total"] > 0


@pytest.mark.parametrize(("ranks", "every"), [(1, 1), (2, 1), (2, 8)])
def test_ranks_agree_on_a_stop_every_few_updates_and_at_every_epochs_end(tmp_path, ranks, every):
    """One process checks for a stop after every update; under the launcher the all-reduce that makes the
    ranks agree runs after the number of updates the last agreement set, and on each epoch's last one (under a
    real SIGTERM to 2 ranks: tests/test_resume_distributed.py, test_sigterm_with_fast_steps_...)."""
    from paddle_mnist_hapi.checkpoint.position import Position

    callback = ResumeCkpt(str(tmp_path))
    callback._ranks, callback._updates_since_agreement, callback._steps_per_epoch = ranks, 0, 20
    callback._agree_every = every
    position = Position()
    due = []
    for step in range(1, 41):
        position.step_in_epoch = (step - 1) % 20 + 1
        if callback._agreement_due(position):
            due.append(step)
    assert due == (list(range(1, 41)) if every == 1 else [8, 16, 20, 28, 36, 40])


def test_the_removed_weights_only_says_what_replaced_it(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"no longer takes weights_only.*init_from='runs/pretrain/checkpoints'"):
        ResumeCkpt(str(tmp_path), weights_only=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'keep_lats'"):
        ResumeCkpt(str(tmp_path), keep_lats=3)


def test_rng_states_round_trip_in_the_compact_form_and_older_checkpoints_still_load():
    """state.json keeps numpy's and Python's RNG words as hex text; the lists older checkpoints hold load too."""
    import random

    from paddle_mnist_hapi.checkpoint import state as S

    paddle.seed(1), np.random.seed(2), random.seed(3)
    saved = json.loads(json.dumps(S.rng_state()))
    assert isinstance(saved["numpy"][1], str) and isinstance(saved["python"][1], str)
    draws = lambda: (paddle.rand([3]).numpy().tolist(), np.random.rand(3).tolist(), random.random())  # noqa: E731
    expected = draws()
    older = {**saved, "numpy": [saved["numpy"][0], S._words(saved["numpy"][1]).tolist(), *saved["numpy"][2:]],
             "python": [saved["python"][0], S._words(saved["python"][1]).tolist(), saved["python"][2]]}  # fmt: skip
    for state in (saved, older):
        draws()  # move every generator on
        S.set_rng_state(state)
        assert draws() == expected


def test_optimizer_state_names_follow_the_first_layer_of_a_shared_parameter():
    """training_tensors names each accumulator after its parameter's first structured name (as
    named_parameters does), from one walk of the layers."""
    from paddle_mnist_hapi.checkpoint import state as S

    class Tied(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.first, self.second = paddle.nn.Linear(3, 3), paddle.nn.Linear(3, 3)
            self.second.weight = self.first.weight  # one parameter under two names

        def forward(self, x):
            return self.second(self.first(x))

    net = Tied()
    optimizer = paddle.optimizer.Adam(1e-3, parameters=net.parameters())
    net(paddle.ones([2, 3])).sum().backward()
    optimizer.step()
    groups = S.training_tensors(net, optimizer)
    names = {param.name: name for name, param in net.named_parameters()}
    expected = {f"{names[p]}/{acc}" for acc, per in optimizer._accumulators.items() for p in per}
    assert set(groups["optimizer"]) == expected and "first.weight/moment1" in expected
    assert groups["model"].keys() == net.state_dict().keys()
    assert S.optimizer_tensors(optimizer, net).keys() == groups["optimizer"].keys()
