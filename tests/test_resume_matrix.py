"""The resume matrix: every way of feeding and driving fit, killed with SIGKILL at a random
step (seeded; the seed is in every failure message), re-run, and compared bit for bit with an
uninterrupted run (see resume_harness.assert_same_run), with a canary proving no batch was
trained twice or skipped. Real subprocesses, real MNIST, an MLP with dropout."""

from __future__ import annotations

import json
import signal
import time

import pytest
import resume_harness as H

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def references(tmp_path_factory):
    return H.References(tmp_path_factory.mktemp("references"))


CELLS = {
    # data: how fit is fed
    "Dataset, fit(shuffle=True), every epoch": [],
    "Dataset, every_n_steps": ["--every-n-steps", "4"],
    "DataLoader num_workers=0": ["--data", "loader0", "--every-n-steps", "4"],
    "DataLoader num_workers=2": ["--data", "loader2", "--every-n-steps", "4"],
    "DataLoader persistent_workers": ["--data", "persistent", "--every-n-steps", "4"],
    "user BatchSampler": ["--data", "batch_sampler", "--every-n-steps", "4"],
    "InMemoryLoader": ["--data", "inmemory", "--every-n-steps", "4"],
    "drop_last": ["--drop-last", "--limit", "200", "--every-n-steps", "3"],
    # cadence: how fit is driven
    "accumulate 2, every_n_steps=3, 7 batches": ["--accumulate", "2", "--limit", "224", "--every-n-steps", "3"],
    "accumulate 2, every epoch": ["--accumulate", "2", "--limit", "224"],
    "eval_freq=2": ["--eval-freq", "2", "--every-n-steps", "4"],
    "num_iters": ["--num-iters", "11", "--every-n-steps", "4"],
    # the whole callback stack: EarlyStopping, ReduceLROnPlateau, LRStepper, VisualDL, MetricsLog, NaNGuard
    "callback stack": ["--stack", "--every-n-steps", "4"],
}  # fmt: skip


@pytest.mark.parametrize("name", list(CELLS))
def test_sigkill_at_a_random_step_then_rerun_is_bit_identical(tmp_path, references, name):
    args = CELLS[name]
    ref = references.get(args)
    total = H.result(ref)["total"]
    first = H.first_checkpoint(args, H.result(ref)["steps_per_epoch"])
    step = H.kill_step(name, first + 1, total)  # after the first checkpoint, so that the re-run resumes
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    proc = H.start(save_dir, out, [*args, "--hold-at", str(step)])
    resumed = H.kill_while_held(proc, save_dir, out, step)
    done = H.run(save_dir, out, args)
    note = f"{name}: killed after step {step}, resumed at {resumed} (RESUME_MATRIX_SEED={H.SEED})"
    H.assert_resumed(done, resumed, note)
    assert first <= resumed <= step and done["here"] == total - resumed, note
    H.assert_no_batch_repeated(out, resumed, total)
    H.assert_same_run(out, ref, note)


def test_a_finished_run_extended_with_more_epochs_equals_the_longer_run(tmp_path, references):
    ref = references.get([])  # 3 epochs straight
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    first = H.run(save_dir, out, ["--epochs", "2"])
    again = H.run(save_dir, out, ["--epochs", "2"])  # the same script again: nothing left
    assert again["report"]["finished"] is True and again["here"] == 0
    longer = H.run(save_dir, out, [])  # epochs=3: the run's total grows, epoch 3 is trained
    assert longer["report"]["start_epoch"] == 2 and longer["here"] == first["total"] // 2
    H.assert_same_run(out, ref, "2 epochs, then extended to 3")


def test_extending_a_run_whose_schedule_is_sized_by_epochs_takes_the_new_length(tmp_path):
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    first = H.run(save_dir, out, ["--epochs", "2", "--course-schedule"])
    longer = H.run(save_dir, out, ["--epochs", "3", "--course-schedule"])
    assert longer["report"]["schedule_changed"].startswith("lr_schedule: checkpoint")
    assert "decay_steps" in longer["report"]["schedule_changed"]
    assert longer["here"] == first["total"] // 2 and longer["total"] == first["total"] * 3 // 2
    assert sorted(p.name for p in save_dir.glob("ckpt-*"))[-1] == "ckpt-000000018"  # the same run, continued


