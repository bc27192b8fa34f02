"""A second yardstick, not tuned against: real handwritten digits that are neither MNIST nor generated here.

    python bench/independent_digits.py --model PREFIX        # one JSON object; needs scikit-learn (bench extra)

The set is scikit-learn's bundled copy of the UCI "optdigits" test digits
(``sklearn.datasets.load_digits``: 1,797 digits written by 13 people, scanned
as 32x32 bitmaps and reduced to 8x8 blocks of 17 grey levels; Alpaydin and
Kaynak, 1998). It ships inside the package, so nothing is downloaded. Each
digit is shown to ``paddle-mnist predict --json`` in two ways a user might:

* ``enlarged``: a 2-block paper margin added (12x12), enlarged 8x with bicubic
  resampling to 96x96, dark ink on white, PNG (a low-resolution scan enlarged);
* ``raw``: the 12x12 picture itself, light on dark, PNG.

The preprocessing and the model were not tuned on these pictures: they are
measured, never looked at to choose a step. The result is reported apart from
the matrix of ``bench/ood_digits.py`` (docs/generalisation.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from ood_digits import predict_files  # noqa: E402

from paddle_mnist_hapi.deploy.calibrate import expected_calibration_error  # noqa: E402

PRESENTATIONS = ("enlarged", "raw")


def pictures(presentation: str) -> tuple[list[Image.Image], np.ndarray]:
    """The 1,797 optdigits digits as pictures in one ``presentation``, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = np.pad(digits.images / 16.0, ((0, 0), (2, 2), (2, 2)))  # 0..1, a margin of paper
    images = []
    for one in ink:
        if presentation == "enlarged":
            paper = Image.fromarray(np.uint8(np.round(255 * (1 - 0.9 * one))), "L")
            images.append(paper.resize((96, 96), Image.Resampling.BICUBIC))
        else:
            images.append(Image.fromarray(np.uint8(np.round(255 * one)), "L"))
    return images, digits.target.astype(int)


def evaluate(model: str) -> dict[str, Any]:
    """Accuracy, per class and ECE of ``model`` on each presentation, through ``paddle-mnist predict --json``."""
    result: dict[str, Any] = {"model": model, "set": "scikit-learn load_digits (UCI optdigits, 1,797 digits)"}
    for presentation in PRESENTATIONS:
        images, labels = pictures(presentation)
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for index, image in enumerate(images):
                files.append(str(Path(tmp) / f"{index:04d}-{labels[index]}.png"))
                image.save(files[-1])
            records = predict_files(model, files)
        predicted = np.array([int(r["label"]) for r in records])
        right = predicted == labels
        confidence = np.array([float(r["confidence"]) for r in records])
        uncertain = np.array([bool(r.get("uncertain", False)) for r in records])
        result[presentation] = {
            "n": len(labels),
            "accuracy": round(float(right.mean()), 4),
            "per_class_accuracy": [round(float(right[labels == c].mean()), 3) for c in range(10)],
            "ece": round(expected_calibration_error(confidence, right), 4),
            "uncertain": round(float(uncertain.mean()), 4),
            "accuracy_when_sure": round(float(right[~uncertain].mean()), 4) if (~uncertain).any() else None,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="export prefix or run directory")
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
