"""``MetricsLog``: the JSON-lines file (append-safe across resume) and its PNG plots."""

from __future__ import annotations

import json

import pytest
from fit_helpers import first, lenet
from PIL import Image

from paddle_mnist_hapi.callbacks import LRStepper, MetricsLog, ResumeCkpt, plot_metrics, read_metrics
from paddle_mnist_hapi.errors import ConfigError, DataCorruptError


def run_epochs(metrics: MetricsLog, epochs: range, batches: int = 4) -> None:
    """Drive the hooks like hapi does, with deterministic fake values."""
    for epoch in epochs:
        for step in range(batches):
            metrics.on_train_batch_begin(step)
            metrics.on_train_batch_end(
                step, {"loss": [1.0 / (epoch * batches + step + 1)], "acc": 0.5, "step": step, "batch_size": 64}
            )
        metrics.on_epoch_end(epoch, {"loss": [0.1 * epoch], "acc": 0.5})


def test_records_per_log_freq_step_per_epoch_and_per_evaluation(tmp_path):
    path = tmp_path / "m.jsonl"
    metrics = MetricsLog(path, log_freq=2)
    metrics.on_train_begin()
    run_epochs(metrics, range(2), batches=3)
    metrics.on_train_end()
    records = read_metrics(path)
    assert [(r["kind"], r["step"], r["epoch"]) for r in records] == [
        ("step", 2, 0),
        ("epoch", 3, 0),
        ("step", 4, 1),
        ("step", 6, 1),
        ("epoch", 6, 1),
    ]
    assert records[0]["loss"] == 0.5 and records[0]["acc"] == 0.5
    assert "batch_size" not in records[0]


def test_the_global_step_continues_across_fit_calls(tmp_path):
    path = tmp_path / "m.jsonl"
    metrics = MetricsLog(path, log_freq=4)
    for epochs in (range(1), range(1)):  # two fit calls on the same callback
        metrics.on_train_begin()
        run_epochs(metrics, epochs)
        metrics.on_train_end()
    assert [r["step"] for r in read_metrics(path) if r["kind"] == "step"] == [4, 8]


def test_a_new_run_starts_a_new_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"kind": "step", "step": 99}\n')
    metrics = MetricsLog(path, log_freq=1)
    metrics.on_train_begin()
    run_epochs(metrics, range(1), batches=1)
    metrics.on_train_end()
    assert [r["step"] for r in read_metrics(path)] == [1, 1]


def test_resume_drops_what_the_interrupted_run_wrote_after_the_checkpoint(tmp_path):
    straight = tmp_path / "straight.jsonl"
    metrics = MetricsLog(straight, log_freq=3)
    run_epochs(metrics, range(4))
    metrics.on_train_end()

    path = tmp_path / "resumed.jsonl"
    interrupted = MetricsLog(path, log_freq=3)
    run_epochs(interrupted, range(2))
    checkpoint = json.loads(json.dumps(interrupted.state_dict()))  # taken after epoch 2
    run_epochs(interrupted, range(2, 3))  # epoch 3 ran, then the process was killed mid-write:
    interrupted._file.write('{"kind": "step", "st')
    interrupted._file.flush()

    resumed = MetricsLog(path, log_freq=3)  # a new process
    resumed.load_state_dict(checkpoint)
    resumed.on_train_begin()
    run_epochs(resumed, range(2, 4))
    resumed.on_train_end()
    assert path.read_text() == straight.read_text()


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    metrics = MetricsLog(tmp_path / "m.jsonl", log_freq=1, plots_dir=tmp_path / "plots")
    metrics.on_train_begin()
    run_epochs(metrics, range(1))
    metrics.on_train_end()
    assert metrics.global_step == 4 and not (tmp_path / "m.jsonl").exists() and not (tmp_path / "plots").exists()


def test_read_metrics_rejects_a_damaged_line_in_the_middle(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"kind": "step", "step": 1}\nnot json\n{"kind": "step", "step": 2}\n')
    with pytest.raises(DataCorruptError, match="Line 2 of the metrics file is not a JSON record"):
        read_metrics(path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"log_freq": 0}, "log_freq must be an integer >= 1"), ({"plots_dir": 3}, "plots_dir must be")],
)
def test_bad_arguments_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MetricsLog(tmp_path / "m.jsonl", **kwargs)


