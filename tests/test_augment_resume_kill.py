"""Augmented training is exact under SIGKILL: a killed and re-run augmented training ends
bit-identical to an uninterrupted one (real subprocesses, real MNIST, a few hundred images)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import resume_harness as H

from conftest import PYTHON, ROOT

SCRIPT = str(ROOT / "tests/scripts/augmented_resumable_train.py")
STEPS_PER_EPOCH = 12  # 384 images, batch 32
pytestmark = pytest.mark.slow


def _command(save_dir: Path, out: Path, *extra: str) -> list[str]:
    return [PYTHON, SCRIPT, "--save-dir", str(save_dir), "--out", str(out), *extra]


def _run(save_dir: Path, out: Path, env: dict[str, str], *extra: str) -> dict:
    proc = subprocess.run(
        _command(save_dir, out, *extra), capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(str(out) + ".json").read_text())


def _params(out: Path) -> dict[str, np.ndarray]:
    with np.load(str(out) + ".npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """The uninterrupted augmented run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore:No ccache found:UserWarning")
    base = tmp_path_factory.mktemp("augmented-reference")
    return base / "run", _run(base / "ckpt", base / "run", env)


@pytest.mark.parametrize("checkpoint_step", [15, 25], ids=["mid-epoch-1", "early-epoch-2"])
def test_killed_augmented_run_resumes_bit_identical(tmp_path, reference, subprocess_env, checkpoint_step):
    ref_out, ref = reference
    save_dir, out = tmp_path / "ckpt", tmp_path / "run"
    # the run holds after the batch that follows the checkpoint (written when that batch begins) until killed
    proc = subprocess.Popen(
        _command(save_dir, out, "--hold-at", str(checkpoint_step + 1)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env, start_new_session=True,
    )  # fmt: skip
    try:
        H.wait_for_checkpoint(proc, save_dir, checkpoint_step, timeout=180)
    finally:
        H.kill_group(proc)
        code = proc.wait()
    assert code == -signal.SIGKILL
    assert not Path(str(out) + ".npz").exists()

    done = _run(save_dir, out, subprocess_env)
    assert done["report"]["resumed_from"].endswith(f"ckpt-{checkpoint_step:09d}")
    assert checkpoint_step % STEPS_PER_EPOCH != 0  # resumed mid-epoch
    assert done["here"] == ref["here"] - checkpoint_step  # the batches after the checkpoint, no more
    assert done["total"] == ref["total"] == done["step"]
    expected = _params(ref_out)
    got = _params(out)
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert np.array_equal(got[key], expected[key]), f"{key} differs after the resume"


def test_the_augmentation_changes_the_training(tmp_path, reference, subprocess_env):
    ref_out, _ = reference
    _run(tmp_path / "ckpt", tmp_path / "plain", subprocess_env, "--no-augment")
    plain, augmented = _params(tmp_path / "plain"), _params(ref_out)
    assert any(not np.array_equal(plain[key], augmented[key]) for key in plain)