@pytest.mark.parametrize(
    ("sig", "at"), [("SIGTERM", None), ("SIGUSR1", None), ("SIGTERM", 5)], ids=["SIGTERM", "SIGUSR1", "epoch end"]
)
def test_a_stop_signal_checkpoints_at_the_next_step_and_the_rerun_continues_exactly(tmp_path, references, sig, at):
    ref = references.get([])
    total = H.result(ref)["total"]
    step = at or H.kill_step(sig, 1, total - 1)  # the stop, one step later, leaves the re-run a step or more
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    signals = [] if sig == "SIGTERM" else ["--signals", "SIGTERM", sig]  # SIGTERM is the default
    proc = H.start(save_dir, out, ["--hold-at", str(step), *signals])
    try:
        H.wait_for_step(proc, out, step)
        H.kill_group(proc, getattr(signal, sig))
        H.release(out)  # the signal arrived while batch `step` was held: training stops after the next one
        code, stderr = H.finish(proc, timeout=120)
    finally:
        H.kill_group(proc)
    assert code == 128 + getattr(signal, sig), stderr[-2000:]
    last = max(r["step"] for r in H.records(out) if "step" in r)
    assert last == step + 1, f"{sig} during batch {step}; the run went on to {last}"
    newest = max(save_dir.glob("ckpt-*"))
    state = json.loads((newest / "state.json").read_text())
    assert state["global_step"] == last and state["interrupted"] == sig  # saved at the step it stopped
    if last % H.result(ref)["steps_per_epoch"] == 0:  # on an epoch's last batch: its evaluation ran first
        assert state["step_in_epoch"] == 0 and any(r.get("at") == last for r in H.records(out) if "eval" in r)
    done = H.run(save_dir, out, [])
    H.assert_resumed(done, last, f"{sig} after step {step}")
    H.assert_no_batch_repeated(out, last, total)
    H.assert_same_run(out, ref, f"{sig} after step {step}, stopped at {last}")


def test_max_time_stops_before_the_budget_with_a_checkpoint(tmp_path, references):
    ref = references.get([])
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    stopped = H.run(save_dir, out, ["--sleep", "0.25", "--max-time", "4"])  # 18 batches: 4.5 s and more
    # Counted in steps, not on the wall clock (a loaded machine makes steps slower, never faster): every step
    # after the first takes >= 0.25 s, so the run had trained >= (n - 2) * 0.25 s when it checked after batch
    # n - 1, and ResumeCkpt goes on only while that time + 2 * (longest step >= 0.25 + save >= 0.25) + 1 s is
    # under the 4 s budget: it must stop by batch 9. Without the margin it would run to batch 16 or more.
    assert stopped["report"]["stopped"] == "max_time", stopped["report"]
    assert 0 < stopped["total"] <= 9, f"stopped after batch {stopped['total']}, {stopped['fit_seconds']:.2f} s"
    assert json.loads((max(save_dir.glob("ckpt-*")) / "state.json").read_text())["global_step"] == stopped["total"]
    H.run(save_dir, out, [])
    H.assert_no_batch_repeated(out, stopped["total"], H.result(ref)["total"])
    H.assert_same_run(out, ref, "max_time")


def test_an_exception_in_fit_leaves_a_marked_checkpoint_and_the_rerun_is_exact(tmp_path, references):
    ref = references.get([])
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    H.run(save_dir, out, ["--raise-at", "7"], expect=1)
    newest = max(save_dir.glob("ckpt-*"))
    state = json.loads((newest / "state.json").read_text())
    assert newest.name == "ckpt-000000007" and state["crash"]["type"] == "RuntimeError"
    assert "injected failure" in state["crash"]["message"]
    H.run(save_dir, out, [])
    H.assert_no_batch_repeated(out, 7, H.result(ref)["total"])
    H.assert_same_run(out, ref, "exception before batch 8")


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path, references, monkeypatch):
    ref = references.get([])
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    monkeypatch.setenv("PADDLE_MNIST_HAPI_SLOW_CKPT_WRITE", "3")
    proc = H.start(save_dir, out, ["--every-n-steps", "4"])
    try:
        deadline = time.monotonic() + 120
        while not (list(save_dir.glob("ckpt-*")) and list(save_dir.glob(".tmp-*/state.json"))):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        H.kill_group(proc)
    assert proc.wait() == -signal.SIGKILL
    monkeypatch.delenv("PADDLE_MNIST_HAPI_SLOW_CKPT_WRITE")
    assert [c.name for c in save_dir.glob("ckpt-*")] == ["ckpt-000000004"]  # the half-written one is invisible
    done = H.run(save_dir, out, ["--every-n-steps", "4"])
    assert done["report"]["resumed_from"].endswith("ckpt-000000004") and not list(save_dir.glob(".tmp-*"))
    H.assert_same_run(out, ref, "SIGKILL during a checkpoint write")
