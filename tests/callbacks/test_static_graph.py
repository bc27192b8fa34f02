"""Every library callback under ``paddle.enable_static()`` (hapi's static-graph adapter): it works, with the
outcome it has in dygraph mode, or it refuses when ``fit`` starts with an error that names it.

In static-graph mode the network is a program and its numbers live in the global scope; each test reads the
outcome from there (``static_graph.network_arrays``), the way a user's ``paddle.static`` code sees it. Each
model is built in a fresh program, scope and name space (``static_mode``), so two runs in one process
start from the same weights. ResumeCkpt's kill-and-resume runs are real subprocesses
(tests/scripts/static_train.py), SIGKILLed once a checkpoint exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import paddle
import pytest
from fit_helpers import ArrayDataset, first

from paddle_mnist_hapi import create_model, specs_for
from paddle_mnist_hapi._private import static_graph
from paddle_mnist_hapi.callbacks import (
    EMA,
    EarlyStopping,
    LRStepper,
    MetricsLog,
    NaNGuard,
    ReduceLROnPlateau,
    ResumeCkpt,
    TrainingHealth,
    VisualDL,
    read_metrics,
)
from paddle_mnist_hapi.callbacks.eval_loss import mean_eval_loss
from paddle_mnist_hapi.callbacks.nan_guard import nonfinite_parameters
from paddle_mnist_hapi.errors import ConfigError
from paddle_mnist_hapi.lr_find import lr_find

from conftest import PYTHON, ROOT

# Paddle's own backward pass in static mode asks a program value for its place and warns (hapi, not us).
pytestmark = pytest.mark.filterwarnings("ignore:Tensor do not have 'place' interface:UserWarning")


@contextlib.contextmanager
def static_mode(old_ir: bool = False):
    """``paddle.enable_static()`` with a program, scope and names of its own; dygraph again afterwards."""
    with paddle.pir_utils.OldIrGuard() if old_ir else contextlib.nullcontext():
        paddle.enable_static()
        try:
            with (
                paddle.static.program_guard(paddle.static.Program(), paddle.static.Program()),
                paddle.utils.unique_name.guard(),
                paddle.static.scope_guard(paddle.static.Scope()),
            ):
                yield
        finally:
            paddle.disable_static()


def lenet(learning_rate=0.002, seed: int = 0, linear: bool = False) -> paddle.Model:
    """LeNet-5 (or, with ``linear``, one linear layer: NaN pixels reach its loss, LeNet's ReLUs zero them)."""
    paddle.seed(seed)
    net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(784, 10)) if linear else create_model("lenet5")
    model = paddle.Model(net, *specs_for("lenet5"))
    optimizer = paddle.optimizer.Adam(learning_rate=learning_rate, parameters=net.parameters())
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    return model


class Scope(paddle.callbacks.Callback):
    """What the executor really used: the weights after every batch and during each evaluation, the rate."""

    def __init__(self) -> None:
        super().__init__()
        self.initial: dict[str, np.ndarray] | None = None
        self.after_batch: list[dict[str, np.ndarray]] = []
        self.during_eval: list[dict[str, np.ndarray]] = []
        self.rates: list[float] = []
        self.reported: list[float] = []
        self.losses: list[float] = []

    def _weights(self) -> dict[str, np.ndarray]:
        return static_graph.network_arrays(self.model.network)

    def on_train_batch_begin(self, step, logs=None):
        if self.initial is None:
            self.initial = self._weights()

    def on_train_batch_end(self, step, logs=None):
        self.after_batch.append(self._weights())
        self.rates.append(static_graph.read(static_graph.require_learning_rate_name(self.model)).item())
        self.reported.append(float(self.model._optimizer.get_lr()))
        self.losses.append(float(logs["loss"][0]))

    def on_eval_batch_begin(self, step, logs=None):
        if step == 0:
            self.during_eval.append(self._weights())


@pytest.fixture(scope="module")
def data(mnist_train_small, mnist_test_small):
    return first(mnist_train_small, 256), first(mnist_test_small, 128)


def test_the_helpers_see_a_static_model_and_leave_a_dygraph_one_alone():
    assert not static_graph.is_static(lenet())
    with static_mode():
        model = lenet()
        assert static_graph.is_static(model) and static_graph.is_static_network(model.network)
        weights = static_graph.network_arrays(model.network)
        assert sorted(weights) == sorted(model.network.state_dict())
        static_graph.set_network_arrays(model.network, {k: np.zeros_like(v) for k, v in weights.items()})
        assert not any(v.any() for v in static_graph.network_arrays(model.network).values())


