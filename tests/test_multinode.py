"""ResumeCkpt on two machines: ``paddle.distributed.launch --nnodes 2`` (two launchers on this host,
``--master 127.0.0.1:PORT``, one rank each, gloo). With ``save_dir`` on storage both see, a run
SIGKILLed after a checkpoint resumes on both nodes and ends bit-identical to an uninterrupted run of
the same 2 ranks (started by one launcher, ``--nproc_per_node 2``).
When each node has its own directory (its own disk), every rank refuses at the start of ``fit`` with
the library's error, together: no rank trains, none hangs in gloo or aborts."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
import resume_harness as H

from conftest import PYTHON

pytestmark = pytest.mark.slow

ARGS = ["--every-n-steps", "2"]
STEPS_PER_EPOCH, TOTAL = 3, 9  # global steps: 192 images, 32 a batch per rank, 2 ranks, 3 epochs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_nodes(save_dirs: list[Path], out: Path, args: list[str], logs: Path) -> list[subprocess.Popen]:
    """One launcher per node, each in its own session, meeting at a fresh rendezvous port."""
    master = f"127.0.0.1:{free_port()}"
    nodes = []
    for rank, save_dir in enumerate(save_dirs):
        command = [
            PYTHON, "-m", "paddle.distributed.launch", "--master", master, "--nnodes", str(len(save_dirs)),
            "--rank", str(rank), "--nproc_per_node", "1", "--log_dir", str(logs / f"node{rank}"),
            H.SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *args,
        ]  # fmt: skip
        nodes.append(subprocess.Popen(command, env=H.env(), start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    return nodes


def finish_nodes(nodes: list[subprocess.Popen], logs: Path, timeout: float = 300) -> list[int]:
    """Wait for every launcher (a hang guard, not a speed claim); kill every tree whatever happens."""
    try:
        for node in nodes:
            node.communicate(timeout=timeout)
    finally:
        for node in nodes:
            H.kill_tree(node)
    return [node.returncode for node in nodes]


def worker_logs(logs: Path) -> str:
    return "".join(p.read_text() for p in sorted(logs.glob("node*/workerlog.*")))


def run_nodes(save_dirs: list[Path], out: Path, args: list[str], logs: Path) -> None:
    codes = finish_nodes(start_nodes(save_dirs, out, args, logs), logs)
    assert codes == [0, 0], f"launchers exited {codes}\n{worker_logs(logs)[-4000:]}"


def test_two_nodes_killed_then_resumed_end_bit_identical(tmp_path):
    shared = tmp_path / "shared" / "ckpt"  # both nodes' save_dir: the same directory (shared storage)
    # the reference: the same 2 ranks on one machine, uninterrupted
    H.run(tmp_path / "ref" / "ckpt", tmp_path / "ref" / "out", ARGS, launch_dir=tmp_path / "ref")
    first = H.first_checkpoint(ARGS, STEPS_PER_EPOCH)
    step = H.kill_step("2 nodes SIGKILL", first + 1, TOTAL)  # held after a batch that follows a checkpoint
    nodes = start_nodes([shared] * 2, tmp_path / "out", [*ARGS, "--hold-at", str(step)], tmp_path / "run")
    try:
        H.wait_for_step(nodes[0], tmp_path / "out.rank0", step)
        H.wait_for_checkpoint(nodes[0], shared, first)
    finally:
        for node in nodes:  # both machines lose power
            H.kill_tree(node)
    for node in nodes:
        code, stderr = H.finish(node)
        assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL\n{stderr[-2000:]}"
    saved = max(int(c.name[5:]) for c in shared.glob("ckpt-*"))
    assert first <= saved <= step < TOTAL
    run_nodes([shared] * 2, tmp_path / "out", ARGS, tmp_path / "rerun")
    for rank in (0, 1):
        mine, theirs = tmp_path / f"out.rank{rank}", tmp_path / "ref" / f"out.rank{rank}"
        report = H.result(mine)["report"]
        assert report["resumed_from"].endswith(f"ckpt-{saved:09d}") and report["global_step"] == saved, rank
        H.assert_no_batch_repeated(mine, saved, TOTAL)
        H.assert_same_run(mine, theirs, f"2 nodes, SIGKILL after the checkpoint of step {saved}, rank {rank}",
                          tensor_state=rank == 0)  # fmt: skip
        assert report["finished"] is True


def test_two_nodes_with_their_own_directories_are_refused_together(tmp_path):
    own = [tmp_path / f"node{rank}-disk" / "ckpt" for rank in (0, 1)]  # each machine its own disk
    codes = finish_nodes(start_nodes(own, tmp_path / "out", [], tmp_path / "logs"), tmp_path / "logs")
    logs = worker_logs(tmp_path / "logs")
    assert codes[0] != 0 and codes[1] != 0, logs[-3000:]
    for rank in (0, 1):
        log = (tmp_path / "logs" / f"node{rank}" / f"workerlog.{0}").read_text()
        assert "ConfigError: ResumeCkpt's save_dir must be shared storage that every rank reads" in log, log[-3000:]
        assert f"Received: save_dir='{own[rank]}' on rank {rank}" in log
    assert not any(word in logs for word in ("Aborted", "SIGABRT", "terminate called", "Timeout")), logs[-3000:]
    assert not list(tmp_path.glob("out.rank*.batches.jsonl"))  # no rank trained a batch
    assert not list(own[0].glob("ckpt-*")) and not own[1].exists()
