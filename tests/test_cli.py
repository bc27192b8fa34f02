"""The ``paddle-mnist`` command line, run as a user runs it: a real subprocess each time.

Every bad input must give exit code 2 and exactly one ``error: ...`` line on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predict import photo, png_header_only, truncated_png

from paddle_mnist_hapi.deploy.onnx_export import onnx_available

from conftest import PYTHON, ROOT

SCRIPT = Path(sys.executable).parent / "paddle-mnist"


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [PYTHON, "-m", "paddle_mnist_hapi.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False, cwd=ROOT)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert proc.stdout == ""
    return lines[0]


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> dict[str, str]:
    """Three photographed real MNIST test digits, by true label."""
    from paddle_mnist_hapi.data import MNIST

    folder = tmp_path_factory.mktemp("photos")
    test = MNIST("test", limit=3)  # labels 7, 2, 1
    files = {}
    for raw, label in zip(test.raw_images, test.labels.ravel(), strict=True):
        path = folder / f"digit_{label}.jpg"
        photo(raw, offset=(40, -30)).convert("RGB").save(path, quality=90)
        files[str(label)] = str(path)
    return files


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (b"just some text\n", ["Cannot read", "not a format Pillow recognizes", "bad.png"]),
        (b"", ["is empty (0 bytes)"]),
        (truncated_png(), ["truncated or corrupt"]),
        (png_header_only(30000, 30000), ["too large", "decompression"]),
    ],
    ids=["non-image", "empty", "truncated", "huge"],
)
def test_predict_bad_image_files(content, fragments, trained_run, tmp_path, subprocess_env):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    proc = run(["predict", "--model", trained_run["export"], str(bad)], subprocess_env)
    assert_one_line_error(proc, *fragments)


def test_predict_missing_image_and_missing_model(trained_run, digit_files, tmp_path, subprocess_env):
    proc = run(["predict", "--model", trained_run["export"], str(tmp_path / "nope.png")], subprocess_env)
    assert_one_line_error(proc, "Image file not found", "nope.png")
    proc = run(["predict", "--model", str(tmp_path / "no_model"), digit_files["7"]], subprocess_env)
    assert_one_line_error(proc, "No exported model at", "no_model.json", "model.save(PREFIX, training=False)")


def test_train_with_a_wrong_model_name(tmp_path, subprocess_env):
    proc = run(["train", "--model", "lenet6", "--output", str(tmp_path)], subprocess_env)
    assert_one_line_error(proc, "Unknown model name. Did you mean 'lenet5'")
    assert not (tmp_path / "inference").exists()


def test_missing_data_dir(trained_run, tmp_path, subprocess_env):
    missing = str(tmp_path / "no_mnist_here")
    proc = run(["train", "--data-dir", missing, "--output", str(tmp_path / "run")], subprocess_env)
    assert_one_line_error(proc, "The MNIST directory does not exist", "no_mnist_here")
    proc = run(["evaluate", trained_run["export"], "--data-dir", missing], subprocess_env)
    assert_one_line_error(proc, "The MNIST directory does not exist")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["predict", "x.png"], "the following arguments are required: --model"),
        (["train", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["train", "--epochs", "0"], "epochs must be a positive integer"),
        (["export", "/no/such/thing", "--model", "lenet5"], "Nothing to export at /no/such/thing"),
    ],
)
def test_usage_errors(args, fragment, subprocess_env):
    assert_one_line_error(run(args, subprocess_env), fragment)


# ----------------------------------------------------------------------------- happy paths


def test_predict_json(trained_run, digit_files, subprocess_env):
    proc = run(["predict", "--model", trained_run["run_dir"], "--json", *digit_files.values()], subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    result = json.loads(proc.stdout)
    assert result["model"] == trained_run["export"]
    predicted = {Path(p["source"]).stem[-1]: p["class_name"] for p in result["predictions"]}
    assert predicted == {"7": "7", "2": "2", "1": "1"}
    for p in result["predictions"]:
        assert len(p["probabilities"]) == 10 and abs(sum(p["probabilities"]) - 1) < 1e-4


def test_predict_table_through_the_console_script(trained_run, digit_files, subprocess_env):
    assert SCRIPT.is_file(), "run `pip install -e .` (make install does) to create the paddle-mnist script"
    proc = subprocess.run(
        [str(SCRIPT), "predict", "--model", trained_run["export"], digit_files["2"]],
        capture_output=True, text=True, env=subprocess_env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.strip().splitlines()
    assert header.split() == ["image", "label", "confidence", "note"]
    assert row.split()[:2] == [digit_files["2"], "2"]


def test_info(subprocess_env):
    import paddle

    proc = run(["info", "--json"], subprocess_env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["paddle"] == paddle.__version__
    assert info["device"]["default"] in ("cpu", "gpu")
    assert info["data"]["train_images"] == 60000 and info["data"]["test_images"] == 10000
    assert "lenet5" in info["models"]
    text = run(["info"], subprocess_env)
    assert text.returncode == 0 and "Paddle " + paddle.__version__ in text.stdout


def test_evaluate_with_report(trained_run, tmp_path, subprocess_env):
    report = tmp_path / "report"
    proc = run(["evaluate", trained_run["run_dir"], "--report", str(report), "--json"], subprocess_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["samples"] == 10000
    assert result["accuracy"] == pytest.approx(trained_run["test_acc"], abs=1e-3)  # the same model, deployed
    metrics = json.loads((report / "metrics.json").read_text())
    assert sorted(metrics["per_class"]) == [str(i) for i in range(10)]
    assert sum(c["support"] for c in metrics["per_class"].values()) == 10000
    assert all(0.9 < c["recall"] <= 1 and 0.9 < c["precision"] <= 1 for c in metrics["per_class"].values())
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == 10000 and np.trace(matrix) == 10000 - result["misclassified"]
    for name in ("confusion_matrix.png", "misclassified.png"):
        with Image.open(report / name) as image:
            assert image.format == "PNG" and image.width > 500


def test_train_then_export_its_checkpoint(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    args = ["train", "--model", "lenet5", "--epochs", "1", "--limit", "1000", "--verbose", "0"]
    proc = run([*args, "--output", str(run_dir)], subprocess_env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["model"] == "lenet5" and summary["export"].startswith(str(run_dir))
    assert 0.3 < summary["test_acc"] <= 1  # 16 steps on 1,000 real images (about 0.55); chance is 0.1
    assert list((run_dir / "checkpoints").glob("ckpt-*")), "the recipe wrote no checkpoint"
    prefix = str(tmp_path / "from_ckpt" / "lenet5")
    proc = run(
        ["export", str(run_dir / "checkpoints"), "--model", "lenet5", "--output", prefix, "--json"], subprocess_env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["paddle"] == prefix
    evaluated = json.loads(run(["evaluate", prefix, "--json"], subprocess_env).stdout)
    assert evaluated["accuracy"] == pytest.approx(summary["test_acc"], abs=1e-3)
    proc = run(["export", str(run_dir / "checkpoints"), "--model", "mlp", "--output", prefix], subprocess_env)
    assert_one_line_error(proc, "weights do not fit this model")


@pytest.mark.skipif(not onnx_available(), reason="the onnx extra (paddle2onnx, onnxruntime) is missing")
def test_export_onnx(trained_run, tmp_path, subprocess_env):
    output = tmp_path / "model.onnx"
    proc = run(["export", trained_run["export"], "--onnx", "--output", str(output), "--json"], subprocess_env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["onnx"]["path"] == str(output) and output.stat().st_size > 100_000
    assert result["onnx"]["max_abs_diff"] < 1e-5
    proc = run(["export", trained_run["export"], "--onnx", "--opset", "30"], subprocess_env)
    assert_one_line_error(proc, "opsets 7..21")


def test_example_and_cli_share_the_training_options(subprocess_env):
    example = subprocess.run(
        [PYTHON, str(ROOT / "examples/fit_lenet.py"), "--help"], capture_output=True, text=True, env=subprocess_env
    )
    cli = run(["train", "--help"], subprocess_env)
    assert example.returncode == 0 and cli.returncode == 0

    def options(text: str) -> set[str]:
        listed = text.split("options:")[-1]  # not the usage line or the description
        return {word.strip(",") for word in listed.split() if word.startswith("--")} - {"--help"}

    assert options(example.stdout) == options(cli.stdout)
    assert {"--epochs", "--batch-size", "--lr", "--model", "--device", "--output", "--limit"} <= options(cli.stdout)