# -- refusals -----------------------------------------------------------------------------------------------------


def test_training_health_refuses_a_static_fit_before_any_batch(tmp_path, data):
    train, _ = data
    with static_mode():
        model, scope, ckpt = lenet(), Scope(), ResumeCkpt(tmp_path / "ckpt")
        with pytest.raises(ConfigError) as caught:
            model.fit(train, batch_size=64, verbose=0, callbacks=[scope, ckpt, TrainingHealth()])
    message = str(caught.value)
    assert message.startswith("TrainingHealth needs dygraph mode: it measures the gradients")
    assert "paddle.disable_static() before creating it" in message
    assert scope.after_batch == [] and not (tmp_path / "ckpt").exists()  # refused before anything ran


def test_a_static_fit_on_several_ranks_is_refused_before_any_batch(data, monkeypatch):
    # (Paddle's launcher sets these; the ranks' collectives the callbacks use are dygraph ones.)
    train, _ = data
    with static_mode():
        model, scope = lenet(), Scope()
        monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
        monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
        with pytest.raises(ConfigError, match=r"need dygraph mode under paddle\.distributed\.launch") as caught:
            model.fit(train, batch_size=64, verbose=0, callbacks=[scope, EarlyStopping(verbose=0)])
    assert "on 2 ranks" in str(caught.value) and scope.after_batch == []


# -- ResumeCkpt: SIGKILLed after a checkpoint, re-run, bit for bit ---------------------------------------------------

SCRIPT = str(ROOT / "tests/scripts/static_train.py")
# the kill point; printed in every failure message (set STATIC_RESUME_SEED to replay it)
SEED = int(os.environ.get("STATIC_RESUME_SEED") or secrets.randbelow(1 << 30))


def _run(subprocess_env, save_dir: Path, out: Path, args: list[str]) -> subprocess.Popen:
    cmd = [PYTHON, SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *args]
    return subprocess.Popen(cmd, env=subprocess_env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=600)  # a hang guard only
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr


def _result(out: Path) -> dict:
    return json.loads(Path(f"{out}.json").read_text())


def _records(out: Path) -> tuple[dict, dict]:
    """The batch and evaluation records, the last written winning (a re-run redoes unsaved steps)."""
    batches, evals = {}, {}
    for line in Path(f"{out}.batches.jsonl").read_text().splitlines():
        record = {k: v for k, v in json.loads(line).items() if k != "pid"}
        (evals if "eval" in record else batches)[record.get("eval", record.get("step"))] = record
    return batches, evals


def _board(directory: Path) -> dict[str, list]:
    from visualdl import LogReader

    (file,) = directory.glob("vdlrecords.*.log")
    reader = LogReader(file_path=str(file))
    tags = reader.get_tags()
    scalars = {t: [(r.id, r.value) for r in reader.get_data("scalar", t)] for t in tags["scalar"] if "per_sec" not in t}
    return {**scalars, "histograms": sorted(tags.get("histogram", [])), "images": sorted(tags.get("image", []))}


