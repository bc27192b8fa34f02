"""ResumeCkpt under paddle.distributed.launch (2 CPU processes, gloo): only rank 0 writes; a run
killed with SIGKILL at a random step resumes on every rank and ends bit-identical to an
uninterrupted one; on SIGTERM every rank stops at the same step, nothing hangs, and the re-run
continues exactly."""

from __future__ import annotations

import json
import signal

import pytest
import resume_harness as H

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist_reference")
    H.run(base / "ckpt", base / "out", ["--every-n-steps", "2"], launch_dir=base / "logs")
    for rank in (0, 1):
        assert H.result(base / f"out.rank{rank}")["total"] == 9  # 192 images, 32 a batch, 2 ranks, 3 epochs
    return base / "out"


def _assert_both_ranks_exact(out, reference, resumed_step: int, note: str) -> None:
    for rank in (0, 1):
        mine, theirs = out.parent / f"{out.name}.rank{rank}", reference.parent / f"{reference.name}.rank{rank}"
        report = H.result(mine)["report"]
        assert (report["global_step"] if report["resumed_from"] else 0) == resumed_step, f"rank {rank}"
        H.assert_no_batch_repeated(mine, resumed_step, 9)
        # callback tensor state is stored once, from rank 0 (the library's is the same on every rank)
        H.assert_same_run(mine, theirs, f"{note}, rank {rank}", tensor_state=rank == 0)
        # only rank 0 writes; a stop that landed on the run's last step (a signal that arrived after step 8)
        # leaves the re-run nothing to train, so nothing to save
        assert (H.result(mine)["saved"] is not None) == (rank == 0 and resumed_step < 9)


def test_sigkill_at_a_random_step_then_rerun_is_exact_on_every_rank(tmp_path, reference):
    step = H.kill_step("2 ranks SIGKILL", 9)
    save_dir, out = tmp_path / "ckpt", tmp_path / "out"
    proc = H.start(save_dir, out, ["--every-n-steps", "2", "--sleep", "0.1"], launch_dir=tmp_path / "logs")
    H.wait_for_step(proc, tmp_path / "out.rank0", step)
    H.kill_tree(proc)
    proc.wait()
    newest = max(save_dir.glob("ckpt-*"), default=None)
    resumed = json.loads((newest / "state.json").read_text())["global_step"] if newest else 0
    H.run(save_dir, out, ["--every-n-steps", "2"], launch_dir=tmp_path / "logs2")
    _assert_both_ranks_exact(out, reference, resumed, f"2 ranks, SIGKILL at step {step}")
    for ckpt in save_dir.glob("ckpt-*"):
        assert json.loads((ckpt / "state.json").read_text())["fingerprint"]["world_size"] == 2


def test_sigterm_stops_every_rank_at_the_same_step_and_the_rerun_is_exact(tmp_path, reference):
    step = H.kill_step("2 ranks SIGTERM", 8)
    save_dir, out = tmp_path / "ckpt", tmp_path / "out"
    proc = H.start(save_dir, out, ["--every-n-steps", "2", "--sleep", "0.1"], launch_dir=tmp_path / "logs")
    H.wait_for_step(proc, tmp_path / "out.rank0", step)
    proc.send_signal(signal.SIGTERM)  # to the launcher, as a scheduler does; it passes it on to the workers
    code, _ = H.finish(proc, timeout=120)  # nothing hangs
    assert code != 0
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").glob("workerlog.*")))
    assert logs.count("received SIGTERM") + logs.count("stopping at global step") >= 2, logs[-3000:]
    last = [max(r["step"] for r in H.records(tmp_path / f"out.rank{rank}") if "step" in r) for rank in (0, 1)]
    assert last[0] == last[1], f"ranks stopped at {last}"
    state = json.loads((max(save_dir.glob("ckpt-*")) / "state.json").read_text())
    assert state["global_step"] == last[0] and state["interrupted"] == "SIGTERM"
    H.run(save_dir, out, ["--every-n-steps", "2"], launch_dir=tmp_path / "logs2")
    _assert_both_ranks_exact(out, reference, last[0], f"2 ranks, SIGTERM after step {step}")
