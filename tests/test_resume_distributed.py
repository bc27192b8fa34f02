"""ResumeCkpt under paddle.distributed.launch (2 CPU processes, gloo): only rank 0 writes; a run
killed with SIGKILL at a random step after its first checkpoint resumes on every rank and ends
bit-identical to an uninterrupted one; on SIGTERM every rank stops at the same step (the step the
ranks next agree on, up to 8 fast updates after the signal), nothing hangs, and the re-run continues
exactly."""

from __future__ import annotations

import json
import signal
import time

import pytest
import resume_harness as H

pytestmark = pytest.mark.slow

ARGS = ["--limit", "1280", "--every-n-steps", "4"]  # 20 batches of 32 per rank and epoch, 3 epochs
STEPS_PER_EPOCH, TOTAL = 20, 60
# The ranks agree on a stop after the first update of a fit, then after AGREE_EVERY (8) updates, and at every
# epoch's end. How many updates in between depends on how fast steps are (as many as fit in AGREE_SECONDS,
# at most 8); the runs below make the window long (AGREE_SECONDS = 1000 s) so that it is 8 on any machine.
FAST = ["--agree-seconds", "1000"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist_reference")
    H.run(base / "ckpt", base / "out", ARGS, launch_dir=base / "logs")
    for rank in (0, 1):
        assert H.result(base / f"out.rank{rank}")["total"] == TOTAL
        assert H.result(base / f"out.rank{rank}")["steps_per_epoch"] == STEPS_PER_EPOCH
    return base / "out"


def _assert_both_ranks_exact(out, reference, resumed_step: int, note: str) -> None:
    for rank in (0, 1):
        mine, theirs = out.parent / f"{out.name}.rank{rank}", reference.parent / f"{reference.name}.rank{rank}"
        H.assert_resumed(H.result(mine), resumed_step, f"{note}, rank {rank}")
        H.assert_no_batch_repeated(mine, resumed_step, TOTAL)
        # callback tensor state is stored once, from rank 0 (the library's is the same on every rank)
        H.assert_same_run(mine, theirs, f"{note}, rank {rank}", tensor_state=rank == 0)
        assert (H.result(mine)["saved"] is not None) == (rank == 0)  # only rank 0 writes


def test_sigkill_at_a_random_step_then_rerun_is_exact_on_every_rank(tmp_path, reference):
    first = H.first_checkpoint(ARGS, STEPS_PER_EPOCH)
    step = H.kill_step("2 ranks SIGKILL", first + 1, TOTAL)
    save_dir, out = tmp_path / "ckpt", tmp_path / "out"
    proc = H.start(save_dir, out, [*ARGS, "--hold-at", str(step)], launch_dir=tmp_path / "logs")
    resumed = H.kill_while_held(proc, save_dir, tmp_path / "out.rank0", step, tree=True)
    H.run(save_dir, out, ARGS, launch_dir=tmp_path / "logs2")
    assert first <= resumed <= step
    _assert_both_ranks_exact(out, reference, resumed, f"2 ranks, SIGKILL after step {step}")
    for ckpt in save_dir.glob("ckpt-*"):
        assert json.loads((ckpt / "state.json").read_text())["fingerprint"]["world_size"] == 2
    # the same script in one process is another world size: refused at the start, nothing deleted
    before = sorted(p.name for p in save_dir.iterdir())
    code, stderr = H.finish(H.start(save_dir, tmp_path / "one", ARGS))
    assert code == 1 and "CheckpointMismatchError" in stderr and "world_size: checkpoint 2, now 1" in stderr
    assert sorted(p.name for p in save_dir.iterdir()) == before and not H.records(tmp_path / "one")


def agreements(every: int = 8) -> list[int]:
    """The global steps after which 2 ranks agree on a stop (ResumeCkpt._agreement_due, read as a user sees it)."""
    due, since, out = 1, 0, []
    for step in range(1, TOTAL + 1):
        since += 1
        if since >= due or step % STEPS_PER_EPOCH == 0:
            out.append(step)
            since, due = 0, every
    return out


def test_sigterm_with_fast_steps_stops_every_rank_at_the_next_agreement_and_the_rerun_is_exact(tmp_path, reference):
    """A real SIGTERM to the launcher while the ranks run fast steps: they agree only every 8 updates, so they
    train on after the signal until the next agreement, stop there together, and the re-run is exact."""
    points = agreements()  # [1, 9, 17, 20, 28, 36, 40, ...]
    # a signal during batch k whose next agreement is more than one update away (the batched path), and
    # before the run's last agreement (so that the re-run has batches left)
    candidates = [k for k in range(2, TOTAL - 1) if k + 1 < min(p for p in points if p > k) < TOTAL]
    step = candidates[H.kill_step("2 ranks SIGTERM", 0, len(candidates))]
    stop = min(p for p in points if p > step)
    save_dir, out, logs = tmp_path / "ckpt", tmp_path / "out", tmp_path / "logs"
    proc = H.start(save_dir, out, [*ARGS, *FAST, "--hold-at", str(step)], launch_dir=logs)
    try:
        H.wait_for_step(proc, tmp_path / "out.rank0", step)
        H.wait_for_step(proc, tmp_path / "out.rank1", step)
        proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler does; it passes it on to the workers
        deadline = time.monotonic() + 60
        while sum("received SIGTERM" in p.read_text() for p in logs.glob("workerlog.*")) < 2:
            assert time.monotonic() < deadline, "the launcher did not pass SIGTERM on to both ranks"
            time.sleep(0.05)
        H.release(out)
        code, _ = H.finish(proc, timeout=120)  # nothing hangs
    finally:
        H.kill_tree(proc)
    assert code != 0
    last = [max(r["step"] for r in H.records(tmp_path / f"out.rank{rank}") if "step" in r) for rank in (0, 1)]
    assert last == [stop, stop], f"SIGTERM during batch {step}: ranks stopped at {last}, not at {stop}"
    state = json.loads((max(save_dir.glob("ckpt-*")) / "state.json").read_text())
    assert state["global_step"] == stop and state["interrupted"] == "SIGTERM"
    H.run(save_dir, out, ARGS, launch_dir=tmp_path / "logs2")
    _assert_both_ranks_exact(out, reference, stop, f"2 ranks, SIGTERM during step {step}, stopped at {stop}")


def test_an_exception_on_the_ranks_writes_no_crash_checkpoint_and_the_rerun_is_exact(tmp_path, reference):
    """docs/checkpointing.md: under the launcher an exception is on one rank while the others are elsewhere, so
    no crash checkpoint is written; the newest regular one stands and the re-run continues exactly from it."""
    save_dir, out = tmp_path / "ckpt", tmp_path / "out"
    code, _ = H.finish(H.start(save_dir, out, [*ARGS, "--raise-at", "10"], launch_dir=tmp_path / "logs"))
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("workerlog.*")))
    assert code != 0 and "injected failure before batch 11" in logs, logs[-3000:]
    states = {p.name: json.loads((p / "state.json").read_text()) for p in save_dir.glob("ckpt-*")}
    assert max(states) == "ckpt-000000008" and not any(s["crash"] for s in states.values())
    H.run(save_dir, out, ARGS, launch_dir=tmp_path / "logs2")
    _assert_both_ranks_exact(out, reference, 8, "2 ranks, an exception before batch 11")
