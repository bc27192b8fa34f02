"""``Predictor``: classify digits with an exported model, no training code needed.

It loads ``prefix.json`` + ``prefix.pdiparams`` (written by
``model.save(prefix, training=False)`` or :func:`paddle_mnist_hapi.deploy.export.export_model`)
with ``paddle.inference``, reads ``prefix_meta.json`` when present (class
names, input shape, preprocessing) and predicts on image files, PIL images and numpy arrays.
Pictures go through what the metadata declares (:mod:`~paddle_mnist_hapi.deploy.image_input`):
for the MNIST digit models :func:`paddle_mnist_hapi.deploy.preprocess.preprocess`, so a
photographed digit (dark ink on paper, off-centre, any size) is classified,
not only an MNIST sample; for other models the declared resize and normalisation;
an export declared for arrays only refuses pictures.

Examples:
    >>> import tempfile, paddle
    >>> from PIL import Image, ImageDraw
    >>> from paddle_mnist_hapi import create_model, specs_for
    >>> from paddle_mnist_hapi.deploy.export import export_model
    >>> prefix = tempfile.mkdtemp() + "/lenet5"
    >>> _ = export_model(paddle.Model(create_model("lenet5"), *specs_for("lenet5")), prefix)
    >>> photo = Image.new("L", (90, 120), 255)
    >>> ImageDraw.Draw(photo).line([(45, 10), (45, 110)], fill=0, width=9)
    >>> result = Predictor(prefix).predict(photo)      # untrained weights: any label
    >>> result.label in range(10), round(sum(result.probabilities), 4)
    (True, 1.0)
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paddle_mnist_hapi.deploy.calibrate import UNCERTAIN_BELOW, temperature_of
from paddle_mnist_hapi.deploy.export import (
    LEGACY_METADATA_SUFFIX,
    METADATA_SUFFIX,
    load_export,
    run_predictor,
)
from paddle_mnist_hapi.deploy.image_input import IMAGE, NONE, ImageInput, preprocessing_kind, refuse_pictures_message
from paddle_mnist_hapi.deploy.preprocess import MAX_PIXELS, ImageSource, Invert, preprocess, preprocess_digit
from paddle_mnist_hapi.errors import ExportError, ImageError

__all__ = ["Prediction", "Predictor", "resolve_model_prefix", "softmax"]

log = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable.

    Examples:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """One classified image: the label, its name, and every class probability.

    Examples:
        >>> p = Prediction(label=3, class_name="3", probabilities=(0.1, 0.0, 0.0, 0.9), source="x.png")
        >>> p.confidence, p.to_dict()["label"]
        (0.9, 3)
    """

    label: int
    class_name: str
    probabilities: tuple[float, ...]
    source: str | None = None
    uncertain: bool = False  # the top probability is below the threshold, or ``problem`` is set
    problem: str | None = None  # why the picture does not look like one digit

    @property
    def confidence(self) -> float:
        """The probability of the predicted label."""
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``source``, ``label``, ``class_name``, ``confidence``, ``uncertain``,
        ``probabilities``, and ``problem`` when the picture does not look like one digit)."""
        record = {
            "source": self.source,
            "label": self.label,
            "class_name": self.class_name,
            "confidence": round(self.confidence, 6),
            "uncertain": self.uncertain,
            "probabilities": [round(p, 6) for p in self.probabilities],
        }
        if self.problem:
            record["problem"] = self.problem
        return record


def resolve_model_prefix(path: str | os.PathLike[str]) -> str:
    """The export prefix for ``path``: a prefix, one of its files, or a training run directory.

    A run directory (``paddle-mnist train --output DIR``) holds ``summary.json``
    whose ``export`` names the prefix; otherwise its single ``inference/*.json``
    model is used.

    Raises:
        ExportError: nothing exported is found at ``path``.

    Examples:
        >>> resolve_model_prefix("runs/x/inference/lenet5.pdiparams")
        'runs/x/inference/lenet5'
    """
    text = os.fspath(path)
    for suffix in (METADATA_SUFFIX, LEGACY_METADATA_SUFFIX, ".json", ".pdiparams"):
        if text.endswith(suffix) and not os.path.isdir(text):
            return text[: -len(suffix)]
    directory = Path(text)
    if directory.is_dir():
        summary = directory / "summary.json"
        if summary.is_file():
            try:
                exported = json.loads(summary.read_text()).get("export")
            except (OSError, ValueError):
                exported = None
            # The summary's path is relative to where training ran, not to here: the run directory's own
            # export comes first (a same-named run under the current directory is another model).
            own = directory / "inference" / Path(exported).name if exported else None
            if own is not None and Path(f"{own}.json").is_file():
                return str(own)
            if exported and Path(exported).is_absolute() and Path(f"{exported}.json").is_file():
                return str(exported)
        metadata = (METADATA_SUFFIX, LEGACY_METADATA_SUFFIX)
        candidates = sorted(
            p for p in (directory / "inference").glob("*.json") if not p.name.endswith(metadata)
        ) + sorted(p for p in directory.glob("*.json") if (p.with_suffix(".pdiparams")).is_file())
        if len(candidates) == 1:
            return str(candidates[0].with_suffix(""))
        raise ExportError(
            f"{directory} is a directory but holds {'no' if not candidates else 'several'} exported model(s). "
            "Expected a training run directory (with summary.json or inference/NAME.json) or an export prefix "
            f"such as runs/fit_lenet/inference/lenet5. Received: model={text!r}"
        )
    return text


