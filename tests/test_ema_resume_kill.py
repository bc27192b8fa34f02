"""``EMA`` under SIGKILL: a killed and re-run training ends with the network's weights AND the
averaged weights bit-identical to an uninterrupted run (real subprocesses, real MNIST)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import resume_harness as H

from conftest import PYTHON, ROOT

SCRIPT = str(ROOT / "tests/scripts/ema_train.py")
pytestmark = pytest.mark.slow


def _command(save_dir: Path, out: Path, *extra: str) -> list[str]:
    return [PYTHON, SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *extra]


def _run(save_dir: Path, out: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(_command(save_dir, out), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(str(out) + ".json").read_text())


def _same(a: Path, b: Path, suffix: str) -> None:
    with np.load(str(a) + suffix) as x, np.load(str(b) + suffix) as y:
        assert sorted(x.files) == sorted(y.files) and x.files
        for key in x.files:
            assert np.array_equal(x[key], y[key]), f"{suffix}: {key} differs"


def test_sigkilled_run_with_ema_resumes_bit_identical(tmp_path, subprocess_env):
    reference = _run(tmp_path / "ref-ckpt", tmp_path / "ref", subprocess_env)
    assert reference["updates"] == 15  # 3 epochs x 10 batches, one update per 2 batches

    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    proc = subprocess.Popen(
        _command(save_dir, out, "--hold-at", "13"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env, start_new_session=True,
    )  # fmt: skip
    try:  # held after batch 13 of epoch 2, after its mid-epoch checkpoint at step 12
        H.wait_for_checkpoint(proc, save_dir, 12, timeout=240)
    finally:
        H.kill_group(proc)
    code, stderr = H.finish(proc)
    assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL\n{stderr[-2000:]}"
    assert not Path(str(out) + ".json").exists()

    done = _run(save_dir, out, subprocess_env)
    assert done["report"]["resumed_from"] is not None and "EMA" in done["report"]["callbacks_restored"]
    assert done["report"]["global_step"] == 12 and done["here"] == 30 - 12  # resumed at the checkpoint of step 12
    assert done["updates"] == reference["updates"]
    _same(out, tmp_path / "ref", ".params.npz")
    _same(out, tmp_path / "ref", ".ema.npz")
    with np.load(str(out) + ".params.npz") as params, np.load(str(out) + ".ema.npz") as ema:
        assert not all(np.array_equal(params[k], ema[k]) for k in ema.files)  # keep="trained": two weight sets
