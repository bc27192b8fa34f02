"""Evaluation reports: per-class precision/recall (JSON), a confusion matrix and
a grid of misclassified images (PNG, matplotlib's Agg canvas, imported lazily).

Examples:
    >>> import tempfile
    >>> labels, predicted = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    >>> stats = classification_report(labels, predicted, ["0", "1", "2"])
    >>> stats["accuracy"], stats["per_class"]["1"]["recall"], stats["per_class"]["2"]["precision"]
    (0.75, 0.5, 0.5)
    >>> images = np.zeros((4, 28, 28), np.uint8)
    >>> files = write_report(tempfile.mkdtemp(), images, labels, predicted, ["0", "1", "2"])
    >>> sorted(files)
    ['confusion_matrix', 'metrics', 'misclassified']
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["classification_report", "confusion_matrix", "plot_confusion_matrix", "plot_misclassified", "write_report"]

#: At most this many misclassified images are drawn in the grid.
MAX_GRID = 100


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts; rows are true labels, columns predictions.

    Examples:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    labels, predicted = np.ravel(labels).astype(np.int64), np.ravel(predicted).astype(np.int64)
    if labels.shape != predicted.shape:
        raise ConfigError(
            f"labels and predictions must have the same length. Received: {labels.size} labels, "
            f"{predicted.size} predictions"
        )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def classification_report(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, the confusion matrix and per-class precision, recall, F1 and support.

    A class that is never predicted has precision 0.0 (and never present: recall 0.0).

    Examples:
        >>> classification_report(np.array([0, 1]), np.array([0, 0]), ["a", "b"])["per_class"]["a"]["precision"]
        0.5
    """
    matrix = confusion_matrix(labels, predicted, len(class_names))
    true_positive = np.diag(matrix).astype(np.float64)
    predicted_count, support = matrix.sum(axis=0), matrix.sum(axis=1)
    per_class: dict[str, dict[str, float | int]] = {}
    for index, name in enumerate(class_names):
        precision = true_positive[index] / predicted_count[index] if predicted_count[index] else 0.0
        recall = true_positive[index] / support[index] if support[index] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[str(name)] = {
            "precision": round(float(precision), 6),
            "recall": round(float(recall), 6),
            "f1": round(float(f1), 6),
            "support": int(support[index]),
        }
    total = int(matrix.sum())
    return {
        "samples": total,
        "accuracy": round(float(true_positive.sum() / total), 6) if total else 0.0,
        "misclassified": int(total - true_positive.sum()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str]) -> str:
    """Write the confusion matrix as a PNG heat map with counts; return the path.

    Examples:
        >>> import tempfile
        >>> plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], tempfile.mkdtemp() + "/cm.png")[-6:]
        'cm.png'
    """
    figure = _figure(7, 6)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = range(len(class_names))
    axes.set_xticks(ticks, labels=list(class_names))
    axes.set_yticks(ticks, labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Confusion matrix ({int(matrix.sum())} images)")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            color = "white" if count > threshold else "black"
            axes.text(col, row, str(count), ha="center", va="center", fontsize=7, color=color)
    figure.tight_layout()
    figure.savefig(path)
    return os.fspath(path)


def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    limit: int = MAX_GRID,
) -> str:
    """Write a grid of the first ``limit`` misclassified images, titled ``true -> predicted``.

    Examples:
        >>> import tempfile
        >>> path = plot_misclassified(np.zeros((2, 28, 28)), np.array([0, 1]), np.array([1, 1]), ["0", "1"],
        ...                           tempfile.mkdtemp() + "/wrong.png")
        >>> path.endswith("wrong.png")
        True
    """
    labels, predicted = np.ravel(labels), np.ravel(predicted)
    wrong = np.flatnonzero(labels != predicted)[:limit]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))
    height = rows * 1.25 + 0.5
    figure = _figure(columns * 1.1, height)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.45 / height, hspace=0.35)
    figure.suptitle(f"Misclassified: {int((labels != predicted).sum())} of {labels.size} (true -> predicted)")
    if not len(wrong):
        figure.text(0.5, 0.5, "none", ha="center", va="center")
    for slot, index in enumerate(wrong):
        axes = figure.add_subplot(rows, columns, slot + 1)
        picture = np.asarray(images[index])
        colour = picture.ndim == 3 and picture.shape[-1] == 3  # (H, W, 3) RGB pictures of a model of your own
        axes.imshow(picture if colour else picture.reshape(picture.shape[-2:] if picture.ndim > 1 else (28, 28)),
                    cmap=None if colour else "gray")  # fmt: skip
        axes.set_title(f"{class_names[labels[index]]} -> {class_names[predicted[index]]}", fontsize=8)
        axes.axis("off")
    figure.savefig(path)
    return os.fspath(path)


def write_report(
    directory: str | os.PathLike[str],
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``metrics.json``, ``confusion_matrix.png`` and ``misclassified.png`` into ``directory``.

    Args:
        directory (str|PathLike): created when missing.
        images (np.ndarray): the evaluated images, ``(N, 28, 28)`` (raw pixels show best), or ``(N, H, W, 3)`` RGB.
        labels (np.ndarray): true class ids, ``(N,)`` or ``(N, 1)``.
        predicted (np.ndarray): predicted class ids, same length.
        class_names (Sequence[str]): one name per class id.
        extra (dict, optional): more JSON fields for ``metrics.json`` (model, data source). Default: None.

    Returns:
        dict: file kind to path (``metrics``, ``confusion_matrix``, ``misclassified``).

    Examples:
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> files = write_report(out, np.zeros((3, 28, 28)), np.array([0, 1, 1]), np.array([0, 1, 0]), ["0", "1"],
        ...                      extra={"model": "demo"})
        >>> metrics = json.loads(Path(files["metrics"]).read_text())
        >>> metrics["model"], metrics["accuracy"], metrics["per_class"]["1"]["recall"]
        ('demo', 0.666667, 0.5)
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    stats = classification_report(labels, predicted, class_names)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps({**(extra or {}), **stats}, indent=2) + "\n")
    matrix = np.asarray(stats["confusion_matrix"])
    return {
        "metrics": str(metrics_path),
        "confusion_matrix": plot_confusion_matrix(matrix, class_names, out / "confusion_matrix.png"),
        "misclassified": plot_misclassified(images, labels, predicted, class_names, out / "misclassified.png"),
    }
