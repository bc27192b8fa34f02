"""End to end on the real MNIST: the example script, as a user runs it."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from conftest import PYTHON, ROOT


@pytest.mark.slow
def test_fit_lenet_example_reaches_real_accuracy_and_exports(tmp_path, subprocess_env):
    out = tmp_path / "run"
    proc = subprocess.run(
        [PYTHON, str(ROOT / "examples/fit_lenet.py"), "--limit", "6000", "--epochs", "2", "--output", str(out)],
        capture_output=True, text=True, env=subprocess_env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # 6,000 real images, 2 epochs: a working pipeline gets > 95%; shuffled labels or a broken
    # normalization stay near 10%.
    assert summary["test_acc"] > 0.95
    assert summary["seconds"] > 0
    prefix = summary["export"]
    from paddle_mnist_hapi.data import MNIST
    from paddle_mnist_hapi.deploy.export import load_inference_predictor, run_predictor

    test = MNIST("test")  # the export reads the whole test set as the trained model did
    logits = run_predictor(load_inference_predictor(prefix), test.images)
    assert abs((logits.argmax(1) == test.labels.ravel()).mean() - summary["test_acc"]) <= 0.001


@pytest.mark.slow
def test_rerunning_the_example_resumes_and_trains_no_more(tmp_path, subprocess_env):
    command = [
        PYTHON,
        str(ROOT / "examples/fit_lenet.py"),
        "--limit",
        "2000",
        "--epochs",
        "1",
        "--output",
        str(tmp_path),
    ]
    first = subprocess.run(command, capture_output=True, text=True, env=subprocess_env, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(command, capture_output=True, text=True, env=subprocess_env, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = (json.loads(p.stdout.strip().splitlines()[-1]) for p in (first, again))
    assert a["resume"]["resumed_from"] is None
    steps = math.ceil((a["train_images"] + a["flagged_ones"]) / 64)  # one epoch, batch 64
    assert b["resume"]["finished"] is True and b["resume"]["resumed_from"].endswith(f"ckpt-{steps:09d}")
    assert b["test_acc"] == a["test_acc"]
    assert "training already finished" in again.stderr


def test_example_help_lists_its_options(subprocess_env):
    proc = subprocess.run(
        [PYTHON, str(ROOT / "examples/fit_lenet.py"), "--help"], capture_output=True, text=True, env=subprocess_env
    )
    assert proc.returncode == 0
    for option in ("--epochs", "--batch-size", "--lr", "--model", "--device", "--output", "--limit"):
        assert option in proc.stdout


def test_example_bad_model_name_is_one_line_and_nonzero(subprocess_env, tmp_path):
    proc = subprocess.run(
        [PYTHON, str(ROOT / "examples/fit_lenet.py"), "--model", "lenet6", "--output", str(tmp_path)],
        capture_output=True, text=True, env=subprocess_env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: Unknown model name. Did you mean 'lenet5'")
    assert "Traceback" not in proc.stderr


def test_gpu_on_cpu_build_is_a_clear_error():
    import paddle

    from paddle_mnist_hapi.device import resolve_device
    from paddle_mnist_hapi.errors import DeviceError

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("this Paddle build has CUDA")
    with pytest.raises(DeviceError, match="paddlepaddle-gpu"):
        resolve_device("gpu")
    assert resolve_device("auto") == "cpu"