class Predictor:
    """Classify digits with a model exported for ``paddle.inference``.

    Args:
        model (str|PathLike): the export prefix (``model.save(PREFIX, training=False)``),
            one of its files, or a training run directory (see :func:`resolve_model_prefix`).
        threads (int, optional): CPU threads for inference. Default: 1.
        invert (bool|str, optional): default polarity handling for pictures;
            ``'auto'`` detects dark-on-light. Default: ``'auto'``.
        max_pixels (int, optional): the largest image accepted. Default: 50,000,000.
        uncertain_below (float, optional): a prediction whose top probability is below this
            is ``uncertain`` (see :mod:`~paddle_mnist_hapi.deploy.calibrate`). Default: 0.8.

    Probabilities are calibrated: the logits are divided by the temperature in the
    export's metadata (``self.temperature``; 1.0 when it has none).

    Raises:
        ExportError: the model files are missing or unreadable, or not the files the export's metadata
            records (an export interrupted while moving into place: export again).

    Examples:
        >>> Predictor("/no/such/model")
        Traceback (most recent call last):
        ...
        paddle_mnist_hapi.errors.ExportError: No exported model at /no/such/model: ...
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        threads: int = 1,
        invert: Invert = "auto",
        max_pixels: int = MAX_PIXELS,
        uncertain_below: float = UNCERTAIN_BELOW,
    ) -> None:
        self.prefix = resolve_model_prefix(model)
        self._predictor, self.metadata = load_export(self.prefix, threads=threads)  # checked: never a mixed export
        self.uncertain_below = float(uncertain_below)
        self.invert = invert
        self.max_pixels = max_pixels
        shape = self.metadata.get("input", {}).get("shape") or [-1, 1, 28, 28]
        self.input_shape = [int(d) for d in shape[1:]]
        names = self.metadata.get("class_names")
        self.class_names = [str(n) for n in names] if names else [str(i) for i in range(10)]
        self.preprocessing, self.image_input = _picture_pipeline(self.metadata, self.input_shape)
        self.temperature = temperature_of(self.metadata)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw model outputs for a normalized float batch (reshaped to the model's input shape).

        Examples:
            >>> _example_predictor().logits(np.zeros((3, 1, 28, 28), np.float32)).shape
            (3, 10)
        """
        batch = np.asarray(batch, dtype=np.float32)
        size = int(np.prod(self.input_shape))
        if batch.size == 0 or batch.size % size:
            raise ImageError(
                f"Model input must hold whole images of shape {self.input_shape}. Received: shape={batch.shape}"
            )
        return run_predictor(self._predictor, batch.reshape(-1, *self.input_shape))

    def predict_batch(self, batch: np.ndarray, sources: Sequence[str | None] | None = None) -> list[Prediction]:
        """Predictions for already-normalized float inputs, e.g. ``MNIST("test").images``.

        Examples:
            >>> from paddle_mnist_hapi.data import MNIST
            >>> [p.class_name for p in _example_predictor().predict_batch(MNIST("test", limit=3).images)]
            ['7', '2', '1']
        """
        probabilities = self.probabilities(batch)
        if sources is None:
            sources = [None] * len(probabilities)
        return [self.prediction(row, source) for row, source in zip(probabilities, sources, strict=True)]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities, ``softmax(logits / temperature)``, for a normalized float batch.

        Examples:
            >>> _example_predictor().probabilities(np.zeros((2, 1, 28, 28), np.float32)).sum(axis=1).round(6).tolist()
            [1.0, 1.0]
        """
        return softmax(self.logits(batch) / self.temperature)

    def prediction(self, row: np.ndarray, source: str | None = None, problem: str | None = None) -> Prediction:
        """The :class:`Prediction` for one row of probabilities (``uncertain`` below the threshold or on a problem).

        Examples:
            >>> p = _example_predictor().prediction(np.array([0.5, 0.3] + [0.025] * 8))
            >>> p.label, p.uncertain
            (0, True)
        """
        label = int(np.argmax(row))
        name = self.class_names[label] if label < len(self.class_names) else str(label)
        uncertain = bool(row[label] < self.uncertain_below or problem is not None)
        return Prediction(label, name, tuple(float(p) for p in row), source, uncertain, problem)

    def preprocess(self, image: ImageSource, *, invert: Invert | None = None) -> np.ndarray:
        """The normalized input this predictor feeds for ``image``: ``(1, 1, 28, 28)`` for a digit model,
        a batch of one of the declared shape for an ``image`` export.

        Raises:
            ExportError: the export takes arrays only (see :meth:`require_pictures`).

        Examples:
            >>> x = _example_predictor().preprocess(np.eye(40, 30, dtype=np.uint8) * 255)  # a light diagonal stroke
            >>> x.shape, float(x.max()), float(x.min())
            ((1, 1, 28, 28), 1.0, -1.0)
        """
        if self.image_input is not None:
            return self.image_input(image, max_pixels=self.max_pixels)
        self.require_pictures()
        return preprocess(image, invert=self.invert if invert is None else invert, max_pixels=self.max_pixels)

    def require_pictures(self) -> None:
        """Raise unless this export declares how a picture becomes its input (``paddle-mnist predict`` and
        ``serve`` call it when they load the model, before any picture is read).

        Raises:
            ExportError: the metadata says arrays only (preprocessing ``'none'``), with how to re-export.

        Examples:
            >>> _example_predictor().require_pictures()   # a digit model: pictures welcome
        """
        if self.preprocessing == NONE:
            raise ExportError(refuse_pictures_message(self.prefix, self.input_shape))

    def predict(self, image: ImageSource, *, invert: Invert | None = None) -> Prediction:
        """Classify one picture: an image file path, its bytes, a PIL image or a pixel array.

        Raises:
            ImageError: the picture cannot be read or holds no digit.

        Examples:
            >>> from paddle_mnist_hapi.data import MNIST
            >>> _example_predictor().predict(MNIST("test", limit=1).raw_images[0]).class_name   # a real "7"
            '7'
        """
        return self.predict_many([image], invert=invert)[0]

    def predict_many(self, images: Iterable[ImageSource], *, invert: Invert | None = None) -> list[Prediction]:
        """Classify several pictures in one batch (all are read first; the first bad one raises).

        Examples:
            >>> from paddle_mnist_hapi.data import MNIST
            >>> [p.label for p in _example_predictor().predict_many(MNIST("test", limit=3).raw_images)]
            [7, 2, 1]
        """
        images = list(images)
        if not images:
            return []
        prepared = [self._prepare(image, invert) for image in images]
        probabilities = self.probabilities(np.concatenate([inputs for inputs, _ in prepared]))
        sources = [os.fspath(i) if isinstance(i, (str, os.PathLike)) else None for i in images]
        return [
            self.prediction(row, source, problem)
            for row, source, (_, problem) in zip(probabilities, sources, prepared, strict=True)
        ]

    def _prepare(self, image: ImageSource, invert: Invert | None) -> tuple[np.ndarray, str | None]:
        """The input for one picture, and for a digit model what makes it not one clear digit (or None)."""
        if self.image_input is not None:
            return self.image_input(image, max_pixels=self.max_pixels), None
        self.require_pictures()
        invert = self.invert if invert is None else invert
        inputs, digit = preprocess_digit(image, invert=invert, max_pixels=self.max_pixels)
        return inputs, digit.problem


def _picture_pipeline(metadata: dict[str, Any], input_shape: list[int]) -> tuple[str, ImageInput | None]:
    """The preprocessing kind the export declares, and its :class:`ImageInput` for the ``image`` kind."""
    kind = preprocessing_kind(metadata, input_shape)
    return kind, ImageInput.from_metadata(metadata["preprocessing"]) if kind == IMAGE else None


@functools.lru_cache(maxsize=1)
def _example_predictor() -> Predictor:
    """A predictor for the examples: a linear model fitted in closed form (ridge regression
    on one-hot labels, under a second) to 5,000 real MNIST images, exported to a temp dir."""
    import tempfile

    import paddle

    from paddle_mnist_hapi import create_model, specs_for
    from paddle_mnist_hapi.data import MNIST
    from paddle_mnist_hapi.deploy.export import export_model

    train = MNIST("train", limit=5000)
    x = np.hstack([train.images.reshape(len(train), -1), np.ones((len(train), 1), np.float32)])
    y = np.eye(10, dtype=np.float32)[train.labels.ravel()]
    solution = np.linalg.solve(x.T @ x + 10 * np.eye(x.shape[1], dtype=np.float32), x.T @ y)
    net = create_model("linear")
    weight, bias = [p for p in net.parameters()]
    weight.set_value(solution[:-1].astype(np.float32))
    bias.set_value(solution[-1].astype(np.float32))
    prefix = tempfile.mkdtemp(prefix="paddle_mnist_example_") + "/linear"
    export_model(paddle.Model(net, *specs_for("linear")), prefix)
    return Predictor(prefix)
