"""Exactness under SIGKILL: a killed and re-run training ends bit-identical to
an uninterrupted one (real subprocesses, real MNIST)."""

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


def _run(save_dir: Path, out: Path, env: dict[str, str], *extra: str) -> dict:
    proc = subprocess.run(
        [PYTHON, SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *extra],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(str(out) + ".json").read_text())


def _start(save_dir: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "training ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.02)


def _ckpts(save_dir: Path) -> list[Path]:
    return sorted(save_dir.glob("ckpt-*")) if save_dir.is_dir() else []


def _state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / "state.json").read_text())
    except (OSError, ValueError):  # pruned or being replaced while we look
        return {}


def _assert_same_params(a: Path, b: Path) -> None:
    with np.load(str(a) + ".npz") as x, np.load(str(b) + ".npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert np.array_equal(x[key], y[key]), f"{key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore:No ccache found:UserWarning")
    base = tmp_path_factory.mktemp("reference")
    results = {}
    for loader in ("dataset", "dataloader"):
        results[loader] = (base / loader, _run(base / f"ckpt-{loader}", base / loader, env, "--loader", loader))
    return results


KILL_POINTS = {
    "first mid-epoch checkpoint": lambda d: len(_ckpts(d)) >= 1,
    "after an epoch checkpoint": lambda d: any(
        json.loads((c / "state.json").read_text())["step_in_epoch"] == 0
        for c in _ckpts(d)
        if (c / "state.json").exists()
    ),
    "late in the last epoch": lambda d: any(int(c.name[5:]) >= 24 for c in _ckpts(d)),
}


@pytest.mark.parametrize("loader", ["dataset", "dataloader"])
@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_sigkill_then_rerun_is_bit_identical(tmp_path, reference, subprocess_env, kill_point, loader):
    ref_out, ref = reference[loader]
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    proc = _start(save_dir, out, subprocess_env, "--loader", loader, "--sleep", "0.08")
    _wait_for(lambda: KILL_POINTS[kill_point](save_dir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not Path(str(out) + ".npz").exists()
    done = _run(save_dir, out, subprocess_env, "--loader", loader)
    assert done["report"]["resumed_from"] is not None
    assert 0 < done["here"] < ref["here"]  # it really resumed: fewer batches ran in the second process
    assert done["total"] == ref["total"] == done["step"]  # no batch repeated or skipped
    _assert_same_params(out, ref_out)


def test_sigkill_during_a_checkpoint_write(tmp_path, reference, subprocess_env):
    ref_out, _ = reference["dataset"]
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    env = dict(subprocess_env, PADDLE_MNIST_HAPI_SLOW_CKPT_WRITE="3")
    proc = _start(save_dir, out, env)
    # wait until the second checkpoint is being written (its files exist, its manifest not yet)
    _wait_for(lambda: len(_ckpts(save_dir)) >= 1 and any(save_dir.glob(".tmp-*/state.json")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [c.name for c in _ckpts(save_dir)] == ["ckpt-000000004"]  # the half-written one is not visible
    assert list(save_dir.glob(".tmp-*"))  # ... it is left in its temporary directory
    done = _run(save_dir, out, subprocess_env)
    assert done["report"]["resumed_from"].endswith("ckpt-000000004")
    assert not list(save_dir.glob(".tmp-*"))  # cleaned up on resume
    _assert_same_params(out, ref_out)


def test_rerun_after_finish_trains_no_more(tmp_path, reference, subprocess_env):
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    first = _run(save_dir, out, subprocess_env)
    again = _run(save_dir, tmp_path / "again", subprocess_env)
    assert again["report"]["finished"] is True
    assert again["here"] == 0 and again["total"] == first["total"]
    _assert_same_params(out, tmp_path / "again")
