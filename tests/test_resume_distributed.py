"""ResumeCkpt under paddle.distributed.launch (2 CPU processes, gloo): only rank 0
writes, a killed run resumes on every rank and ends bit-identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PYTHON, ROOT

SCRIPT = str(ROOT / "tests/scripts/resumable_train.py")
pytestmark = pytest.mark.slow


def _launch(tmp: Path, save_dir: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    command = [
        PYTHON, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp / "logs"),
        SCRIPT, "--save-dir", str(save_dir), "--out", str(out), "--limit", "512", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )


def _finish(proc: subprocess.Popen, tmp: Path) -> None:
    try:
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    logs = "".join(p.read_text()[-2000:] for p in sorted((tmp / "logs").glob("workerlog.*")))
    assert code == 0, logs


def _params(prefix: str) -> dict[str, np.ndarray]:
    with np.load(prefix + ".npz") as data:
        return {k: data[k] for k in data.files}


def test_killed_two_process_run_resumes_exactly_and_only_rank0_writes(tmp_path, subprocess_env):
    ref_dir = tmp_path / "ref"
    _finish(_launch(ref_dir, ref_dir / "ckpt", ref_dir / "out", subprocess_env), ref_dir)
    ref0, ref1 = _params(str(ref_dir / "out.rank0")), _params(str(ref_dir / "out.rank1"))
    assert all(np.array_equal(ref0[k], ref1[k]) for k in ref0)  # data parallel: ranks agree

    run = tmp_path / "run"
    proc = _launch(run, run / "ckpt", run / "out", subprocess_env, "--sleep", "0.1")
    deadline = time.monotonic() + 180
    while not list((run / "ckpt").glob("ckpt-*")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    # the launcher and both workers (the launcher may start them in sessions of their own)
    subprocess.run(["pkill", "-KILL", "-f", str(run / "ckpt")], check=False)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    _finish(_launch(run, run / "ckpt", run / "out", subprocess_env), run)

    for rank in (0, 1):
        result = json.loads((run / f"out.rank{rank}.json").read_text())
        assert result["report"]["resumed_from"] is not None, f"rank {rank} did not resume"
        assert 0 < result["here"] < result["total"]
        params = _params(str(run / f"out.rank{rank}"))
        assert all(np.array_equal(params[k], ref0[k]) for k in ref0), f"rank {rank} differs"
        assert (result["saved"] is not None) == (rank == 0)  # only rank 0 writes
    for ckpt in (run / "ckpt").glob("ckpt-*"):
        assert json.loads((ckpt / "state.json").read_text())["fingerprint"]["world_size"] == 2