CELLS = {
    "Dataset, fit(shuffle=True), every_n_steps=3": ["--every-n-steps", "3"],
    "every library callback that works in static mode": ["--every-n-steps", "3", "--stack"],
    "every library callback, the legacy static graph (OldIrGuard)": ["--every-n-steps", "3", "--stack", "--old-ir"],
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CELLS))
def test_resume_ckpt_after_sigkill_is_bit_identical_in_static_mode(tmp_path, subprocess_env, name):
    args = CELLS[name]
    ref = tmp_path / "ref" / "out"
    code, stderr = _finish(_run(subprocess_env, tmp_path / "ref" / "ckpt", ref, args))
    assert code == 0, stderr[-3000:]
    total = _result(ref)["total"]
    assert _result(ref)["static"] and total == 18
    # kill once a checkpoint at or after a random step exists (mid-epoch or an epoch's end), 6 or more steps
    # (1.8 s of sleeps) before the end of training
    at = random.Random(f"{SEED}/{name}").choice([3, 6, 9, 12])
    note = f"{name}: killed after the checkpoint at step {at} (seed {SEED})"
    save_dir, out = tmp_path / "ckpt", tmp_path / "run" / "out"
    proc = _run(subprocess_env, save_dir, out, [*args, "--sleep", "0.3"])
    try:
        deadline = time.monotonic() + 300
        while not any(int(c.name[5:]) >= at for c in save_dir.glob("ckpt-*")):
            assert proc.poll() is None, f"training ended before the kill point: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "kill point not reached in time"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        code, _ = _finish(proc)
    assert code == -signal.SIGKILL, note  # killed, not finished
    code, stderr = _finish(_run(subprocess_env, save_dir, out, args))
    assert code == 0, stderr[-3000:]
    done, want = _result(out), _result(ref)
    resumed = done["report"]["global_step"]
    assert done["report"]["resumed_from"] and resumed >= at, note
    assert done["here"] == total - resumed and done["total"] == total, note  # no batch trained twice or skipped
    a, b = np.load(f"{out}.npz"), np.load(f"{ref}.npz")
    assert sorted(a.files) == sorted(b.files) and any(k.startswith("opt/") for k in a.files)
    assert [k for k in a.files if not np.array_equal(a[k], b[k])] == [], note
    assert done["evaluate"] == want["evaluate"], note
    assert _records(out) == _records(ref), note
    if "--stack" in args:
        assert Path(f"{out}.metrics.jsonl").read_bytes() == Path(f"{ref}.metrics.jsonl").read_bytes(), note
        assert _board(Path(f"{out}.vdl")) == _board(Path(f"{ref}.vdl")), note
        assert sorted(done["report"]["callbacks_restored"]) == sorted(
            ["Counter", "EarlyStopping", "ReduceLROnPlateau", "VisualDL", "MetricsLog", "NaNGuard", "EMA"]
        )
        lrs = [r["lr"] for r in _records(ref)[0].values()]
        assert lrs[-1] < lrs[0] / 1.9  # ReduceLROnPlateau halved the schedule's rate: its factor was resumed too


def test_resume_ckpt_restores_a_static_models_weights_optimizer_and_schedule(tmp_path, data):
    train, _ = data
    with static_mode():
        model, ckpt = lenet(paddle.optimizer.lr.StepDecay(0.01, step_size=2)), ResumeCkpt(tmp_path)
        model.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[ckpt])
        names = {
            **static_graph.state_names(model.network),
            **static_graph.optimizer_names(model._optimizer, model.network),
        }
        saved = {name: static_graph.read(name) for name in names.values()}
        model.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[ResumeCkpt(tmp_path / "other")])
        assert any(not np.array_equal(saved[n], static_graph.read(n)) for n in saved)  # trained on
        ckpt.restore_last_good()
        assert all(np.array_equal(saved[n], static_graph.read(n)) for n in saved)
        assert model._optimizer._learning_rate.last_epoch == 4  # StepDecay's position after 4 batches


def test_an_error_inside_the_executors_step_leaves_the_newest_regular_checkpoint(tmp_path, mnist_train_small, caplog):
    # The executor may have updated part of the weights when it raises, so that state is never checkpointed.
    images, labels = mnist_train_small.images[:256], mnist_train_small.labels[:256].copy()
    labels[150] = 99  # the third batch's loss fails inside the executor
    with static_mode(), pytest.raises(IndexError):
        lenet().fit(ArrayDataset(images, labels), batch_size=64, shuffle=False, verbose=0,
                    callbacks=[ResumeCkpt(tmp_path, every_n_steps=1)])  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-000000001", "ckpt-000000002"]
    assert all(json.loads((p / "state.json").read_text())["crash"] is None for p in tmp_path.glob("ckpt-*"))
    assert "in the middle of an optimizer step" in caplog.text


def test_resume_ckpt_init_from_starts_a_static_run_from_another_runs_weights(tmp_path, data):
    train, _ = data
    with static_mode():
        first_run = lenet()
        first_run.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[ResumeCkpt(tmp_path / "first")])
        trained = static_graph.network_arrays(first_run.network)
    with static_mode():
        model, scope = lenet(seed=1), Scope()
        ckpt = ResumeCkpt(tmp_path / "second", init_from=tmp_path / "first")
        model.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[scope, ckpt])
    assert ckpt.report["init_from"].endswith("ckpt-000000004") and ckpt.report["weights_skipped"] == []
    assert all(np.array_equal(scope.initial[k], trained[k]) for k in trained)  # trained on from those weights


# -- EMA: the same average as in dygraph mode, evaluated and kept --------------------------------------------------


