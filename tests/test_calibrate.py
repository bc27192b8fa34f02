"""Honest confidence: the temperature is fitted on held-out training images, stored in the export and
applied by Predictor, the CLI and the service; pictures that are not one digit are flagged, not answered
with a confident digit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from paddle_mnist_hapi.cli import main
from paddle_mnist_hapi.data import MNIST
from paddle_mnist_hapi.deploy.calibrate import (
    UNCERTAIN_BELOW,
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from paddle_mnist_hapi.deploy.predict import Predictor
from paddle_mnist_hapi.errors import ConfigError, ImageError
from paddle_mnist_hapi.recipe import TrainConfig, split_holdout


def test_fit_temperature_recovers_an_overconfident_models_temperature() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(0, 2.0, size=(20000, 10))  # logits whose softmax is the true label distribution
    labels = np.array([rng.choice(10, p=p) for p in softmax(honest)])
    assert fit_temperature(3.0 * honest, labels) == pytest.approx(3.0, rel=0.05)  # 3x too sure: T = 3
    sure, fitted = softmax(3.0 * honest), softmax(3.0 * honest, fit_temperature(3.0 * honest, labels))
    correct = sure.argmax(axis=1) == labels
    assert (
        expected_calibration_error(fitted.max(axis=1), correct)
        < 0.02
        < expected_calibration_error(sure.max(axis=1), correct)
    )


def test_the_holdout_is_never_trained_on() -> None:
    data = MNIST("train", limit=1000)
    train, holdout = split_holdout(data, None, 5000)  # the whole split: its last tenth at most
    assert (len(train), len(holdout)) == (900, 100)
    assert np.array_equal(holdout.raw_images, data.raw_images[900:])
    assert np.array_equal(train.labels, data.labels[:900])
    train, holdout = split_holdout(data, 600, 300)  # a limited run: the images after the limit
    assert (len(train), len(holdout)) == (600, 300) and np.array_equal(holdout.labels, data.labels[600:900])
    assert split_holdout(data, None, 0)[1] is None
    with pytest.raises(ConfigError, match="calibration_holdout"):
        TrainConfig(calibration_holdout=-1).validate()


def test_the_export_carries_a_temperature_fitted_on_held_out_training_images(trained_run) -> None:
    meta = json.loads(open(trained_run["export"] + "_meta.json").read())
    calibration = meta["calibration"]
    assert "held out" in calibration["fitted_on"] and calibration["images"] == 2000  # the 2,000 after the 30,000
    assert trained_run["train_images"] == 30000
    assert calibration["nll_after"] <= calibration["nll_before"]
    predictor = Predictor(trained_run["export"])
    assert predictor.temperature == calibration["temperature"] != 1.0
    test = MNIST("test", limit=1000)
    logits = predictor.logits(test.images)
    probabilities = predictor.probabilities(test.images)
    assert np.allclose(probabilities, softmax(logits / calibration["temperature"]))
    correct = probabilities.argmax(axis=1) == test.labels.ravel()
    calibrated = expected_calibration_error(probabilities.max(axis=1), correct)
    raw = expected_calibration_error(softmax(logits).max(axis=1), correct)
    assert calibrated <= max(raw, 0.02), (calibrated, raw)


def _two_digits(path) -> str:
    image = Image.new("L", (240, 120), 245)
    draw = ImageDraw.Draw(image)
    draw.line([(60, 15), (60, 105)], fill=10, width=9)  # "1"
    draw.line([(140, 20), (200, 20), (160, 105)], fill=10, width=9)  # "7"
    image.save(path)
    return str(path)


def _block(path) -> str:
    image = Image.new("L", (120, 120), 245)
    ImageDraw.Draw(image).rectangle([30, 30, 90, 90], fill=10)
    image.save(path)
    return str(path)


def test_pictures_that_are_not_one_digit_are_flagged_not_answered_confidently(trained_run, tmp_path) -> None:
    predictor = Predictor(trained_run["export"])
    two, block = _two_digits(tmp_path / "two.png"), _block(tmp_path / "block.png")
    flagged = predictor.predict_many([two, block])
    assert [p.uncertain for p in flagged] == [True, True]
    assert "several separate marks" in flagged[0].problem and "solid block" in flagged[1].problem
    with pytest.raises(ImageError, match="No digit found"):
        predictor.predict(Image.new("L", (90, 90), 200))  # blank
    # a low top probability is uncertain too, whatever the picture
    assert predictor.prediction(np.array([0.55, 0.45] + [0.0] * 8)).uncertain
    assert not predictor.prediction(np.array([UNCERTAIN_BELOW + 0.05] + [0.0] * 9)).uncertain
    seven = Image.new("L", (120, 160), 245)
    ImageDraw.Draw(seven).line([(25, 25), (95, 25), (50, 140)], fill=10, width=10)
    clear = predictor.predict(seven)
    assert (clear.class_name, clear.uncertain, clear.problem) == ("7", False, None)


def test_the_cli_says_not_sure(trained_run, tmp_path, capsys) -> None:
    two = _two_digits(tmp_path / "two.png")
    assert main(["predict", "--model", trained_run["export"], "--json", two]) == 0
    record = json.loads(capsys.readouterr().out)["predictions"][0]
    assert record["uncertain"] is True and "several separate marks" in record["problem"]
    assert main(["predict", "--model", trained_run["export"], two]) == 0
    table = capsys.readouterr().out
    assert "note" in table.splitlines()[0] and "not sure: several separate marks" in table
    assert main(["evaluate", trained_run["export"], "--limit", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["ece"] <= 0.05 and result["temperature"] != 1.0
