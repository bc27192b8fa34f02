"""The whole-program examples of docs/ run as written, in a fresh process (full-size data and epochs
shrunk where a page trains on all of MNIST, as the README's example test does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

SHRINK = {'MNIST("train")': 'MNIST("train", limit=128)', 'MNIST("test")': 'MNIST("test", limit=64)'}


def first_python_block(page: str, after: str = "") -> str:
    text = (ROOT / "docs" / page).read_text()
    return text[text.index(after) :].split("```python\n", 1)[1].split("```", 1)[0]


def run(script: str, cwd, env) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=cwd, check=False
    )


@pytest.mark.parametrize(("page", "epochs"), [("getting-started.md", "epochs=4"), ("checkpointing.md", "epochs=10")])
def test_a_pages_training_example_runs_and_checkpoints(page, epochs, tmp_path, subprocess_env):
    script = first_python_block(page)
    for full, small in {**SHRINK, epochs: "epochs=1"}.items():
        assert full in script, f"{page} changed its example: update this test"
        script = script.replace(full, small)
    done = run(script, tmp_path, subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "runs" / "default" / "checkpoints").glob("ckpt-*"))  # ResumeCkpt() without a path


def test_the_monitoring_example_runs_and_a_rerun_says_the_run_has_finished(tmp_path, subprocess_env):
    script = first_python_block("monitoring.md", "## An example that runs")  # as written: 2,000 images, 3 epochs
    done = run(script + "print('ACC', model.evaluate(test, verbose=0)['acc'])\n", tmp_path, subprocess_env)
    assert done.returncode == 0, done.stderr[-3000:]
    accuracy = float(done.stdout.rsplit("ACC", 1)[1])
    assert accuracy > 0.85, accuracy  # the page reports 0.925 on those 1,000 test images
    run_dir = tmp_path / "runs" / "watch"
    assert list((run_dir / "checkpoints").glob("ckpt-*")) and list((run_dir / "vdl").iterdir())
    assert (run_dir / "metrics.jsonl").stat().st_size > 0
    again = run(script, tmp_path, subprocess_env)
    assert again.returncode == 0 and "training already finished" in again.stderr, again.stderr[-3000:]
