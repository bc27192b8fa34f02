"""Data-parallel training with paddle.Model under ``paddle.distributed.launch``
(2 CPU processes, gloo): disjoint shares, identical parameters, exact evaluation,
and the example writes and reports from rank 0 only."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT


def _launch(tmp: Path, script: str, *args: str, env: dict[str, str]) -> None:
    command = [
        PYTHON, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp / "logs"),
        script, *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    logs = "".join(p.read_text()[-3000:] for p in sorted((tmp / "logs").glob("workerlog.*")))
    assert proc.returncode == 0, out[-3000:] + logs


def test_two_processes_train_on_disjoint_shares_and_end_identical(tmp_path, subprocess_env):
    _launch(tmp_path, str(ROOT / "tests/scripts/dist_probe.py"), "--out", str(tmp_path / "out"), env=subprocess_env)
    ranks = [json.loads((tmp_path / f"out.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["nranks"] == 2 for r in ranks)
    # 1,000 training samples, batch 32 per rank: 500 samples and 16 steps per rank and epoch
    assert all(r["steps_per_epoch"] == 16 for r in ranks)
    for epoch in range(2):
        share0, share1 = ranks[0]["seen"][epoch], ranks[1]["seen"][epoch]
        assert len(share0) == len(share1) == 500
        assert not set(share0) & set(share1)
        assert sorted(share0 + share1) == list(range(1000))
    assert ranks[0]["seen"][0] != ranks[0]["seen"][1]  # reshuffled every epoch
    # gradients are all-reduced: both ranks hold the same parameters, and they did train
    assert ranks[0]["final_hash"] == ranks[1]["final_hash"]
    assert ranks[0]["initial_hash"] == ranks[1]["initial_hash"] != ranks[0]["final_hash"]
    # 1,001 test samples do not split evenly: the padding sample must not be counted twice
    for rank in ranks:
        assert rank["evaluate_acc"] == rank["local_acc"] == ranks[0]["local_acc"]
    assert ranks[0]["local_acc"] > 0.5


@pytest.mark.slow
def test_example_under_launch_reports_and_writes_from_rank0_only(tmp_path, subprocess_env):
    output = tmp_path / "run"
    _launch(
        tmp_path,
        str(ROOT / "examples/fit_lenet.py"),
        *("--limit", "2000", "--epochs", "1", "--verbose", "2", "--output", str(output)),
        env=subprocess_env,
    )
    worker0 = (tmp_path / "logs" / "workerlog.0").read_text()
    worker1 = (tmp_path / "logs" / "workerlog.1").read_text()
    summary_line = next(line for line in worker0.splitlines() if line.startswith("{"))
    summary = json.loads((output / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["train_images"] == 2000 and summary["flagged_ones"] > 0
    steps = math.ceil(math.ceil((2000 + summary["flagged_ones"]) / 2) / 64)  # images / 2 ranks / 64 per step
    assert f"step {steps}/{steps}" in worker0  # hapi logs on rank 0 only
    assert "test accuracy" in worker0 and "test accuracy" not in worker1
    assert summary["test_acc"] > 0.3 and summary["export_max_abs_diff"] < 1e-4
    assert (output / "inference" / "lenet5.json").is_file()
    assert json.loads(summary_line)["test_acc"] == summary["test_acc"]