def test_plot_metrics_draws_loss_accuracy_and_lr(tmp_path):
    rows = [
        {"kind": "step", "step": s, "epoch": s // 5, "loss": 2.0 / s, "acc": s / 20, "lr": 0.01} for s in range(1, 21)
    ]
    rows += [
        {"kind": k, "step": 5 * (e + 1), "epoch": e, "loss": 1.0 / (e + 1), "acc": 0.2 * e}
        for e in range(4)
        for k in ("epoch", "eval")
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = plot_metrics(tmp_path / "m.jsonl", tmp_path / "plots")
    assert [p.name for p in paths] == ["loss.png", "accuracy.png", "lr.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 600
            assert len(image.convert("RGB").getcolors(1 << 20)) > 20  # lines and text, not a blank canvas


def fit(tmp_path, train, test, epochs: int, run: str):
    model = lenet(0.002)
    metrics = MetricsLog(tmp_path / run / "metrics.jsonl", log_freq=3, plots_dir=tmp_path / run / "plots")
    model.fit(
        train,
        test,
        batch_size=64,
        epochs=epochs,
        verbose=0,
        callbacks=[ResumeCkpt(tmp_path / run / "ckpt"), metrics, LRStepper()],
    )
    return metrics


def test_fit_writes_the_file_and_plots_and_a_resumed_run_equals_the_straight_one(
    tmp_path, mnist_train_small, mnist_test_small
):
    train, test = first(mnist_train_small, 512), first(mnist_test_small, 128)
    straight = fit(tmp_path, train, test, epochs=2, run="straight")
    records = read_metrics(straight.path)
    assert [(r["kind"], r["step"]) for r in records if r["kind"] != "step"] == [
        ("epoch", 8),
        ("eval", 8),
        ("epoch", 16),
        ("eval", 16),
    ]
    assert [r["step"] for r in records if r["kind"] == "step"] == [3, 6, 9, 12, 15]
    assert all(0 <= r["acc"] <= 1 and r["loss"] > 0 and r["lr"] == 0.002 for r in records if r["kind"] == "step")
    assert records[-1]["acc"] > 0.5  # eval accuracy of real LeNet after 2 short epochs
    drawn = straight.wait_plots(timeout=120)  # drawn in a background process, off the training thread
    assert sorted(p.name for p in drawn) == ["accuracy.png", "loss.png", "lr.png"]
    assert sorted(p.name for p in straight.plots_dir.iterdir()) == ["accuracy.png", "loss.png", "lr.png"]

    fit(tmp_path, train, test, epochs=1, run="resumed").wait_plots(timeout=120)  # "killed" after epoch 1 ...
    path = tmp_path / "resumed" / "metrics.jsonl"
    with path.open("a") as file:  # ... having written a record past its checkpoint
        file.write('{"kind": "step", "step": 9, "epoch": 1, "loss": 9.9}\n{"kind": "st')
    fit(tmp_path, train, test, epochs=2, run="resumed").wait_plots(timeout=120)  # run again: resumes at epoch 2
    assert path.read_text() == straight.path.read_text()


def test_epoch_records_hold_the_epochs_mean_loss_its_metrics_and_its_last_learning_rate(tmp_path):
    path = tmp_path / "m.jsonl"
    metrics = MetricsLog(path, log_freq=100)
    metrics.on_train_begin()
    for epoch, (losses, sizes) in enumerate((([1.0, 2.0, 4.0], [64, 64, 32]), ([0.5, 0.25], [64, 16]))):
        for step, (loss, size) in enumerate(zip(losses, sizes, strict=True)):
            metrics.on_train_batch_begin(step)
            metrics._lr = 0.1 / (epoch * 10 + step + 1)  # what current_lr(model) read for this batch
            metrics.on_train_batch_end(step, {"loss": [loss], "acc": 0.25 * (step + 1), "batch_size": size})
        metrics.on_epoch_end(epoch, {"loss": [losses[-1]], "acc": 0.9 - epoch, "step": step, "batch_size": size})
    metrics.on_train_end()
    epochs = [r for r in read_metrics(path) if r["kind"] == "epoch"]
    assert epochs[0]["loss"] == pytest.approx((64 * 1.0 + 64 * 2.0 + 32 * 4.0) / 160)  # not hapi's last-batch 4.0
    assert epochs[1]["loss"] == pytest.approx((64 * 0.5 + 16 * 0.25) / 80)
    assert [r["acc"] for r in epochs] == [0.9, pytest.approx(-0.1)]  # hapi's epoch metrics, as they are
    assert [r["lr"] for r in epochs] == [pytest.approx(0.1 / 3), pytest.approx(0.1 / 12)]  # the last batch's rate
    assert [r["step"] for r in epochs] == [3, 5]


def test_the_epoch_mean_resumes_mid_epoch(tmp_path):
    def batches(metrics, epoch, steps):
        for step in steps:
            metrics.on_train_batch_begin(step)
            metrics.on_train_batch_end(step, {"loss": [1.0 + step], "batch_size": 8 + step})
        if steps[-1] == 3:
            metrics.on_epoch_end(epoch, {"loss": [4.0]})

    straight = MetricsLog(tmp_path / "a.jsonl", log_freq=100)
    batches(straight, 0, range(4))
    straight.on_train_end()
    first = MetricsLog(tmp_path / "b.jsonl", log_freq=100)
    batches(first, 0, range(2))
    state = json.loads(json.dumps(first.state_dict()))  # a mid-epoch checkpoint, then the process died
    resumed = MetricsLog(tmp_path / "b.jsonl", log_freq=100)
    resumed.load_state_dict(state)
    resumed.on_train_begin()
    batches(resumed, 0, range(2, 4))
    resumed.on_train_end()
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()


def test_plot_metrics_leaves_the_users_matplotlib_backend_alone(tmp_path):
    import matplotlib

    rows = [
        {"kind": "step", "step": s, "epoch": 0, "loss": 1.0 / s, "acc": 0.5, "lr": 0.01, "grad_norm": 2.0 / s,
         "param_norm": 10.0 + s}
        for s in (1, 2, 3)
    ]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)  # a notebook's, say
    try:
        paths = plot_metrics(tmp_path / "m.jsonl", tmp_path / "plots")
        assert [p.name for p in paths] == ["loss.png", "accuracy.png", "lr.png", "health.png"]
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before, force=True)


def test_path_none_writes_metrics_jsonl_in_the_run_directory(tmp_path, mnist_train_small):
    metrics = MetricsLog(log_freq=2)
    assert metrics.path is None
    model = lenet(0.002)
    model.fit(first(mnist_train_small, 128), batch_size=64, epochs=1, verbose=0, save_dir=str(tmp_path / "run"),
              callbacks=[metrics])  # fmt: skip
    assert metrics.path == tmp_path / "run" / "metrics.jsonl"
    assert [(r["kind"], r["step"]) for r in read_metrics(metrics.path)] == [("step", 2), ("epoch", 2)]


def test_the_plots_are_drawn_in_another_process_and_fit_does_not_wait_for_them(
    tmp_path, monkeypatch, mnist_train_small
):
    """README: plots drawn off the training thread. Every new Python process started with this environment
    waits at start-up until a file exists (a sitecustomize on PYTHONPATH), so the plots cannot be there when
    fit returns unless fit drew them itself; fit would hang if it waited for the plotting process."""
    import os
    import threading

    site, gate = tmp_path / "site", tmp_path / "gate"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, time\nwhile not os.path.exists(os.environ['PLOT_GATE']):\n    time.sleep(0.02)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PLOT_GATE", str(gate))
    hang_guard = threading.Timer(120, gate.touch)  # opens the gate if fit waits for the process after all
    hang_guard.start()
    try:
        metrics = MetricsLog(tmp_path / "m.jsonl", plots_dir=tmp_path / "plots")
        lenet().fit(first(mnist_train_small, 128), batch_size=64, verbose=0, callbacks=[metrics])
        assert not gate.exists(), "fit waited for the plotting process"
        assert not list(tmp_path.glob("plots/*.png"))  # fit has returned, the plots are still to come
        gate.touch()
        assert sorted(p.name for p in metrics.wait_plots(timeout=120)) == ["accuracy.png", "loss.png", "lr.png"]
    finally:
        hang_guard.cancel()