def test_ema_averages_the_scopes_weights_evaluates_them_and_keeps_them(data):
    train, test = data
    with static_mode():
        model, scope, ema = lenet(0.01), Scope(), EMA(decay=0.9)
        model.fit(train, test, batch_size=64, epochs=2, verbose=0, callbacks=[scope, ema])
        final = static_graph.network_arrays(model.network)
    assert ema.updates == 8
    # the dygraph EMA's own arithmetic (lerp, float32) over the weights the executor produced
    with static_graph.eager():
        average = {k: paddle.to_tensor(v) for k, v in scope.initial.items() if v.dtype == np.float32}
        at_epoch_end = []
        for n, weights in enumerate(scope.after_batch):
            rate = 1 - min(0.9, (1 + n) / (10 + n))
            for k, v in average.items():
                average[k] = paddle.lerp(v, paddle.to_tensor(weights[k]), paddle.full([], rate, "float32"))
            if n % 4 == 3:
                at_epoch_end.append({k: v.numpy() for k, v in average.items()})
    averaged = ema.averaged_weights()
    assert all(np.array_equal(averaged[k], at_epoch_end[-1][k]) for k in averaged)  # bit for bit
    for during, expected in zip(scope.during_eval, at_epoch_end, strict=True):  # evaluation ran on the average
        assert all(np.array_equal(during[k], expected[k]) for k in expected)
    assert all(np.array_equal(final[k], averaged[k]) for k in averaged)  # keep="ema"
    assert not np.array_equal(averaged["features.0.weight"], scope.after_batch[-1]["features.0.weight"])


def test_ema_keep_trained_leaves_the_trained_weights_and_swapped_shows_the_average(data):
    train, _ = data
    with static_mode():
        model, scope, ema = lenet(0.01), Scope(), EMA(decay=0.9, keep="trained")
        model.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[scope, ema])
        trained = static_graph.network_arrays(model.network)
        with ema.swapped():
            inside = static_graph.network_arrays(model.network)
        after = static_graph.network_arrays(model.network)
    averaged = ema.averaged_weights()
    assert all(np.array_equal(trained[k], scope.after_batch[-1][k]) for k in trained)
    assert all(np.array_equal(inside[k], averaged[k]) for k in averaged)
    assert all(np.array_equal(after[k], trained[k]) for k in trained)


# -- EarlyStopping, ReduceLROnPlateau, LRStepper, NaNGuard, MetricsLog ---------------------------------------------


def test_early_stopping_restores_the_best_weights_in_static_mode(data):
    train, test = data
    with static_mode():
        model, scope = lenet(0.05), Scope()
        stop = EarlyStopping("loss", patience=1, verbose=0, restore_best_weights=True)
        model.fit(train, test, batch_size=64, epochs=10, verbose=0, callbacks=[scope, stop])
        final = static_graph.network_arrays(model.network)
    assert stop.stopped_epoch and stop.best_epoch < stop.epoch  # stopped, after a worse epoch
    best = scope.after_batch[4 * stop.best_epoch + 3]  # 4 batches an epoch: the weights the best evaluation saw
    assert all(np.array_equal(final[k], best[k]) for k in best)


@pytest.mark.parametrize("ema_first", [False, True])
def test_early_stopping_with_ema_ends_with_the_average_that_scored_best_in_static_mode(data, ema_first):
    train, test = data
    with static_mode():
        model, scope = lenet(0.05), Scope()
        stop = EarlyStopping("loss", patience=1, verbose=0, restore_best_weights=True)
        ema = EMA(decay=0.9)
        ordered = [ema, stop] if ema_first else [stop, ema]
        model.fit(train, test, batch_size=64, epochs=10, verbose=0, callbacks=[scope, *ordered])
        final = static_graph.network_arrays(model.network)
    assert stop.stopped_epoch and stop.best_epoch < stop.epoch
    evaluated = scope.during_eval[stop.best_epoch]  # EMA's average, which the best evaluation ran on
    assert all(np.array_equal(final[k], evaluated[k]) for k in evaluated)
    assert not np.array_equal(final["features.0.weight"], ema.averaged_weights()["features.0.weight"])


