"""ResumeCkpt's background writes (checkpoint/writer.py): the same guarantee as a write on the training thread.

A SIGKILL during a background write leaves the previous checkpoint (real subprocess, re-run bit-identical);
the end of fit, SIGTERM, max_time and an exception wait for the write; a failed write is raised on the
training thread as CheckpointError; one write at a time; readers of the store see complete checkpoints.
``PADDLE_MNIST_HAPI_SLOW_CKPT_WRITE`` (seconds, checkpoint/store.py) holds each write between its files and
its manifest, so that a write is surely in flight when the test looks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import paddle
import pytest
import resume_harness as H

from paddle_mnist_hapi import MNIST, create_model, specs_for
from paddle_mnist_hapi.callbacks import ResumeCkpt
from paddle_mnist_hapi.checkpoint.store import CheckpointStore, HostTensor, host_tensor, read_tensors
from paddle_mnist_hapi.checkpoint.writer import STAGED_BYTES, CheckpointWriter, all_finite
from paddle_mnist_hapi.errors import CheckpointError, ConfigError

SLOW = "PADDLE_MNIST_HAPI_SLOW_CKPT_WRITE"
STEPS_PER_EPOCH = 8  # MNIST("train", limit=256), batch 32


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    return H.References(tmp_path_factory.mktemp("references"))


@pytest.fixture(scope="module")
def train_data():
    return MNIST("train", limit=256)


def _model() -> paddle.Model:
    net = create_model("linear")
    model = paddle.Model(net, *specs_for("linear"))
    model.prepare(paddle.optimizer.Adam(1e-3, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    return model


class OnBatch(paddle.callbacks.Callback):
    """Calls ``act(global batch number)`` after each training batch; counts the batches."""

    def __init__(self, act=lambda n: None, sleep: float = 0.0) -> None:
        super().__init__()
        self.act, self.sleep, self.batches = act, sleep, 0

    def on_train_batch_end(self, step, logs=None):
        self.batches += 1
        self.act(self.batches)
        time.sleep(self.sleep)


def _complete(save_dir) -> list[str]:
    return sorted(info.name for info in CheckpointStore(save_dir).scan() if info.valid)


def _tmp_steps(save_dir) -> list[int]:
    return [int(re.match(r"\.tmp-ckpt-(\d+)-", p.name).group(1)) for p in save_dir.glob(".tmp-ckpt-*")]


# ---------------------------------------------------------------- a real SIGKILL during a background write
def test_sigkill_during_a_background_write_leaves_the_previous_checkpoint_and_the_rerun_is_exact(
    tmp_path, references, monkeypatch
):
    ref = references.get([])
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    monkeypatch.setenv(SLOW, "3")  # each write waits 3 s between its files and its manifest
    proc = H.start(save_dir, out, ["--every-n-steps", "4", "--sleep", "0.05"])
    try:
        deadline = time.monotonic() + 240
        while True:  # a complete checkpoint, a newer one half written, and training gone on past it
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no background write in flight while training went on"
            in_flight, done = _tmp_steps(save_dir), [r["step"] for r in H.records(out) if "step" in r]
            if _complete(save_dir) and in_flight and list(save_dir.glob(".tmp-*/state.json")):
                if max(done, default=0) >= max(in_flight) + 2:
                    break
            time.sleep(0.01)
        complete_before = _complete(save_dir)
        H.kill_group(proc)
        proc.wait(timeout=60)
    finally:
        H.kill_group(proc)
    assert proc.returncode == -signal.SIGKILL  # it was the signal that ended it
    monkeypatch.delenv(SLOW)
    assert _complete(save_dir) == complete_before  # the half-written checkpoint is invisible ...
    assert not any(f"ckpt-{step:09d}" in complete_before for step in _tmp_steps(save_dir))  # ... and stays .tmp
    done = H.run(save_dir, out, ["--every-n-steps", "4"])
    resumed = int(done["report"]["resumed_from"][-9:])
    assert f"ckpt-{resumed:09d}" == complete_before[-1] and not list(save_dir.glob(".tmp-*"))
    H.assert_no_batch_repeated(out, resumed, H.result(ref)["total"])
    H.assert_same_run(out, ref, "SIGKILL during a background checkpoint write")


# ---------------------------------------------------------------- what waits for the writer
class SendSignal(paddle.callbacks.Callback):
    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.batches = at, 0

    def on_train_batch_end(self, step, logs=None):
        self.batches += 1
        if self.batches == self.at:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal; ResumeCkpt's handler runs in this thread


class Raise(paddle.callbacks.Callback):
    """Raises before batch ``at + 1`` (a consistent point), or with ``mid_step`` inside batch ``at`` (not one)."""

    def __init__(self, at: int, mid_step: bool = False) -> None:
        super().__init__()
        self.at, self.mid_step, self.batches = at, mid_step, 0

    def on_train_batch_begin(self, step, logs=None):
        if self.batches == self.at and not self.mid_step:
            raise RuntimeError("injected failure")

    def on_train_batch_end(self, step, logs=None):
        self.batches += 1
        if self.batches == self.at and self.mid_step:
            raise RuntimeError("injected failure")


@pytest.mark.parametrize("ending", ["end of fit", "SIGTERM", "max_time", "exception", "exception mid-step"])
def test_fit_returns_or_exits_only_when_the_last_checkpoint_is_on_disk(tmp_path, train_data, monkeypatch, ending):
    monkeypatch.setenv(SLOW, "0.5")
    save_dir = tmp_path / "ckpt"
    ckpt = ResumeCkpt(save_dir, every_n_steps=3, max_time=2 if ending == "max_time" else None)
    extra = {"SIGTERM": [SendSignal(at=5)], "exception": [Raise(at=5)], "exception mid-step": [Raise(4, True)]}
    extra = extra.get(ending, [])
    if ending == "max_time":
        extra = [OnBatch(sleep=0.3)]  # after a step or two, another step and a checkpoint no longer fit in 2 s
    fit = lambda: _model().fit(train_data, batch_size=32, epochs=2, verbose=0, callbacks=[ckpt, *extra])  # noqa: E731
    if ending == "SIGTERM":
        with pytest.raises(SystemExit) as exited:
            fit()
        assert exited.value.code == 128 + signal.SIGTERM
    elif ending.startswith("exception"):
        with pytest.raises(RuntimeError, match="injected failure"):
            fit()
    else:
        fit()
    # SIGTERM: sent after ResumeCkpt looked at batch 5, so it stops after batch 6; an exception inside batch 4
    # writes no checkpoint of its own (not a consistent point): the one of batch 3, in flight then, is the last
    expected = {"end of fit": 16, "SIGTERM": 6, "exception": 5, "exception mid-step": 3}.get(ending, ckpt.global_step)
    assert 0 < expected <= 16 and ckpt.global_step in (expected, 4)
    # checked the moment fit is done: the last write (held 0.5 s) is complete, nothing half written
    assert _complete(save_dir)[-1] == f"ckpt-{expected:09d}" and not list(save_dir.glob(".tmp-*"))
    assert not ckpt._writer.busy
    ckpt.store.join_deletion()  # old checkpoints kept for reuse are deleted when fit ends
    assert not list(save_dir.glob(".trash-*"))
    state = json.loads((save_dir / f"ckpt-{expected:09d}" / "state.json").read_text())
    assert (state["crash"] or {}).get("type") == ("RuntimeError" if ending == "exception" else None)
    if ending in ("SIGTERM", "max_time"):
        assert state["interrupted"] == ckpt.report["stopped"] == {"SIGTERM": "SIGTERM"}.get(ending, "max_time")


def test_readers_of_the_store_wait_for_the_write_in_flight(tmp_path, train_data, monkeypatch):
    """latest_path, best_path, last_saved and restore_last_good see the checkpoint being written, complete."""
    monkeypatch.setenv(SLOW, "1")
    ckpt = ResumeCkpt(tmp_path / "ckpt", every_n_steps=2)
    seen = []

    def look(batch: int) -> None:
        if batch == 3:  # the save of batch 2 was handed to the writer at the start of batch 3
            seen.append((ckpt._writer.busy, ckpt.latest_path().name, ckpt.last_saved.name))
            seen.append(ckpt.restore_last_good()["global_step"])

    _model().fit(train_data, batch_size=32, epochs=1, verbose=0, callbacks=[ckpt, OnBatch(look)])
    assert seen == [(True, "ckpt-000000002", "ckpt-000000002"), 2]


# ---------------------------------------------------------------- a failed write is not lost
def test_a_failed_background_write_is_raised_on_the_training_thread(tmp_path, train_data, caplog):
    save_dir = tmp_path / "ckpt"
    ckpt = ResumeCkpt(save_dir, every_n_steps=3)

    def break_the_directory(batch: int) -> None:
        if batch == 4:  # once checkpoint 3 is complete, the next write (6) finds a file where its directory was
            assert ckpt.latest_path().name == "ckpt-000000003"
            shutil.rmtree(save_dir)
            save_dir.write_text("not a directory")

    batches = OnBatch(break_the_directory, sleep=0.05)
    with pytest.raises(CheckpointError, match=r"Writing the checkpoint ckpt-000000006 in .* failed") as raised:
        _model().fit(train_data, batch_size=32, epochs=1, verbose=0, callbacks=[ckpt, batches])
    assert isinstance(raised.value.__cause__, OSError)
    assert 6 <= batches.batches < 8  # raised at a step after the failed write, before the next checkpoint
    assert "checkpointing the last consistent state failed too" in caplog.text  # the crash checkpoint, logged


def test_a_failed_last_write_is_raised_by_fit(tmp_path, train_data):
    save_dir = tmp_path / "ckpt"

    class BreakAtTheEnd(paddle.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # after ResumeCkpt's: the final checkpoint is still to come
            shutil.rmtree(save_dir)  # fit's start made the run directory; nothing was written in it yet
            save_dir.write_text("not a directory")

    ckpt = ResumeCkpt(save_dir)
    with pytest.raises(CheckpointError, match="ckpt-000000008"):
        _model().fit(train_data, batch_size=32, epochs=1, verbose=0, callbacks=[ckpt, BreakAtTheEnd()])
    assert not ckpt._writer.busy and ckpt.report["stopped"] is None  # our hooks were undone before raising


# ---------------------------------------------------------------- one write at a time, off the training thread
def test_a_new_write_waits_for_the_one_in_flight():
    writer, started, release = CheckpointWriter(), [], threading.Event()
    writer.submit(lambda: (started.append("first"), release.wait(60)), "first")
    second = threading.Thread(target=writer.submit, args=(lambda: started.append("second"), "second"))
    second.start()
    second.join(0.3)
    assert second.is_alive() and started == ["first"] and writer.busy  # still waiting for the first write
    release.set()
    second.join(60)
    writer.wait()
    assert started == ["first", "second"] and not writer.busy
    writer.close()


def test_fit_writes_in_the_background_one_checkpoint_at_a_time(tmp_path, train_data, monkeypatch):
    monkeypatch.setenv(SLOW, "0.2")
    writing, trained_while_writing, in_flight, most = [], [], [0], [0]
    lock, original = threading.Lock(), CheckpointStore.write

    def write(self, *args, **kwargs):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        writing.append(threading.current_thread() is not threading.main_thread())
        try:
            return original(self, *args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(CheckpointStore, "write", write)
    trained = OnBatch(lambda n: trained_while_writing.append(in_flight[0] > 0))
    ckpt = ResumeCkpt(tmp_path / "ckpt", every_n_steps=1, keep_last=20)
    _model().fit(train_data, batch_size=32, epochs=1, verbose=0, callbacks=[ckpt, trained])
    assert len(writing) == STEPS_PER_EPOCH and all(writing)  # every save, each in the writer's thread
    assert most[0] == 1  # never two at once
    assert any(trained_while_writing)  # training went on while a checkpoint was being written
    assert _complete(tmp_path / "ckpt") == [f"ckpt-{n:09d}" for n in range(1, STEPS_PER_EPOCH + 1)]


def test_async_save_false_writes_on_the_training_thread(tmp_path, train_data, monkeypatch):
    threads, original = [], CheckpointStore.write
    monkeypatch.setattr(CheckpointStore, "write", lambda self, *a: threads.append(threading.current_thread())
                        or original(self, *a))  # fmt: skip
    ckpt = ResumeCkpt(tmp_path / "ckpt", every_n_steps=4, async_save=False)
    _model().fit(train_data, batch_size=32, epochs=1, verbose=0, callbacks=[ckpt])
    assert threads == [threading.main_thread()] * 2 and _complete(tmp_path / "ckpt")[-1] == "ckpt-000000008"
    with pytest.raises(ConfigError, match=r"async_save must be True or False\. Received: async_save='no'"):
        ResumeCkpt(tmp_path, async_save="no")


def test_a_write_in_flight_when_the_interpreter_exits_completes(tmp_path, subprocess_env):
    script = (
        "import paddle; from paddle_mnist_hapi.checkpoint.store import CheckpointStore\n"
        "from paddle_mnist_hapi.checkpoint.writer import CheckpointWriter\n"
        f"store, writer = CheckpointStore({str(tmp_path)!r}), CheckpointWriter()\n"
        "tensors = writer.snapshot({'model': {'w': paddle.ones([3])}})\n"
        "writer.submit(lambda: store.write(5, tensors, {'epoch': 0}), 'ckpt-000000005')\n"
        "print(writer.busy, flush=True)\n"  # the main thread ends here, the write (held 1 s) still in flight
    )
    env = {**subprocess_env, SLOW: "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
    assert _complete(tmp_path) == ["ckpt-000000005"] and not list(tmp_path.glob(".tmp-*"))


# ---------------------------------------------------------------- the snapshot and the file format
@pytest.mark.parametrize("numel", [16, STAGED_BYTES // 4 + 1])
def test_the_snapshot_does_not_move_when_training_changes_the_tensors(numel):
    writer = CheckpointWriter()
    tensor = paddle.arange(numel, dtype="float32")
    for value in (1.0, 2.0):  # the second snapshot copies into the first one's buffer
        tensor.set_value(paddle.full([numel], value))
        snap = writer.snapshot({"model": {"w": tensor}})["model"]["w"]
        tensor.set_value(paddle.full([numel], -1.0))  # the optimizer steps on while the write runs
        assert snap.dtype == "float32" and (snap.array == value).all()
    array = np.ones(numel, np.float32)  # host data is copied too
    snap = writer.snapshot({"model": {"a": array}})["model"]["a"]
    array[:] = -1.0
    assert (snap.array == 1.0).all()
    assert bool(writer._buffers) == (numel * 4 >= STAGED_BYTES)  # large host data: into a kept buffer
    writer.close()  # the end of fit frees the host buffers and the views
    assert not writer._buffers and not writer._known


def test_a_snapshot_follows_a_tensor_whose_memory_or_shape_changed():
    """The view kept of a tensor's memory is used only while the tensor keeps its address and shape."""
    writer = CheckpointWriter()
    net = paddle.nn.Linear(4, 3)
    optimizer = paddle.optimizer.Adam(0.1, parameters=net.parameters())
    for _ in range(3):  # Adam updates in place: the same memory, copied through the kept view
        net(paddle.ones([2, 4])).sum().backward()
        optimizer.step()
        optimizer.clear_grad()
        snap = writer.snapshot({"model": dict(net.state_dict())})["model"]
        assert all(np.array_equal(snap[k].array, v.numpy()) for k, v in net.state_dict().items())
    weight = net.weight
    weight.set_value(paddle.full([4, 3], 7.0))  # new values, perhaps new memory
    assert (writer.snapshot({"model": {"w": weight}})["model"]["w"].array == 7.0).all()
    replaced = paddle.create_parameter([4, 3], "float32")  # another tensor object under the same name
    replaced.set_value(paddle.full([4, 3], 5.0))
    assert (writer.snapshot({"model": {"w": replaced}})["model"]["w"].array == 5.0).all()
    flat = paddle.arange(12, dtype="float32")
    writer.snapshot({"model": {"f": flat}})
    flat.reshape_([3, 4])  # the same memory, another shape
    snap = writer.snapshot({"model": {"f": flat}})["model"]["f"]
    assert snap.array.shape == (3, 4) and np.array_equal(snap.array, np.arange(12).reshape(3, 4))
    writer.close()


