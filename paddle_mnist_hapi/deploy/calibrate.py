"""Honest confidence: temperature scaling fitted on held-out training images, and how it is measured.

A network trained with cross-entropy tends to say it is surer than it is.
Temperature scaling (Guo et al., 2017) divides the logits by one number ``T``,
fitted to minimize the negative log-likelihood on images the network never
trained on: the predicted label never changes, only how sure the model says it
is. The recipe keeps the last ``TrainConfig.calibration_holdout`` training
images out of training, fits ``T`` on them (never on the test set) and writes
it to the export's metadata as ``"calibration": {"temperature": T, ...}``;
:class:`~paddle_mnist_hapi.deploy.predict.Predictor`, ``paddle-mnist predict``
and ``paddle-mnist serve`` divide by it. An export without it uses ``T = 1``.

A prediction is *uncertain* when its (calibrated) top probability is below
:data:`UNCERTAIN_BELOW`, or when the picture does not look like one digit
(:attr:`~paddle_mnist_hapi.deploy.mnist_digit.DigitPicture.problem`).

Examples:
    >>> logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> labels = np.array([0, 1, 1, 1])                  # one of four is wrong: 4.0 is too sure
    >>> t = fit_temperature(logits, labels)
    >>> round(t, 2), round(float(softmax(logits, t).max(axis=1).mean()), 2)
    (3.64, 0.75)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "UNCERTAIN_BELOW",
    "calibration_metadata",
    "expected_calibration_error",
    "fit_temperature",
    "softmax",
    "temperature_of",
]

#: A prediction whose calibrated top probability is below this is flagged ``uncertain``.
UNCERTAIN_BELOW = 0.8
_BETA_RANGE = (0.02, 20.0)  # 1 / T: from very unsure (T = 50) to very sure (T = 0.05)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, numerically stable.

    Examples:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
        >>> softmax(np.array([[2.0, 0.0]]), temperature=2.0).round(3).tolist()
        [[0.731, 0.269]]
    """
    scaled = np.asarray(logits, dtype=np.float64) / float(temperature)
    shifted = scaled - np.max(scaled, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    probabilities = softmax(logits, temperature)[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(probabilities, 1e-300, None)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    The likelihood is convex in ``1 / T``, so a golden-section search over
    ``1/T`` in 0.02..20 finds the optimum.

    Examples:
        >>> fit_temperature(np.array([[9.0, 0.0], [0.0, 9.0]]), np.array([0, 1])) < 0.1   # always right: sharper
        True
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(int)
    low, high = (math.log(b) for b in _BETA_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _nll(logits, labels, math.exp(-a)), _nll(logits, labels, math.exp(-b))
    for _ in range(60):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _nll(logits, labels, math.exp(-a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(logits, labels, math.exp(-b))
    return float(math.exp(-(low + high) / 2))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the mean ``|accuracy - confidence|`` over equal-width confidence bins, weighted by their share.

    Examples:
        >>> expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 1, 1, 0]))
        0.1
    """
    confidence = np.asarray(confidence, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            total += chosen.mean() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return round(float(total), 6)


def calibration_metadata(logits: np.ndarray, labels: np.ndarray, fitted_on: str) -> dict[str, Any]:
    """The ``"calibration"`` entry of an export's metadata: ``T`` fitted on ``(logits, labels)``, before/after.

    Examples:
        >>> meta = calibration_metadata(np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]), np.array([0, 1, 1]), "3 images")
        >>> meta["images"], meta["temperature"] > 1, meta["nll_after"] < meta["nll_before"], meta["uncertain_below"]
        (3, True, True, 0.8)
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1).astype(int)
    temperature = fit_temperature(logits, labels)
    correct = logits.argmax(axis=1) == labels

    def ece(t: float) -> float:
        return round(expected_calibration_error(softmax(logits, t).max(axis=1), correct), 6)

    return {
        "method": "temperature scaling: probabilities = softmax(logits / temperature)",
        "temperature": round(temperature, 6),
        "fitted_on": fitted_on,
        "images": len(labels),
        "nll_before": round(_nll(logits, labels, 1.0), 6),
        "nll_after": round(_nll(logits, labels, temperature), 6),
        "ece_before": ece(1.0),
        "ece_after": ece(temperature),
        "uncertain_below": UNCERTAIN_BELOW,
    }


def temperature_of(metadata: dict[str, Any]) -> float:
    """The temperature in an export's metadata; 1.0 when it has none (or an unusable one).

    Examples:
        >>> temperature_of({"calibration": {"temperature": 1.7}}), temperature_of({})
        (1.7, 1.0)
    """
    value = (metadata.get("calibration") or {}).get("temperature", 1.0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0