def test_reduce_lr_on_plateau_changes_the_rate_the_program_uses(data):
    train, test = data
    with static_mode():
        model, scope = lenet(0.01), Scope()
        plateau = ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0, verbose=0)  # every eval a plateau
        model.fit(train, test, batch_size=64, epochs=3, verbose=0, callbacks=[scope, plateau])
    assert plateau.reductions == 2  # the first evaluation sets the best, the next two reduce ...
    assert scope.rates == pytest.approx([0.01] * 8 + [0.005] * 4, rel=1e-6)  # ... and the program applies it
    assert scope.reported == pytest.approx(scope.rates, rel=1e-6)


def test_reduce_lr_on_plateau_scales_a_schedule_the_program_reads(data):
    train, test = data
    with static_mode():
        model, scope = lenet(paddle.optimizer.lr.StepDecay(0.01, step_size=4, gamma=0.1)), Scope()
        plateau = ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0, verbose=0)
        model.fit(train, test, batch_size=64, epochs=3, verbose=0, callbacks=[scope, plateau, LRStepper()])
    # the schedule: 0.01 for 4 updates, then 0.001, 0.0001; times 0.5 from the second evaluation on
    assert scope.rates == pytest.approx([0.01] * 4 + [0.001] * 4 + [0.00005] * 4, rel=1e-5)


def test_lr_stepper_steps_the_schedule_per_update_in_static_mode(data):
    train, _ = data
    with static_mode():
        model, scope = lenet(paddle.optimizer.lr.StepDecay(0.01, step_size=1, gamma=0.5)), Scope()
        model.fit(train, batch_size=64, epochs=1, verbose=0, callbacks=[scope, LRStepper()])
    assert scope.rates == pytest.approx([0.01, 0.005, 0.0025, 0.00125], rel=1e-6)


def test_nan_guard_stops_after_the_batch_whose_loss_is_not_finite(mnist_train_small):
    images, labels = mnist_train_small.images[:256].copy(), mnist_train_small.labels[:256]
    images[130] = np.nan  # in the third batch of 64
    with static_mode():
        model, scope, guard = lenet(linear=True), Scope(), NaNGuard(check_parameters_every=1)
        model.fit(ArrayDataset(images, labels), batch_size=64, epochs=3, shuffle=False, verbose=0,
                  callbacks=[scope, guard])  # fmt: skip
        bad = nonfinite_parameters(model.network)
        name = static_graph.state_names(model.network)["1.bias"]
        static_graph.write(name, np.full_like(static_graph.read(name), np.inf))
        inf_bias = nonfinite_parameters(model.network)
    assert guard.triggered and len(scope.after_batch) == 3
    assert guard.events[0]["batch"] == 3 and guard.events[0]["what"] == "loss"
    assert bad == ["1.weight", "1.bias"]  # the NaN batch's update left non-finite weights: seen in the scope
    assert "1.bias" in inf_bias  # and an infinity written into the scope


def test_nan_guard_rolls_back_to_the_checkpoint_in_static_mode(tmp_path, mnist_train_small):
    images, labels = mnist_train_small.images[:256].copy(), mnist_train_small.labels[:256]
    images[200] = np.nan  # in the fourth batch of the first epoch only (no shuffling)
    with static_mode():
        model, scope = lenet(linear=True), Scope()
        ckpt = ResumeCkpt(tmp_path, every_n_steps=2)
        guard = NaNGuard(on_nan="rollback", checkpoint=ckpt, max_rollbacks=1)
        model.fit(ArrayDataset(images, labels), batch_size=64, epochs=1, shuffle=False, verbose=0,
                  callbacks=[ckpt, scope, guard])  # fmt: skip
        final = static_graph.network_arrays(model.network)
    assert guard.rollbacks == 1 and not guard.triggered
    assert all(np.isfinite(v).all() for v in final.values())
    assert all(np.array_equal(final[k], scope.after_batch[1][k]) for k in final)  # the weights of the step-2 checkpoint


def test_metrics_log_writes_what_the_static_fit_logged(tmp_path, data):
    train, test = data
    with static_mode():
        model, scope = lenet(), Scope()
        model.fit(train, test, batch_size=64, epochs=2, verbose=0,
                  callbacks=[scope, MetricsLog(tmp_path / "m.jsonl", log_freq=1)])  # fmt: skip
    steps = [r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "step"]
    assert [r["loss"] for r in steps] == pytest.approx(scope.losses, rel=1e-7)
    assert [r["lr"] for r in steps] == pytest.approx(scope.rates, rel=1e-6)
    assert len([r for r in read_metrics(tmp_path / "m.jsonl") if r["kind"] == "eval"]) == 2


