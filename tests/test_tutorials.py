"""The classic tutorials, as their readers would write them with this library (examples/tutorials/).

Each runs as a real subprocess with ``--quick`` (a few hundred real MNIST images, offline) and is
judged on the JSON object its last line prints.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

TUTORIALS = ROOT / "examples" / "tutorials"


def run_tutorial(name: str, env: dict[str, str], *args: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, str(TUTORIALS / name), "--quick", *args],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "To copy construct from a tensor" not in done.stderr  # no Paddle warning caused by the library
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_000_lenet_with_paddle_model(tmp_path, subprocess_env):
    summary, _ = run_tutorial("000_lenet_hapi.py", subprocess_env, "--out", str(tmp_path))
    assert summary["train_images"] == 1000 and summary["test_images"] == 500
    assert summary["first_label"] == 5  # the tutorial's "train_data0 label is: [5]"
    assert summary["test_acc"] > 0.6  # chance is 0.1
    assert summary["test_acc_top2"] >= summary["test_acc"]
    assert list((tmp_path / "checkpoints").iterdir())  # ResumeCkpt saved the run


def test_001_course_project_train_then_predict(tmp_path, subprocess_env):
    summary, _ = run_tutorial("001_course_project.py", subprocess_env, "--out", str(tmp_path))
    assert (tmp_path / "mnist.pdparams").is_file()
    assert summary["val_acc"] > 0.4
    assert summary["predict_matches_trained"] is True  # paddle.load into a new LeNet gives the trained answer
    assert summary["true_label"] == 7 and summary["predicted"] == 7

    # the predict script alone, in a new process, from the saved file
    again, _ = run_tutorial("001_course_project.py", subprocess_env, "predict", "--out", str(tmp_path))
    assert again["predicted"] == 7 and again["max_prob"] == pytest.approx(summary["max_prob"], abs=1e-6)


def test_003_course(tmp_path, subprocess_env):
    summary, _ = run_tutorial("003_course.py", subprocess_env, "--out", str(tmp_path))
    assert summary["network_val_acc"]["mnist_cnn"] > 0.5
    assert set(summary["optimizer_val_acc"]) == {"sgd", "momentum", "adagrad", "adam"}
    assert max(summary["optimizer_val_acc"].values()) > 0.5
    assert summary["visualdl_files"] >= 1
    resume = summary["resume"]
    assert resume["interrupted"] and resume["resumed_start_epoch"] == 1
    assert resume["bit_identical"] is True  # interrupted + resumed == never interrupted
    assert resume["last_lr"] == [pytest.approx(0.001), pytest.approx(0.001)]  # PolynomialDecay reached its end
    deploy = summary["deploy"]
    assert deploy["export_max_abs_diff"] < 1e-4
    assert deploy["predictor_label"] == deploy["true_label"] == 7
    assert deploy["jit_load_image_label"] == 7


def test_004_data_pipeline(subprocess_env):
    summary, stdout = run_tutorial("004_data_pipeline.py", subprocess_env)
    assert summary["sizes"] == {"train": 1000, "valid": 500, "eval": 500}
    assert summary["first_labels"] == {"train": 5, "valid": 3}  # valid starts at training image 50,000
    assert summary["batches_checked"] == 15  # 10 train + 5 valid batches of 100, all valid
    assert summary["same_as_library_split"] is True
    assert all(speed > 0 for speed in summary["images_per_s"].values())
    assert summary["val_acc"] > 0.5 and summary["test_acc"] > 0.5
    assert "图像维度: [100, 1, 28, 28], 标签维度: [100, 1]" in stdout