def test_a_tensor_cast_in_place_is_snapshot_with_its_new_dtype():
    writer, tensor = CheckpointWriter(), paddle.ones([3])
    assert writer.snapshot({"model": {"w": tensor}})["model"]["w"].dtype == "float32"
    tensor.cast_("float64")  # the same tensor object, another dtype
    snap = writer.snapshot({"model": {"w": tensor}})["model"]["w"]
    assert snap.dtype == "float64" and snap.array.dtype == np.float64


def test_a_discarded_checkpoint_directory_is_reused_without_stale_files(tmp_path):
    store = CheckpointStore(tmp_path)
    big = {"model": {"w": paddle.rand([1000])}, "callbacks": {"c": paddle.ones([3])}}
    store.write(1, big, {"step": 1})
    store.write(2, big, {"step": 2})
    store.prune({tmp_path / "ckpt-000000002"})  # 1 is discarded, its directory kept for the next write
    assert [p.name[:21] for p in tmp_path.glob(".trash-*")] == [".trash-ckpt-000000001"]
    path = store.write(3, {"model": {"w": paddle.arange(10, dtype="float32")}}, {"step": 3})
    assert not list(tmp_path.glob(".trash-*"))  # reused: its files overwritten, shortened, the extra one gone
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.safetensors", "state.json"]
    assert np.array_equal(read_tensors(path / "model.safetensors")["w"].numpy(), np.arange(10, dtype=np.float32))
    assert [info.name for info in store.scan() if info.valid] == ["ckpt-000000003", "ckpt-000000002"]