# -- VisualDL: Paddle's scalars, and ours, on the same static fit --------------------------------------------------


def _tags(log_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict]:
    from visualdl import LogReader

    (file,) = log_dir.glob("vdlrecords.*.log")
    reader = LogReader(file_path=str(file))
    tags = reader.get_tags()
    scalars = {t: [(r.id, r.value) for r in reader.get_data("scalar", t)] for t in tags["scalar"]}
    return scalars, tags


@pytest.mark.parametrize("old_ir", [False, True], ids=["pir", "old_ir"])
def test_visualdl_writes_every_scalar_paddles_writes_in_static_mode(tmp_path, data, old_ir):
    train, test = data
    with static_mode(old_ir):
        model = lenet()
        theirs = paddle.callbacks.VisualDL(str(tmp_path / "paddle"))
        ours = VisualDL(tmp_path / "ours", log_freq=1, histogram_freq=1, images=8)
        model.fit(train, test, batch_size=64, epochs=2, verbose=0, callbacks=[theirs, ours])
    paddles, _ = _tags(tmp_path / "paddle")
    mine, tags = _tags(tmp_path / "ours")
    assert set(paddles) == {"train/loss", "train/acc", "eval/loss", "eval/acc"}
    for tag, points in paddles.items():  # the same values at the same points (Paddle: eval at the epoch index)
        assert [v for _, v in mine[tag]] == [v for _, v in points], tag
        if tag.startswith("train/"):
            assert [s for s, _ in mine[tag]] == [s for s, _ in points], tag
    assert {"train/lr", "epoch/loss", "eval/loss"} <= set(mine)
    assert "eval/samples" in tags["image"] and "weights/features.0.weight" in tags["histogram"]


def test_the_sample_grid_predictions_are_the_networks(data):
    _, test = data
    with static_mode():
        model = lenet()
        weights = static_graph.network_arrays(model.network)
        outputs = static_graph.predict(model, [test.images[:16]], [test.labels[:16]])
    net = create_model("lenet5")  # dygraph, the same weights
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    net.eval()
    np.testing.assert_allclose(outputs[0], net(paddle.to_tensor(test.images[:16])).numpy(), rtol=1e-5, atol=1e-6)


# -- the mean evaluation loss and lr_find ---------------------------------------------------------------------------


def test_the_mean_evaluation_loss_patch_works_on_a_static_model(mnist_test_small):
    test = first(mnist_test_small, 130)  # batches of 64, 64 and 2
    with static_mode():
        model = mean_eval_loss(lenet())
        result = model.evaluate(test, batch_size=64, verbose=0)
        weights = static_graph.network_arrays(model.network)
    net = create_model("lenet5")
    net.set_state_dict({k: paddle.to_tensor(v) for k, v in weights.items()})
    net.eval()
    by_hand = paddle.nn.functional.cross_entropy(net(paddle.to_tensor(test.images)), paddle.to_tensor(test.labels))
    assert result["loss"][0] == pytest.approx(float(by_hand), rel=1e-5)


@pytest.mark.parametrize("schedule", [False, True], ids=["constant", "schedule"])
def test_lr_find_sweeps_the_rate_and_restores_everything_in_static_mode(data, schedule):
    train, _ = data
    learning_rate = paddle.optimizer.lr.StepDecay(1e-3, 5) if schedule else 1e-3
    dygraph = lr_find(lenet(learning_rate), train, batch_size=32, num_steps=12, start_lr=1e-4, end_lr=0.1)
    paddle.seed(0)
    with static_mode():
        model = lenet(learning_rate)
        names = [*static_graph.state_names(model.network).values(),
                 *static_graph.optimizer_names(model._optimizer, model.network).values()]  # fmt: skip
        before = {name: static_graph.read(name) for name in names}
        paddle.seed(0)
        np.random.seed(0)
        result = lr_find(model, train, batch_size=32, num_steps=12, start_lr=1e-4, end_lr=0.1)
        after = {name: static_graph.read(name) for name in names}
        rate = static_graph.read(static_graph.require_learning_rate_name(model))
    assert all(np.array_equal(before[n], after[n]) for n in names) and rate.item() == pytest.approx(1e-3)
    assert result.lrs == dygraph.lrs
    assert result.losses == pytest.approx(dygraph.losses, rel=1e-3)  # the same sweep as in dygraph mode