def test_safetensors_written_from_host_memory_read_back_with_every_dtype(tmp_path):
    tensors = {
        "f32": paddle.rand([3, 4]), "f64": paddle.rand([2], dtype="float64"), "i64": paddle.arange(5),
        "f16": paddle.rand([4]).astype("float16"), "bf16": paddle.rand([4]).astype("bfloat16"),
        "flag": paddle.to_tensor([True, False]), "scalar": paddle.to_tensor(2.5),
    }  # fmt: skip
    store = CheckpointStore(tmp_path)
    path = store.write(1, {"model": tensors}, {"epoch": 0})
    back = read_tensors(path / "model.safetensors")
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and back[name].shape == tensor.shape, name
        assert np.array_equal(back[name].astype("float64").numpy(), tensor.astype("float64").numpy()), name
    assert [info.name for info in store.scan() if info.valid] == ["ckpt-000000001"]  # sizes and sha256 verified


def test_a_nan_model_is_not_checkpointed_whatever_its_dtype():
    nan = paddle.to_tensor([1.0, float("nan")])
    assert all_finite({"w": host_tensor(paddle.ones([2]).astype("bfloat16"))})
    assert not all_finite({"w": host_tensor(nan.astype("bfloat16"))})
    assert not all_finite({"w": host_tensor(nan.astype("float16"))})
    assert all_finite({"step": HostTensor(np.array([2**62]), "int64")})
